"""Shared fixtures: the real Wojood sample (shipped in tests/data), synthetic data, tiny PLMs, a local Ray
with 2 CPUs, and spec files written from a base spec plus changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "wojood-sample"
SAMPLE_FLAT = ROOT / "tests" / "data" / "wojood-sample-flat"


def _sample(folder: Path) -> Path:
    """A sample folder shipped with the tests: missing is a broken checkout, a failure, never a skip."""
    missing = [f.name for f in (folder / f"{s}.txt" for s in ("train", "val", "test")) if not f.is_file()]
    if missing:
        pytest.fail(f"{folder}: {', '.join(missing)} missing (the sample ships with the repository, see tests/data/README.md)")
    return folder


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return _sample(SAMPLE)


@pytest.fixture(scope="session")
def sample_flat_dir() -> Path:
    return _sample(SAMPLE_FLAT)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A synthetic nested corpus (train/val/test) shared by the whole test session."""
    from nerlab.models.synth import write_corpus

    out = tmp_path_factory.mktemp("synth")
    write_corpus(out, 1500, seed=7)
    return out


@pytest.fixture(scope="session")
def tiny_plm(synth_dir, tmp_path_factory) -> Path:
    """A tiny BERT whose WordPiece vocabulary is learned from the synthetic corpus."""
    from nerlab.models.tiny_plm import build_tiny_plm

    out = tmp_path_factory.mktemp("tiny-plm")
    return build_tiny_plm([synth_dir / "train.txt"], out, layers=2, hidden=64, heads=2, seed=0)


@pytest.fixture(scope="session")
def sample_plm(sample_dir, tmp_path_factory) -> Path:
    """A tiny BERT whose vocabulary is learned from the real sample's training split."""
    from nerlab.models.tiny_plm import build_tiny_plm

    out = tmp_path_factory.mktemp("sample-plm")
    return build_tiny_plm([sample_dir / "train.txt"], out, layers=2, hidden=64, heads=2, seed=0)


@pytest.fixture(scope="module")
def ray_2_cpus():
    """One local Ray (2 CPUs) for a module, shut down after it; no RAY_ADDRESS or MLflow URI leaks in."""
    import ray

    from nerlab.platform.jobs import connect_ray

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_ADDRESS", raising=False)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        connect_ray(num_cpus=2)
        try:
            yield
        finally:
            ray.shutdown()


def deep_merge(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` merged in, mapping by mapping (a change of ``train.lr`` keeps ``train.epochs``)."""
    out = dict(base)
    for k, v in changes.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture(scope="session")
def spec_file():
    """``spec_file(path, base, **changes)``: write ``base`` deep-merged with ``changes`` as a YAML spec."""
    def write(path: Path, base: dict, **changes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(deep_merge(base, changes), allow_unicode=True), encoding="utf-8")
        return path
    return write


@pytest.fixture(scope="session")
def cli_verbs() -> list:
    """Every full verb of the command line (``("study", "run")``, ``("train",)``, ...) with its parser."""
    import argparse

    from nerlab.platform.cli import build_parser

    def leaves(parser, prefix=()):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield prefix, parser
        for action in subs:
            for name, sub in action.choices.items():
                yield from leaves(sub, prefix + (name,))
    return list(leaves(build_parser()))


@pytest.fixture(autouse=True)
def no_tracking_uri_leak():
    """A test must leave MLFLOW_TRACKING_URI as it found it: MLflow's set_tracking_uri writes it into the
    environment, and every study or job started later in this process's children would track into it."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    after = os.environ.get("MLFLOW_TRACKING_URI")
    if after != before:
        os.environ.pop("MLFLOW_TRACKING_URI", None) if before is None else os.environ.update(MLFLOW_TRACKING_URI=before)
        pytest.fail(f"the test left MLFLOW_TRACKING_URI={after!r} (was {before!r})")
