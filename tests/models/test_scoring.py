"""Scoring must equal seqeval 1.2.2 (default, lenient mode) as the shared task used it."""

from __future__ import annotations

import random

import pytest
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

from nerlab.models.scoring import score
from nerlab.models.wojood import Sentence, read_file

TYPES = ["PERS", "ORG", "GPE", "DATE"]


def seqeval_flat(gold, pred):
    yt = [[t[0] for t in s.tags] for s in gold]
    yp = [[t[0] for t in s.tags] for s in pred]
    return yt, yp


def seqeval_nested(gold, pred):
    """The baseline's pooling: one sequence per (sentence, type), all pooled into one micro-F1. Built here
    from the raw tags, as the shared task's script did: per token, the first tag of the type, else O."""
    types = sorted({t.split("-", 1)[1] for s in [*gold, *pred] for tags in s.tags for t in tags if t != "O"})

    def one_type(s, typ):
        seq = []
        for tags in s.tags:
            first = [t for t in tags if t != "O" and t.split("-", 1)[1] == typ][:1]
            seq.append(first[0] if first else "O")
        return seq

    yt = [one_type(s, t) for s in gold for t in types]
    yp = [one_type(s, t) for s in pred for t in types]
    return yt, yp


def assert_equal_to_seqeval(gold, pred, task):
    yt, yp = (seqeval_flat if task == "flat" else seqeval_nested)(gold, pred)
    ours = score(gold, pred, task)
    assert ours.micro.f1 == pytest.approx(f1_score(yt, yp), abs=1e-12)
    assert ours.micro.precision == pytest.approx(precision_score(yt, yp), abs=1e-12)
    assert ours.micro.recall == pytest.approx(recall_score(yt, yp), abs=1e-12)
    ref = classification_report(yt, yp, output_dict=True, zero_division=0)
    assert set(ours.per_type) == set(ref) - {"micro avg", "macro avg", "weighted avg"}  # no type missing
    for typ, s in ours.per_type.items():
        assert s.f1 == pytest.approx(ref[typ]["f1-score"], abs=1e-12), typ
        assert s.support == ref[typ]["support"], typ


def random_tags(rng, n, nested):
    """Random, often ill-formed IOB2 (stray I-, type switches), several tags per token when nested."""
    out = []
    for _ in range(n):
        k = rng.choice([0, 0, 1, 1, 2, 3]) if nested else rng.choice([0, 1])
        tags = [rng.choice("BI") + "-" + rng.choice(TYPES) for _ in range(k)]
        out.append(tags or ["O"])
    return out


def perturb(rng, sentences, nested):
    """Predictions: gold with some tags replaced at random, so scores are neither 0 nor 1."""
    pred = []
    for s in sentences:
        tags = [list(t) for t in s.tags]
        for i in range(len(tags)):
            if rng.random() < 0.15:
                tags[i] = random_tags(rng, 1, nested)[0]
        pred.append(Sentence(list(s.tokens), tags))
    return pred


@pytest.mark.parametrize("task", ["flat", "nested"])
def test_random_sequences_match_seqeval(task):
    rng = random.Random(0)
    for _ in range(30):
        gold = [Sentence([f"w{i}" for i in range(n)], random_tags(rng, n, task == "nested"))
                for n in (rng.randint(1, 25) for _ in range(20))]
        pred = [Sentence(s.tokens, random_tags(rng, len(s), task == "nested")) for s in gold]
        assert_equal_to_seqeval(gold, pred, task)


def test_real_sample_nested_matches_seqeval(sample_dir):
    gold = read_file(sample_dir / "val.txt", task="nested")
    pred = perturb(random.Random(1), gold, nested=True)
    assert_equal_to_seqeval(gold, pred, "nested")
    assert score(gold, gold, "nested").micro.f1 == 1.0


def test_real_sample_flat_matches_seqeval(sample_flat_dir):
    gold = read_file(sample_flat_dir / "val.txt", task="flat")
    pred = perturb(random.Random(2), gold, nested=False)
    assert_equal_to_seqeval(gold, pred, "flat")


def test_hand_worked_nested_example():
    # gold: ORG over tokens 0-2 with a GPE at 2; prediction finds the ORG as 0-1 and the GPE right.
    gold = [Sentence(["a", "b", "c", "d"], [["B-ORG"], ["I-ORG"], ["I-ORG", "B-GPE"], ["O"]])]
    pred = [Sentence(["a", "b", "c", "d"], [["B-ORG"], ["I-ORG"], ["B-GPE"], ["O"]])]
    r = score(gold, pred, "nested")
    # 1 of 2 predicted spans right, 1 of 2 gold spans found: P = R = F1 = 0.5
    assert (r.micro.precision, r.micro.recall, r.micro.f1) == (0.5, 0.5, 0.5)
    assert r.per_type["GPE"].f1 == 1.0 and r.per_type["ORG"].f1 == 0.0


def test_same_type_nesting_is_dropped():
    # an ORG inside an ORG: only the outer one is scored (first tag of the type per token)
    gold = [Sentence(["a", "b", "c"], [["B-ORG"], ["I-ORG", "B-ORG"], ["I-ORG", "I-ORG"]])]
    r = score(gold, gold, "nested")
    assert r.micro.support == 1
