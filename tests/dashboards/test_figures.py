"""Report figures and the leaderboard's grouping from hand-built trial tables (no Ray, no MLflow).

The real study in conftest.py is a small grid; these cover what it does not: several PLMs and λ, other
searched axes, an Optuna study's search history and parameter importance.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest

from nerlab.dashboards import figures
from nerlab.dashboards.leaderboard import leaderboard_frame


def trials_table(optuna: bool = False, seed: int = 0) -> pd.DataFrame:
    """Trials as trial_frame returns them: F1 rises with the PLM, the unified loss and λ; lr matters in Optuna."""
    rng = np.random.default_rng(seed)
    rows, t = [], 0
    for plm, base in (("plm-a", 0.80), ("plm-b", 0.85)):
        for loss, bonus in (("ce", 0.0), ("unified", 0.02)):
            for lam in (0.0, 5.0):
                for s in (1, 2):
                    lr = float(10 ** rng.uniform(-5, -3)) if optuna else None
                    f1 = base + bonus + 0.002 * lam + (0.05 * math.log10(lr) if optuna else 0) + rng.normal(0, 0.003)
                    row = {"run_id": f"r{t}", "trial": f"t{t}", "status": "FINISHED", "plm": plm, "loss": loss,
                           "penalty": lam, "seed": s, "val_f1": f1, "test_f1": f1 - 0.01, "best_epoch": 3.0,
                           "stopped_early": t % 5 == 4, "device": "cpu", "wall_s": 10.0, "cpu_s": 9.0,
                           "gpu_s": 0.0, "start_time": 1000 + t, "task": "nested"}
                    if optuna:
                        row["axis.lr"] = lr
                    rows.append(row)
                    t += 1
    return pd.DataFrame(rows)


def test_leaderboard_groups_seeds_and_sorts_by_mean():
    trials = trials_table()
    board = leaderboard_frame(None, "", "", trials=trials)
    assert len(board) == 8 and (board["trials"] == 2).all()
    for _, row in board.iterrows():
        g = trials[(trials["plm"] == row["plm"]) & (trials["loss"] == row["loss"]) & (trials["penalty"] == row["penalty"])]
        assert row["val_f1_mean"] == pytest.approx(statistics.mean(g["val_f1"]))
        assert row["val_f1_std"] == pytest.approx(statistics.stdev(g["val_f1"]))
        assert row["best_run_id"] == g.loc[g["val_f1"].idxmax(), "run_id"]
    assert list(board["val_f1_mean"]) == sorted(board["val_f1_mean"], reverse=True)
    assert board.iloc[0]["config"] == "plm-b | unified | λ=5"


def test_other_searched_axes_split_configurations():
    board = leaderboard_frame(None, "", "", trials=trials_table(optuna=True))
    assert len(board) == 16 and (board["trials"] == 1).all()  # every lr differs: one trial per configuration
    assert board["val_f1_std"].isna().all()  # no spread from a single seed
    assert all("lr=" in c for c in board["config"])


def test_grid_figures(tmp_path):
    trials = trials_table()
    board = leaderboard_frame(None, "", "", trials=trials)
    figs = figures.heatmaps(board, tmp_path)
    assert [f["file"] for f in figs] == ["heatmap_lambda-0.png", "heatmap_lambda-5.png"]
    assert figures.penalty_effect(trials, tmp_path)["file"] == "penalty_effect.png"
    for f in tmp_path.glob("*.png"):
        assert f.read_bytes()[:4] == b"\x89PNG" and f.stat().st_size > 5000


def test_optuna_figures_and_importance(tmp_path):
    trials = trials_table(optuna=True)
    assert figures.search_history(trials, tmp_path)["file"] == "search_history.png"
    importance = figures.param_importances(trials)
    assert set(importance) == {"plm", "loss", "penalty", "lr"}
    assert sum(importance.values()) == pytest.approx(1.0)
    assert max(importance, key=importance.get) == "lr"  # lr moves F1 by 0.1, the others by 0.05 or less
    assert figures.importance_figure(importance, tmp_path)["file"] == "param_importance.png"
    assert (tmp_path / "param_importance.png").stat().st_size > 5000


def test_many_lambdas_give_one_heatmap_over_all(tmp_path):
    trials = trials_table()
    trials["penalty"] = np.linspace(0, 10, len(trials))  # a continuous Optuna axis
    board = leaderboard_frame(None, "", "", trials=trials)
    assert [f["file"] for f in figures.heatmaps(board, tmp_path)] == ["heatmap_all.png"]
