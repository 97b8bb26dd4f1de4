"""A study's search space: the Tune axes of a study spec, how many trials a grid has, and the run spec of
one trial (the study's shared settings plus the trial's point). Pure functions of the spec."""

from __future__ import annotations

import hashlib
import itertools
import json
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


def grid_axes(spec: StudySpec) -> dict[str, list]:
    """A grid's axes as Tune names them in a trial's config (plm, loss, variance_penalty, seed, lr, ...)."""
    s = spec.search
    axes = {"plm": list(s.plm), "loss": list(s.losses), "variance_penalty": list(s.variance_penalty),
            "seed": list(s.seeds)}
    axes.update({k: list(getattr(s, k)) for k in s.axes if getattr(s, k) is not None})
    return axes


def grid_points(spec: StudySpec) -> list[dict]:
    """Every point of a grid, in a fixed order (the first axis varies slowest)."""
    axes = grid_axes(spec)
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def grid_size(spec: StudySpec) -> int:
    if spec.search.mode == "optuna":
        return spec.search.num_samples
    return math.prod(len(a) for a in grid_axes(spec).values())


def trial_key(spec: StudySpec, point: dict, tune_trial_id: str) -> str:
    """A trial's identity, which finds its MLflow run in any later command.

    A grid trial is its point: the same point run by a resumed, restarted or grown study is the same trial
    (``p-`` and a hash of the point's canonical JSON). An Optuna trial is its Tune trial: two trials of one
    search may sample the same point."""
    if spec.search.mode != "grid":
        return tune_trial_id
    text = json.dumps({k: point[k] for k in grid_axes(spec)}, sort_keys=True, ensure_ascii=False)
    return "p-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def trial_run_spec(spec: StudySpec, point: dict, trial_id: str) -> tuple[RunSpec, str]:
    """The run spec of one trial (the study's shared settings plus its point, named after ``trial_id``, its
    ``trial_key``) and its loss name."""
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
