"""A study's search space: the Tune axes of a study spec, how many trials a grid has, and the run spec of
one trial (the study's shared settings plus the trial's point). Pure functions of the spec."""

from __future__ import annotations

import math
from dataclasses import replace

from nerlab.platform.specs.run import LossSpec, RunSpec
from nerlab.platform.specs.study import StudySpec


def _axis(values, mode: str):
    """A list becomes a grid axis (grid) or a categorical choice (optuna); a range becomes a distribution."""
    from ray import tune  # here, not at the top: reading a study (status, results) needs no Ray

    if isinstance(values, dict):
        kind, (lo, hi) = next(iter(values.items()))
        return tune.loguniform(lo, hi) if kind == "log_uniform" else tune.uniform(lo, hi)
    values = list(values)
    return tune.grid_search(values) if mode == "grid" else tune.choice(values)


def param_space(spec: StudySpec) -> dict:
    s = spec.search
    space = {"plm": _axis(s.plm, s.mode), "variance_penalty": _axis(s.variance_penalty, s.mode)}
    if s.loss_weights:
        space.update({f"loss_w_{k}": _axis(r, s.mode) for k, r in s.loss_weights.items()})
    else:
        space["loss"] = _axis(list(s.losses), s.mode)
    space["seed"] = _axis(s.seeds, s.mode) if s.mode == "grid" else s.seeds[0]
    space.update({key: _axis(getattr(s, key), s.mode) for key in s.axes if getattr(s, key) is not None})
    return space


def grid_size(spec: StudySpec) -> int:
    s = spec.search
    if s.mode == "optuna":
        return s.num_samples
    axes = [s.plm, s.losses, s.variance_penalty, s.seeds] + [getattr(s, k) for k in s.axes]
    return math.prod(len(a) for a in axes if a is not None)


def trial_run_spec(spec: StudySpec, point: dict, trial_id: str) -> tuple[RunSpec, str]:
    """The run spec of one trial (the study's shared settings plus its point) and its loss name."""
    base = spec.base_run()
    if "loss" in point:
        loss = LossSpec(preset=None, weights=spec.search.losses[point["loss"]])
        loss_name = point["loss"]
    else:
        weights = {k[len("loss_w_"):]: float(v) for k, v in point.items() if k.startswith("loss_w_")}
        loss, loss_name = LossSpec(preset=None, weights=weights), "+".join(f"{w:.2f}{k}" for k, w in weights.items())
    run = replace(base, name=f"{spec.name}-{trial_id}", loss=loss, model=replace(base.model, plm=point["plm"]),
                  train=replace(base.train, variance_penalty=float(point["variance_penalty"]), seed=int(point["seed"])))
    changes: dict[str, dict] = {}  # section (train, model, loss) -> its searched fields' values
    for key, target in spec.search.axes.items():
        if key in point:
            section, name = target.split(".")
            changes.setdefault(section, {})[name] = type(getattr(getattr(run, section), name))(point[key])
    return replace(run, **{k: replace(getattr(run, k), **v) for k, v in changes.items()}), loss_name


def trial_run_name(point: dict, loss_name: str) -> str:
    """A trial run's readable MLflow name: PLM · loss · λ · seed, then any other searched axis (``lr3e-05``).

    Short enough for the UI's run-name column; the Tune trial id stays in the run's ``nerlab.trial`` tag."""
    def num(v) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    parts = [str(point["plm"]), loss_name, f"λ{num(point.get('variance_penalty', 0))}", f"s{point.get('seed', 0)}"]
    skip = {"plm", "loss", "variance_penalty", "seed"}
    parts += [f"{k}{num(v)}" for k, v in sorted(point.items()) if k not in skip and not k.startswith("loss_w_")]
    return "·".join(parts)
