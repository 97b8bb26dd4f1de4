"""The study spec: a search over PLM x loss x variance penalty (x seeds, lr, ...), from YAML.

A study holds the fields of a run spec that every trial shares (task, data, model, train, tracking), a
``search`` section (the axes), an optional ASHA ``scheduler`` and ``resources`` for trials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, make_dataclass, replace
from pathlib import Path

from nerlab.losses import LOSSES, PENALTIES, SETTINGS, preset
from nerlab.models import names as N
from nerlab.platform.specs.run import (
    SMOKE_DATA, SMOKE_PLM, DataSpec, LossSpec, Resources, RunSpec, SharedSpec, check_gpus_per_worker, check_plm,
    resolve_paths, smoke_model_train, smoke_plm,
)
from nerlab.platform.specs.loader import from_dict, load_yaml

Range = dict[str, tuple[float, ...]]  # {uniform: [lo, hi]} or {log_uniform: [lo, hi]}


def sets(key: str):
    """A search axis that sets run-spec field ``key`` (``train.lr``) in each trial; None: not searched."""
    return field(default=None, metadata={"sets": key})


# An axis per loss setting of the registry (focal_gamma, tversky_alpha, ...), each setting that loss key.
LossAxes = make_dataclass("LossAxes", [(k, tuple[float, ...] | Range | None, sets(f"loss.{k}")) for k in SETTINGS],
                          frozen=True, kw_only=True)


@dataclass(frozen=True)
class Search(LossAxes):
    mode: str = "grid"  # grid: every combination x seeds | optuna: TPE over the same space
    plm: tuple[str, ...] = ("tiny:2x64",)
    loss: dict[str, dict[str, float]] | tuple[str, ...] = ("ce", "unified")  # names of presets, or name -> weights
    loss_weights: dict[str, Range] | None = None  # optuna: sample each loss's weight (instead of `loss`)
    variance_penalty: tuple[float, ...] | Range = (0.0, 5.0)
    seeds: tuple[int, ...] = (3407,)
    # Adding a search key is one field here, naming the run-spec field it sets.
    lr: tuple[float, ...] | Range | None = sets("train.lr")
    batch_size: tuple[int, ...] | None = sets("train.batch_size")
    dropout: tuple[float, ...] | Range | None = sets("model.dropout")
    num_samples: int = 8  # optuna: trials to run
    sampler_seed: int = 0  # optuna: fixed TPE seed, so a search is repeatable
    # optuna: trials drawn at random before TPE models the results (Optuna's default, 10); a small budget
    # (16 trials, say) gets more from its history with fewer
    startup_trials: int = 10

    def __post_init__(self) -> None:
        if self.mode not in ("grid", "optuna"):
            raise ValueError(f"search.mode must be 'grid' or 'optuna', not {self.mode!r}")
        if not self.plm:
            raise ValueError("search.plm: empty search space (give at least one PLM)")
        if not self.seeds:
            raise ValueError("search.seeds: give at least one seed")
        if self.num_samples < 1:
            raise ValueError(f"search.num_samples must be >= 1, not {self.num_samples}")
        if self.startup_trials < 1:
            raise ValueError(f"search.startup_trials must be >= 1, not {self.startup_trials}")
        for name, weights in self.losses.items():
            try:
                LossSpec(preset=None, weights=weights)  # validates names and weights
            except ValueError as e:
                raise ValueError(f"search.loss.{name}: {str(e).removeprefix('weights: ')}") from None
        if self.loss_weights is not None and self.mode != "optuna":
            raise ValueError("search.loss_weights needs mode: optuna (a grid takes named losses)")
        for key in ("variance_penalty", *self.axes, "loss_weights"):
            self._check_axis(key, getattr(self, key))
        if self.loss_weights is not None:
            if not self.loss_weights:
                raise ValueError("search.loss_weights: empty search space")
            unknown = [k for k in self.loss_weights if k not in LOSSES]
            if unknown:
                raise ValueError(f"search.loss_weights.{unknown[0]}: unknown loss (allowed: {', '.join(LOSSES)})")
            if all(max(next(iter(r.values()))) <= 0 for r in self.loss_weights.values()):
                raise ValueError("search.loss_weights: every range is [0, 0], so all loss weights are zero")
            if all(max(next(iter(r.values()))) <= 0 for k, r in self.loss_weights.items() if k not in PENALTIES):
                losses = ", ".join(k for k in LOSSES if k not in PENALTIES)
                raise ValueError(f"search.loss_weights: only the {'/'.join(PENALTIES)} penalty can be > 0; give a "
                                 f"loss ({losses}) a range above 0")
        if isinstance(self.variance_penalty, tuple) and any(v < 0 for v in self.variance_penalty):
            raise ValueError("search.variance_penalty: λ must be >= 0")

    @property
    def axes(self) -> dict[str, str]:
        """The optional axes (lr, dropout, focal_gamma, ...), each with the run-spec field it sets."""
        return {f.name: f.metadata["sets"] for f in fields(self) if "sets" in f.metadata}

    def _check_axis(self, key: str, axis) -> None:
        if axis is None:
            return
        if isinstance(axis, tuple) and not axis:
            raise ValueError(f"search.{key}: empty list")
        ranges = ([(f"{key}.{k}", r) for k, r in axis.items()] if key == "loss_weights"
                  else [(key, axis)] if isinstance(axis, dict) else [])
        for key, r in ranges:  # a loss weight's range is named by its loss: search.loss_weights.irm
            if self.mode != "optuna":
                raise ValueError(f"search.{key}: ranges need mode: optuna (a grid takes lists)")
            if len(r) != 1 or next(iter(r)) not in ("uniform", "log_uniform"):
                raise ValueError(f"search.{key}: a range is {{uniform: [lo, hi]}} or {{log_uniform: [lo, hi]}}")
            kind, bounds = next(iter(r.items()))
            if len(bounds) != 2 or bounds[0] > bounds[1] or bounds[0] < 0 or (kind == "log_uniform" and bounds[0] <= 0):
                raise ValueError(f"search.{key}: bad range {list(bounds)} (want [lo, hi] with 0 <= lo <= hi"
                                 f"{', lo > 0 for log_uniform' if kind == 'log_uniform' else ''})")

    @property
    def losses(self) -> dict[str, dict[str, float]]:
        """Named loss combinations; preset names expand to their weights."""
        if isinstance(self.loss, dict):
            if not self.loss:
                raise ValueError("search.loss: empty search space")
            return dict(self.loss)
        if not self.loss:
            raise ValueError("search.loss: empty search space")
        try:
            return {n: preset(n, noun="loss") for n in self.loss}
        except ValueError as e:
            raise ValueError(f"search.loss: {e}; or give name: {{ce: 0.5, focal: 0.5}}") from None


@dataclass(frozen=True)
class Asha:
    grace_period: int = 1  # epochs every trial gets before it can be stopped
    reduction_factor: int = 3

    def __post_init__(self) -> None:
        if self.grace_period < 1 or self.reduction_factor < 2:
            raise ValueError("scheduler.asha: grace_period >= 1 and reduction_factor >= 2")


@dataclass(frozen=True)
class Scheduler:
    asha: Asha | None = None


SINGLE_WORKER = ("inline", "ray_train")


@dataclass(frozen=True)
class StudyResources:
    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # used when the cluster has GPUs (or use_gpu: true)
    use_gpu: bool | None = None
    trial_cpus: float = 0.1  # the trial's driver only waits on its workers
    max_concurrent: int = 2
    max_failures: int = 3  # worker failures a trial's job recovers from
    trial_retries: int = 2  # whole-trial restarts by Tune (a lost node, a dead trial driver)
    # inline: a one-worker trial trains in its Tune trial's own process (no Ray Train worker group to
    # start, seconds saved per trial); ray_train: every trial runs a Ray Train job. Trials of several
    # workers always run a Ray Train job.
    single_worker: str = "inline"

    def __post_init__(self) -> None:
        if self.workers_per_trial < 1 or self.max_concurrent < 1:
            raise ValueError("resources: workers_per_trial and max_concurrent must be >= 1")
        if self.single_worker not in SINGLE_WORKER:
            raise ValueError(f"resources.single_worker must be {' or '.join(SINGLE_WORKER)}, not "
                             f"{self.single_worker!r}")
        if self.cpus_per_worker <= 0 or self.trial_cpus < 0:
            raise ValueError("resources: cpus_per_worker must be > 0 and trial_cpus >= 0")
        check_gpus_per_worker(self.gpus_per_worker, self.workers_per_trial, self.use_gpu)

    @property
    def inline(self) -> bool:
        """Whether trials train in their Tune trial's own process (one worker, ``single_worker: inline``)."""
        return self.workers_per_trial == 1 and self.single_worker == "inline"

    @property
    def job(self) -> Resources:
        """The resources of one trial's job."""
        return Resources(workers=self.workers_per_trial, use_gpu=self.use_gpu, cpus_per_worker=self.cpus_per_worker,
                         gpus_per_worker=self.gpus_per_worker, max_failures=self.max_failures)

    def trials_that_fit(self, have: dict[str, float], gpu: bool) -> int:
        """Trials that can run at once on ``have`` ({"CPU": n, "GPU": m}): each holds ``trial_cpus`` plus its
        job's (4 trials of 1 worker x 0.25 GPU share one GPU)."""
        need = self.job.need(gpu, self.trial_cpus)
        return min(math.floor(have.get(kind, 0.0) / amount + 1e-9) for kind, amount in need.items())


@dataclass(frozen=True)
class StudySpec(SharedSpec):
    search: Search = field(default_factory=Search)
    scheduler: Scheduler = field(default_factory=Scheduler)
    resources: StudyResources = field(default_factory=StudyResources)
    storage: str | None = None  # trials' checkpoints: a folder or s3://BUCKET/PREFIX (default: output)

    def base_run(self) -> RunSpec:
        """The run spec every trial starts from (search values are filled in per trial)."""
        shared = {f.name: getattr(self, f.name) for f in fields(SharedSpec)}
        return RunSpec(**shared, resources=self.resources.job)


def smoke(spec: StudySpec) -> StudySpec:
    """A seconds-long version of any study: synthetic sentences, one epoch, a tiny PLM, one trial."""
    s = spec.search
    losses = dict(list(s.losses.items())[:1])
    pen = s.variance_penalty[:1] if isinstance(s.variance_penalty, tuple) else s.variance_penalty
    search = replace(s, plm=tuple(smoke_plm(p) for p in s.plm[:1]), loss=losses, variance_penalty=pen,
                     seeds=s.seeds[:1], num_samples=1,
                     **{k: getattr(s, k)[:1] for k in s.axes if isinstance(getattr(s, k), tuple)})
    data = SMOKE_DATA
    if spec.data.synth is not None:
        data = DataSpec(synth=replace(spec.data.synth, sentences=min(spec.data.synth.sentences,
                                                                     SMOKE_DATA.synth.sentences)))
    model, train = smoke_model_train(spec.model, spec.train)
    resources = replace(spec.resources, workers_per_trial=1, cpus_per_worker=min(spec.resources.cpus_per_worker, 0.5),
                        use_gpu=False, max_concurrent=min(spec.resources.max_concurrent, 2))
    return replace(spec, name=f"{spec.name}-smoke", data=data, search=search, train=train, resources=resources,
                   model=model,
                   output=str(Path(spec.output).parent / f"{Path(spec.output).name}-smoke") if spec.output else None)


def load_study_spec(path: str | Path, smoke_mode: bool = False, output: str | None = None) -> StudySpec:
    """Read and validate a study spec before anything starts; SpecError names the file and key."""
    path = Path(path)
    source = str(path)
    spec = from_dict(StudySpec, load_yaml(path), source)
    if output:
        spec = replace(spec, output=output)
    spec = replace(spec, output=str(Path(spec.output or Path(N.RUNS_DIR) / spec.name).expanduser().resolve()))
    if smoke_mode:
        spec = smoke(spec)
    # resolve data and check every PLM the search can pick
    run = resolve_paths(replace(spec.base_run(), model=replace(spec.model, plm=SMOKE_PLM)), path.parent, source)
    plms = []
    for i, plm in enumerate(spec.search.plm):
        local = (path.parent / plm)
        if not plm.startswith("tiny:") and (plm.startswith((".", "/", "~")) or local.exists()):
            plm = str(local.expanduser().resolve())
        check_plm(plm, source, f"search.plm[{i}]")
        plms.append(plm)
    return replace(spec, data=run.data, search=replace(spec.search, plm=tuple(plms)))
