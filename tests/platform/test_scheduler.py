"""ASHA as a study builds it, driven with the real Ray Tune scheduler: no cut at or after the last epoch."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray.tune.schedulers import TrialScheduler

from nerlab.models import names as N
from nerlab.platform.studies.driver import _asha
from nerlab.platform.specs.study import StudySpec
from nerlab.platform.specs.loader import from_dict


def study(epochs: int, grace: int, factor: int = 2) -> StudySpec:
    return from_dict(StudySpec, {
        "name": "s", "task": "nested", "data": {"synth": {"sentences": 40, "seed": 0}},
        "train": {"epochs": epochs}, "search": {"mode": "grid", "plm": ["tiny:2x32"], "loss": ["ce"],
                                                  "variance_penalty": [0.0], "seeds": [1]},
        "scheduler": {"asha": {"grace_period": grace, "reduction_factor": factor}}}, "spec")


def drive(scheduler, trials: int, reports: int, f1):
    """Each trial reports ``reports`` results in turn (trial 0 first at every step); returns the step at which
    each trial was stopped (None if never)."""
    scheduler.set_search_properties(N.TUNE_VAL_F1, "max")  # what Tune does with TuneConfig's metric and mode
    ts = [SimpleNamespace(trial_id=f"t{i}", config={}) for i in range(trials)]
    for t in ts:
        scheduler.on_trial_add(None, t)
    stopped = {t.trial_id: None for t in ts}
    for step in range(1, reports + 1):
        for i, t in enumerate(ts):
            if stopped[t.trial_id] is None:
                action = scheduler.on_trial_result(None, t, {"training_iteration": step, N.TUNE_VAL_F1: f1(i, step)})
                if action == TrialScheduler.STOP:
                    stopped[t.trial_id] = step
    return stopped


@pytest.mark.parametrize("epochs,grace,factor", [(4, 1, 2), (15, 4, 2), (3, 1, 3), (9, 1, 3), (2, 1, 2)])
def test_asha_never_stops_a_trial_at_its_last_epoch_or_final_report(epochs, grace, factor):
    # Odd trials are weak from the start (each worse than all before it): ASHA must cut some of them.
    # Even trials tie with the best until their last epoch and then fall behind: a rung at the last epoch
    # or at the final (test) report, the job's report after its epochs, would cut them there.
    def f1(i: int, step: int) -> float:
        return 1.0 - i / 10 if i % 2 or step >= epochs else 1.0

    stopped = drive(_asha(study(epochs, grace, factor)), trials=8, reports=epochs + 1, f1=f1)
    cuts = [s for s in stopped.values() if s is not None]
    assert cuts, "ASHA stopped no trial"
    assert max(cuts) < epochs, stopped
    assert all(stopped[f"t{i}"] is None for i in range(0, 8, 2))  # every even trial reaches its final report


def test_no_asha_when_no_rung_fits_before_the_last_epoch():
    assert _asha(study(epochs=1, grace=1)) is None
    assert _asha(study(epochs=4, grace=4)) is None
    assert _asha(study(epochs=5, grace=4)) is not None
