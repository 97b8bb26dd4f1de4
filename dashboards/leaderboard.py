"""The study leaderboard: one row per configuration, validation F1 as mean ± std over seeds, from MLflow."""

from __future__ import annotations

import pandas as pd

VAL = "best/val/micro_f1"
TEST = "test/micro_f1"


def trial_frame(client, experiment_id: str, parent_run_id: str) -> pd.DataFrame:
    """One row per trial run of the study (children of the parent run)."""
    runs = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'", max_results=10000)
    rows = []
    for r in runs:
        t, m = r.data.tags, r.data.metrics
        seconds = ((r.info.end_time or r.info.start_time) - r.info.start_time) / 1000 if r.info.start_time else 0.0
        rows.append({
            "run_id": r.info.run_id, "trial": t.get("trial"), "status": r.info.status,
            "plm": t.get("plm"), "loss": t.get("loss"), "penalty": float(t.get("penalty", "nan")),
            "seed": int(t.get("seed", "0")), "val_f1": m.get(VAL, m.get("val/micro_f1")),
            "test_f1": m.get(TEST), "best_epoch": m.get("best_epoch"),
            "stopped_early": t.get("nerlab.stopped_early") == "true", "seconds": seconds,
        })
    return pd.DataFrame(rows)


def leaderboard_frame(client, experiment_id: str, parent_run_id: str) -> pd.DataFrame:
    """Configurations (PLM, loss, λ) sorted by mean validation F1 over seeds."""
    trials = trial_frame(client, experiment_id, parent_run_id)
    if trials.empty:
        return trials
    trials = trials[trials["val_f1"].notna()]
    g = trials.groupby(["plm", "loss", "penalty"], dropna=False)
    board = g.agg(val_f1_mean=("val_f1", "mean"), val_f1_std=("val_f1", "std"), test_f1_mean=("test_f1", "mean"),
                  best_epoch=("best_epoch", "mean"), trials=("run_id", "count"), seconds=("seconds", "sum"),
                  stopped_early=("stopped_early", "sum")).reset_index()
    board["val_f1_std"] = board["val_f1_std"].fillna(0.0)
    board.insert(0, "config", board["plm"] + " | " + board["loss"] + " | λ=" + board["penalty"].map("{:g}".format))
    return board.sort_values("val_f1_mean", ascending=False, kind="stable").reset_index(drop=True)
