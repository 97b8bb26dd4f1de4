"""The specs that read the WojoodNER 2023 corpus (not distributed with nerlab) expect it in the repository's
git-ignored ``data/wojood/``; without it they stop at once, saying where the files go and whence they come."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from nerlab.platform.cli import main

ROOT = Path(__file__).resolve().parents[2]
CORPUS_SPECS = sorted(p for p in (ROOT / "experiments").glob("*.yaml")
                      if "wojood" in str(yaml.safe_load(p.read_text(encoding="utf-8")).get("data")))


def test_every_corpus_spec_names_files_in_the_clones_ignored_data_folder():
    names = {p.name for p in CORPUS_SPECS}
    assert {"seed-reproduce-nested.yaml", "seed-reproduce-flat.yaml", "seed-grid-nested.yaml",
            "seed-grid-flat.yaml", "seed-arbertv2-nested.yaml", "optuna-wide.yaml"} <= names
    for spec in CORPUS_SPECS:
        text = spec.read_text(encoding="utf-8")
        data = yaml.safe_load(text)["data"]
        task = yaml.safe_load(text)["task"]
        for split in ("train", "val", "test"):
            resolved = (spec.parent / data[split]).resolve()  # relative to the spec's folder, as specs resolve
            assert resolved == ROOT / "data" / "wojood" / task / f"{split}.txt", (spec.name, split)
        assert "data/wojood/" in text.split("\nname:")[0], spec.name  # the comment names the same place
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "data/wojood/nested/train.txt"])
    assert ignored.returncode == 0, "data/wojood/ must be git-ignored (the corpus is never committed)"


@pytest.mark.parametrize("verb", ["study run", "train"])
def test_a_missing_corpus_says_where_it_goes_and_whence(verb, tmp_path, capsys):
    # the spec as it is, in a clone-like folder without the corpus (whatever this clone holds)
    name = "seed-reproduce-nested.yaml" if verb == "study run" else "seed-arbertv2-nested.yaml"
    spec = tmp_path / "clone" / "experiments" / name
    spec.parent.mkdir(parents=True)
    shutil.copy(ROOT / "experiments" / name, spec)
    code = main([*verb.split(), str(spec), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    folder = tmp_path / "clone" / "data" / "wojood" / "nested"
    assert f"{folder / 'train.txt'}: no such file" in err, err
    assert "obtain it from its authors" in err and f"in {folder}/" in err, err
    assert not (tmp_path / "out").exists()
