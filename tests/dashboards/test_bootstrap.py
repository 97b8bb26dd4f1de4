"""The paired bootstrap and the leaderboard's grouping on hand-built data (no Ray, no MLflow server)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nerlab.dashboards.leaderboard import higher_is_better, metric_key
from nerlab.dashboards.champion import f1_of_counts, paired_bootstrap, sentence_counts
from nerlab.models.scoring import score
from nerlab.models.wojood import Sentence


def sentences(n: int, rng) -> list[Sentence]:
    out = []
    for _ in range(n):
        length = int(rng.integers(3, 9))
        tags = [["O"] for _ in range(length)]
        start = int(rng.integers(0, length - 1))
        tags[start] = ["B-PERS"]
        tags[start + 1] = ["I-PERS", "B-GPE"] if rng.random() < 0.5 else ["I-PERS"]
        out.append(Sentence([f"w{i}" for i in range(length)], tags))
    return out


def drop_entities(gold: list[Sentence], share: float, rng) -> list[Sentence]:
    """A prediction that misses about ``share`` of the sentences' entities."""
    return [s if rng.random() > share else Sentence(list(s.tokens), [["O"] for _ in s.tokens]) for s in gold]


def test_counts_reproduce_the_scorers_micro_f1():
    rng = np.random.default_rng(0)
    gold = sentences(60, rng)
    pred = drop_entities(gold, 0.4, rng)
    counts = sentence_counts(gold, pred, "nested")
    assert counts.shape == (60, 3)
    assert f1_of_counts(counts.sum(0)) == pytest.approx(score(gold, pred, "nested").micro.f1, abs=1e-12)
    flat = sentence_counts(gold, pred, "flat")
    assert f1_of_counts(flat.sum(0)) == pytest.approx(score(gold, pred, "flat").micro.f1, abs=1e-12)


def test_clearly_better_configuration_has_probability_one():
    rng = np.random.default_rng(1)
    gold = sentences(80, rng)
    good = [sentence_counts(gold, gold, "nested"), sentence_counts(gold, drop_entities(gold, 0.05, rng), "nested")]
    all_o = [sentence_counts(gold, [Sentence(list(s.tokens), [["O"]] * len(s)) for s in gold], "nested")]
    result = paired_bootstrap(good, all_o, samples=1000)
    assert result.p_better == 1.0 and result.delta > 0.9 and result.ci_low > 0.9
    assert paired_bootstrap(all_o, good, samples=1000).p_better == 0.0


def test_close_configurations_give_a_probability_between_and_symmetric():
    rng = np.random.default_rng(2)
    gold = sentences(100, rng)
    a = [sentence_counts(gold, drop_entities(gold, 0.30, rng), "nested") for _ in range(3)]
    b = [sentence_counts(gold, drop_entities(gold, 0.32, rng), "nested") for _ in range(3)]
    ab, ba = paired_bootstrap(a, b, samples=800, seed=5), paired_bootstrap(b, a, samples=800, seed=5)
    assert 0.0 < ab.p_better < 1.0
    assert ab.p_better + ba.p_better == pytest.approx(1.0)
    assert ab.delta == pytest.approx(-ba.delta)
    # the observed difference is that of the seeds' mean micro-F1
    mean = lambda cs: np.mean([f1_of_counts(c.sum(0)) for c in cs])  # noqa: E731
    assert ab.delta == pytest.approx(mean(a) - mean(b))


def test_identical_configurations_tie_at_one_half():
    rng = np.random.default_rng(3)
    gold = sentences(30, rng)
    c = [sentence_counts(gold, drop_entities(gold, 0.5, rng), "nested")]
    assert paired_bootstrap(c, c, samples=200).p_better == 0.5


def test_bootstrap_refuses_mismatched_sentences():
    with pytest.raises(ValueError, match="same sentences"):
        paired_bootstrap([np.zeros((3, 3))], [np.zeros((4, 3))])
    gold = [Sentence(["a", "b"], [["O"], ["O"]])]
    with pytest.raises(ValueError, match="other tokens"):
        sentence_counts(gold, [Sentence(["a", "c"], [["O"], ["O"]])], "nested")


def test_metric_names_and_direction():
    assert metric_key("val/micro_f1") == "best/val/micro_f1"
    assert metric_key("test/micro_f1") == "test/micro_f1"
    assert higher_is_better("val/micro_f1") and higher_is_better("train/tokens_per_second")
    assert not higher_is_better("val/loss") and not higher_is_better("train/epoch_seconds")
    assert math.isfinite(f1_of_counts(np.array([0, 0, 0])))
