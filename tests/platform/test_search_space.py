"""A study's search axes: each optional axis of ``search`` sets the run-spec field it names in a trial, the loss
settings of the registry are all searchable, and a grid counts every axis. Pure functions: no Ray starts."""

from __future__ import annotations

import pytest

from nerlab.losses import LOSSES, SETTINGS
from nerlab.platform.specs.search import grid_size, param_space, trial_run_spec
from nerlab.platform.specs.study import Search, StudySpec

POINT = {"plm": "tiny:2x32", "loss": "mine", "variance_penalty": 2.0, "seed": 7}
LOSS = {"ce": 0.5, "tversky": 0.25, "focal": 0.25}


def test_every_loss_setting_of_the_registry_is_a_search_axis() -> None:
    axes = Search().axes
    assert {key for key, target in axes.items() if target.startswith("loss.")} == set(SETTINGS)
    assert {"tversky_alpha", "tversky_beta", "focal_gamma", "lr", "batch_size", "dropout"} <= set(axes)


@pytest.mark.parametrize("key", list(Search().axes))
def test_each_axis_sets_the_field_it_names_in_the_trial(key: str) -> None:
    value = 24 if key == "batch_size" else 0.375
    spec = StudySpec(name="s", search=Search(plm=("tiny:2x32",), loss={"mine": LOSS}, **{key: (value,)}))
    run, loss_name = trial_run_spec(spec, {**POINT, key: value}, "t1")
    section, name = Search().axes[key].split(".")
    assert getattr(getattr(run, section), name) == value
    assert (run.name, loss_name, run.model.plm, run.train.seed, run.train.variance_penalty) == \
        ("s-t1", "mine", "tiny:2x32", 7, 2.0)
    if section == "loss":  # the value reaches the loss function's keyword: focal_gamma -> focal(gamma=...)
        loss, setting = name.split("_", 1)
        assert run.loss.to_loss_config().kwargs(loss)[setting] == value
    others = {k: getattr(getattr(run, t.split(".")[0]), t.split(".")[1]) for k, t in Search().axes.items() if k != key}
    assert others == {k: getattr(getattr(spec.base_run(), t.split(".")[0]), t.split(".")[1])
                      for k, t in Search().axes.items() if k != key}  # the other fields keep the study's values


def test_a_grid_counts_every_axis_and_tune_gets_each() -> None:
    search = Search(plm=("tiny:2x32",), loss=("ce", "unified"), variance_penalty=(0.0, 1.0), seeds=(1,),
                    lr=(1e-3, 2e-3), batch_size=(8, 16, 32), focal_gamma=(1.0, 2.0))
    spec = StudySpec(name="s", search=search)
    assert grid_size(spec) == 1 * 2 * 2 * 1 * 2 * 3 * 2
    space = param_space(spec)
    assert {k for k in space if k in Search().axes} == {"lr", "batch_size", "focal_gamma"}
    assert space["batch_size"] == {"grid_search": [8, 16, 32]}


def test_a_penalty_loss_is_no_loss_alone() -> None:
    assert [name for name, loss in LOSSES.items() if loss.penalty] == ["irm"]
    with pytest.raises(ValueError, match="besides the irm penalty"):
        StudySpec(name="s", search=Search(loss={"only": {"irm": 1.0}}))
