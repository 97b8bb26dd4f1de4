"""Shared fixtures: the real Wojood sample (skipped where absent), synthetic data and tiny PLMs."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "wojood-sample"
SAMPLE_FLAT = ROOT.parent / "shared" / "data" / "wojood-sample-flat"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    if not SAMPLE.is_dir():
        pytest.skip(f"the real Wojood sample is not at {SAMPLE}")
    return SAMPLE


@pytest.fixture(scope="session")
def sample_flat_dir() -> Path:
    if not SAMPLE_FLAT.is_dir():
        pytest.skip(f"the real flat Wojood sample is not at {SAMPLE_FLAT}")
    return SAMPLE_FLAT


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
