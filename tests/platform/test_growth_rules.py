"""Which spec changes grow a study (values added to a grid's axes, a higher Optuna num_samples) and which are
another study (a value removed, a fixed key changed, a loss redefined, an axis added), and what a growth
says it adds. Pure functions of two specs: no Ray, no MLflow."""

from __future__ import annotations

from dataclasses import replace

import pytest

from nerlab.platform.specs.search import grid_points, trial_key
from nerlab.platform.specs.study import Search, StudySpec
from nerlab.platform.studies.growth import compare, describe

GRID = StudySpec(name="g", search=Search(plm=("tiny:2x32", "tiny:2x64"), loss=("ce", "unified"),
                                         variance_penalty=(0.0, 5.0), seeds=(1, 2, 3)))


def grown(**search) -> StudySpec:
    return replace(GRID, search=replace(GRID.search, **search))


def test_the_same_spec_neither_grows_nor_differs() -> None:
    assert compare(GRID, GRID) == ({}, [])


def test_a_plm_added_adds_its_points_and_says_so_as_in_a_console() -> None:
    new = grown(plm=("tiny:2x32", "tiny:2x64", "qarib"))
    added, blocked = compare(GRID, new)
    assert (added, blocked) == ({"plm": ["qarib"]}, [])
    # 1 PLM x 2 losses x 2 λ x 3 seeds: the points of the new grid that the old one lacks
    assert describe(GRID, new, added) == "adds 12 trials: PLM qarib × 2 losses × 2 λ values × 3 seeds"
    old_keys = {trial_key(GRID, p, "") for p in grid_points(GRID)}
    new_keys = {trial_key(new, p, "") for p in grid_points(new)}
    assert old_keys < new_keys and len(new_keys - old_keys) == 12  # every old point keeps its identity


def test_seeds_and_a_loss_added_together_are_named_each() -> None:
    new = grown(seeds=(1, 2, 3, 4, 5), loss=("ce", "unified", "dice"))
    added, blocked = compare(GRID, new)
    assert (added, blocked) == ({"loss": ["dice"], "seeds": [4, 5]}, [])
    assert describe(GRID, new, added) == f"adds {2 * 3 * 2 * 5 - 2 * 2 * 2 * 3} trials: loss + dice, seeds + 4, 5"


def test_a_point_is_its_values_not_the_order_its_axes_list_them() -> None:
    reordered = grown(plm=("tiny:2x64", "tiny:2x32"), seeds=(3, 1, 2))
    assert compare(GRID, reordered) == ({}, [])
    assert {trial_key(GRID, p, "") for p in grid_points(GRID)} == \
        {trial_key(reordered, p, "") for p in grid_points(reordered)}


def test_removing_a_value_changing_a_fixed_key_or_both_is_refused_naming_each_key() -> None:
    fewer = grown(seeds=(1, 2))
    assert compare(GRID, fewer)[1] == ["search.seeds (removed: 3)"]
    longer = replace(GRID, train=replace(GRID.train, epochs=GRID.train.epochs + 1))
    assert compare(GRID, longer)[1] == [f"train.epochs {GRID.train.epochs} -> {GRID.train.epochs + 1}"]
    both = replace(longer, search=replace(GRID.search, plm=("tiny:2x32", "qarib")))
    added, blocked = compare(GRID, both)
    assert blocked == [f"train.epochs {GRID.train.epochs} -> {GRID.train.epochs + 1}", "search.plm (removed: tiny:2x64)"]


def test_a_loss_redefined_under_its_name_or_a_new_axis_is_not_growth() -> None:
    redefined = grown(loss={"ce": {"ce": 1.0}, "unified": {"ce": 0.5, "dice": 0.5}})
    assert any(b.startswith("search.loss.unified (its weights changed") for b in compare(GRID, redefined)[1])
    with_lr = grown(lr=(1e-3, 3e-3))
    assert compare(GRID, with_lr)[1] == ["search.lr (a new axis: the trials run so far have no value on it)"]


def test_budget_keys_change_without_growth_or_refusal() -> None:
    faster = replace(GRID, resources=replace(GRID.resources, max_concurrent=GRID.resources.max_concurrent + 3))
    assert compare(GRID, faster) == ({}, [])


def test_an_optuna_search_grows_by_num_samples_only() -> None:
    tpe = replace(GRID, search=replace(GRID.search, mode="optuna", num_samples=8))
    more = replace(tpe, search=replace(tpe.search, num_samples=16))
    added, blocked = compare(tpe, more)
    assert (added, blocked) == ({"num_samples": [8, 16]}, [])
    assert describe(tpe, more, added) == "adds 8 trials to the search (num_samples 8 -> 16)"
    assert compare(more, tpe)[1] == ["search.num_samples 16 -> 8 (a search cannot shrink)"]
    other_plms = replace(more, search=replace(more.search, plm=("tiny:2x32", "tiny:2x64", "qarib")))
    assert compare(tpe, other_plms)[1][0].startswith("search.plm ")  # a search's space is fixed


def test_a_grown_optuna_search_draws_new_points_instead_of_replaying_its_first_round(tmp_path) -> None:
    """Round 1: 8 trials from the spec's seeded TPE (all random: TPE starts with 10 random points). Round 2,
    a new command on the same storage: the sampler as the study builds it proposes points round 1 did not
    try, where the same seed restarted replays round 1's first points."""
    import optuna

    from nerlab.platform.studies.driver import tpe_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")

    def ask(sampler, n: int) -> list[float]:
        study = optuna.create_study(study_name="s", storage=db, load_if_exists=True, sampler=sampler,
                                    direction="maximize")
        lrs = []
        for _ in range(n):
            trial = study.ask()
            lrs.append(trial.suggest_float("lr", 1e-5, 3e-2, log=True))
            study.tell(trial, lrs[-1])
        return lrs

    search = Search(mode="optuna", sampler_seed=7)
    first = ask(tpe_sampler("s", search, db), 8)
    assert ask(optuna.samplers.TPESampler(seed=7), 1)[0] == first[0]  # the replay a restarted seed gives
    second = ask(tpe_sampler("s", search, db), 2)
    assert not set(second) & set(first)


@pytest.mark.parametrize("startup", [3, 10])
def test_tpe_draws_search_startup_trials_at_random_then_models_the_results(tmp_path, startup) -> None:
    """TPE's first ``startup_trials`` points are its random sampler's (same seed); the next one is modelled on
    the results and differs from the random stream's next point."""
    import optuna

    from nerlab.platform.studies.driver import tpe_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def points(sampler, n: int, name: str) -> list[float]:
        db = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / (name + '.db')}")
        study = optuna.create_study(study_name="s", storage=db, sampler=sampler(db), direction="maximize")
        out = []
        for _ in range(n):
            trial = study.ask()
            out.append(trial.suggest_float("lr", 1e-5, 3e-2, log=True))
            study.tell(trial, -abs(out[-1] - 1e-3))
        return out

    search = Search(mode="optuna", sampler_seed=5, startup_trials=startup)
    tpe = points(lambda db: tpe_sampler("s", search, db), 4, "tpe")
    random = points(lambda db: optuna.samplers.RandomSampler(seed=5), 4, "random")
    assert tpe[:min(startup, 4)] == random[:min(startup, 4)]
    assert (tpe[3] == random[3]) == (startup > 3)


def test_startup_trials_at_its_old_default_keeps_a_study_s_identity() -> None:
    """A spec key added later (``search.startup_trials``) at the value older specs meant leaves the study's
    digest as it was; another value is another study."""
    from nerlab.platform.studies import ownership

    old = {"name": "s", "search.mode": "optuna", "search.num_samples": "8"}
    assert ownership.digest(old) == ownership.digest({**old, "search.startup_trials": "10"})
    assert ownership.digest(old) != ownership.digest({**old, "search.startup_trials": "4"})
