"""A trial whose saved Tune state names a checkpoint that is gone (a driver killed between Tune's deletion
of an old checkpoint and the upload of its next state snapshot) is restored from the oldest later
checkpoint, or afresh: never a trial that fails on every retry and every resume."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from ray.train import Checkpoint
from ray.train._internal.session import _TrainingResult

from nerlab.platform.studies.driver import _restorable, surviving_checkpoint


def named(path: Path) -> _TrainingResult:
    return _TrainingResult(Checkpoint(str(path), filesystem=pafs.LocalFileSystem()), {"training_iteration": 2})


def test_the_checkpoint_named_is_taken_while_it_is_there(tmp_path):
    (tmp_path / "checkpoint_000001").mkdir()
    result = named(tmp_path / "checkpoint_000001")
    assert surviving_checkpoint(result) is result


def test_a_deleted_checkpoint_gives_way_to_the_oldest_later_one(tmp_path):
    for name in ("checkpoint_000000", "checkpoint_000002", "checkpoint_000003"):  # 000001 deleted
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint_000005.txt").write_text("")  # a file, not a checkpoint
    found = surviving_checkpoint(named(tmp_path / "checkpoint_000001"))
    assert Path(found.checkpoint.path).name == "checkpoint_000002"
    assert found.metrics == {"training_iteration": 2}


def test_with_no_later_checkpoint_the_trial_starts_afresh(tmp_path):
    (tmp_path / "checkpoint_000000").mkdir()  # older than the one named: never restored from
    assert surviving_checkpoint(named(tmp_path / "checkpoint_000001")) is None


def counting(config, root: str):
    """Counts to 4, one checkpoint a step; the first run dies after step 2."""
    from ray import tune

    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            start = json.loads((Path(d) / "step.json").read_text())
    for step in range(start + 1, 5):
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "step.json").write_text(json.dumps(step))
            tune.report({"step": step, "resumed_from": start}, checkpoint=Checkpoint.from_directory(d))
        if step == 2 and not (Path(root) / "died").exists():
            (Path(root) / "died").touch()
            raise RuntimeError("the trial's process dies")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tune_resumes_a_trial_whose_checkpoint_is_gone(tmp_path):
    """With Ray Tune for real: an errored trial's last checkpoint is deleted before the resume. Tune's own
    restore fails on it every time; ``_restorable`` starts the trial afresh, and it finishes."""
    import shutil

    import ray
    from ray import tune

    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        path = str(tmp_path / "tune" / "count")
        plain = tune.with_parameters(counting, root=str(tmp_path))  # as the study wraps trial_driver
        tune.Tuner(_restorable(plain),
                   run_config=tune.RunConfig(name="count", storage_path=str(tmp_path / "tune"), verbose=0,
                                             checkpoint_config=tune.CheckpointConfig(num_to_keep=2))).fit()
        (trial_dir,) = [p for p in Path(path).iterdir() if p.is_dir() and p.name.startswith("counting")]
        last = sorted(trial_dir.glob("checkpoint_*"))[-1]
        shutil.rmtree(last)  # the checkpoint Tune's state names for the errored trial
        for trainable, ends in ((plain, "error"), (_restorable(plain), 4)):
            grid = tune.Tuner.restore(path, trainable=trainable, resume_errored=True).fit()
            result = grid[0]
            if ends == "error":
                assert result.error is not None and "does not exist on storage" in str(result.error)
            else:
                assert result.error is None and result.metrics["step"] == 4 and result.metrics["resumed_from"] == 0
    finally:
        ray.shutdown()
