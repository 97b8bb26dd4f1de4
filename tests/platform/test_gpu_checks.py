"""Arithmetic of the GPU proof's checks (scripts/gpu/study_check.py, train_check.py), on the CPU."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

GPU = Path(__file__).resolve().parents[2] / "scripts" / "gpu"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", GPU / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


study_check, train_check = load("study_check"), load("train_check")


def test_max_overlap_matches_counting_at_every_instant() -> None:
    rng = random.Random(0)
    for _ in range(200):
        intervals = [(s, s + rng.randint(1, 30)) for s in (rng.randint(0, 100) for _ in range(rng.randint(1, 8)))]
        # brute force on half-open [start, end): an end at t closes before a start at t opens
        brute = max(sum(s <= t < e for s, e in intervals) for t in range(0, 140))
        assert study_check.max_overlap(intervals) == brute


def test_four_trials_at_once_and_in_turn() -> None:
    assert study_check.max_overlap([(0, 50), (1, 49), (2, 55), (3, 51)]) == 4
    assert study_check.max_overlap([(0, 10), (10, 20), (20, 30), (30, 40)]) == 1


def test_last_json_skips_log_lines_before_and_after() -> None:
    text = 'INFO start {not json}\n{\n  "run_id": "abc",\n  "val_f1": 0.5\n}\n(raylet) shutting down\n'
    assert train_check.last_json(text) == {"run_id": "abc", "val_f1": 0.5}
