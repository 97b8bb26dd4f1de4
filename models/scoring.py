"""Micro and per-type precision / recall / F1 with the shared task's seqeval semantics.

- flat: entities of the one-tag sequences, lenient (conlleval-style) decoding as seqeval 1.2.2's default;
- nested: per type, the sequence of the first tag of that type on each token; all types pooled into one
  micro-F1, i.e. micro-F1 over (sentence, type, start, end) spans.
Checked against seqeval itself in tests/models/test_scoring.py.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Sequence

from nerlab.models.wojood import DataError, Sentence, nested_spans, sentence_lines, spans_of


@dataclass(frozen=True)
class Score:
    precision: float
    recall: float
    f1: float
    support: int  # gold entities
    predicted: int

    @classmethod
    def from_counts(cls, tp: int, n_pred: int, n_gold: int) -> "Score":
        p = tp / n_pred if n_pred else 0.0
        r = tp / n_gold if n_gold else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        return cls(p, r, f, n_gold, n_pred)


@dataclass(frozen=True)
class Report:
    micro: Score
    per_type: dict[str, Score] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"micro": asdict(self.micro), "per_type": {t: asdict(s) for t, s in self.per_type.items()}}

    def format(self) -> str:
        rows = [f"{'type':<10} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"]
        for name, s in [*sorted(self.per_type.items()), ("micro", self.micro)]:
            rows.append(f"{name:<10} {s.precision:>9.4f} {s.recall:>9.4f} {s.f1:>9.4f} {s.support:>8d}")
        return "\n".join(rows)


def sentence_spans(sentence: Sentence, task: str) -> set[tuple[str, int, int]]:
    if task == "flat":
        return set(spans_of([tags[0] if tags else "O" for tags in sentence.tags]))
    return set(nested_spans(sentence))


def check_aligned(gold: Sequence[Sentence], pred: Sequence[Sentence], gold_file: str | None = None,
                  pred_file: str | None = None) -> None:
    """Predictions must hold gold's sentences and tokens, in order. A mismatch is a DataError that names
    both files and the lines where the sentence starts, when the files are given."""
    for i, (g, p) in enumerate(zip(gold, pred)):
        if g.tokens != p.tokens:
            if gold_file and pred_file:
                gl, pl = sentence_lines(gold_file)[i], sentence_lines(pred_file)[i]
                where, other = f"{pred_file}:{pl}", f"{gold_file}:{gl}"
            else:
                where, other = "predictions", "gold"
            raise DataError(f"{where}: sentence {i + 1} has other tokens than {other} "
                            f"({len(p)} vs {len(g)} tokens, starting {' '.join(g.tokens[:5])!r})")
    if len(gold) != len(pred):
        raise DataError(f"{pred_file or 'predictions'}: {len(pred)} sentences, but {gold_file or 'gold'} has "
                        f"{len(gold)}")


def score(gold: Sequence[Sentence], pred: Sequence[Sentence], task: str) -> Report:
    """Score predictions against gold sentences (same tokens, same order)."""
    check_aligned(gold, pred)
    tp, n_pred, n_gold = Counter(), Counter(), Counter()
    for g, p in zip(gold, pred):
        gs, ps = sentence_spans(g, task), sentence_spans(p, task)
        tp.update(s[0] for s in gs & ps)
        n_pred.update(s[0] for s in ps)
        n_gold.update(s[0] for s in gs)
    types = sorted(set(n_gold) | set(n_pred))
    per_type = {t: Score.from_counts(tp[t], n_pred[t], n_gold[t]) for t in types}
    micro = Score.from_counts(sum(tp.values()), sum(n_pred.values()), sum(n_gold.values()))
    return Report(micro, per_type)
