"""Where the worker loop runs: ``TrainSession`` in a Ray Train worker group (any number of workers), ``TuneSession``
for a one-worker trial trained in its Tune trial's own process (its checkpoints and reports go straight to Tune)."""

from __future__ import annotations

from pathlib import Path

import ray.train
import ray.train.torch
import torch


class TrainSession:
    """Inside a Ray Train worker: rank, world and device from Train; checkpoints and reports through Train."""

    def __init__(self):
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()

    def checkpoint(self):
        return ray.train.get_checkpoint()

    def report(self, metrics: dict, folder: Path | None = None) -> None:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if folder else None)


class TuneSession:
    """A one-worker job in its Tune trial's own process: checkpoints and reports go straight to Tune."""

    rank, world = 0, 1

    def __init__(self, gpu: bool):
        self.device = torch.device("cuda", 0) if gpu and torch.cuda.is_available() else torch.device("cpu")

    def checkpoint(self):
        from ray import tune

        return tune.get_checkpoint()

    def report(self, metrics: dict, folder: Path | None = None) -> None:
        from ray import tune

        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder) if folder else None)
