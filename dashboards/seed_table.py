"""The reference system's published dev micro-F1 (ArabicNLP 2023) beside a study's configurations.

``seed_results.csv`` holds the figures as facts: one row per published run (PLM hub name, task, our loss
preset of the same recipe, λ, dev F1 at the epoch of lowest validation loss, and for the CE runs the best F1
over all epochs from their logs); for CAMeLBERT-Mix and QARiB only a range over the four runs is published
(loss and λ ``*``). The reference system's "CE" is our preset ``ce``, its "unified" our ``unified-seed`` (with IRM).

A configuration matches on PLM, task, loss name and λ. Its row says whether every trial ran the reference system's
recipe (``seed_recipe``: reference normalisation, random batches, selection by validation loss, fp32); if
not, the difference compares two recipes, not a reproduction.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import pandas as pd

from nerlab.models import names as N

SEED_RESULTS = Path(__file__).with_name("seed_results.csv")
ANY = "*"
SEED_LOSSES, SEED_PENALTIES = ("ce", "unified-seed"), (0.0, 5.0)  # what a range row ("*") covers: the 4 runs


@lru_cache(maxsize=1)
def seed_results() -> pd.DataFrame:
    return pd.read_csv(SEED_RESULTS, dtype={"plm": str, "task": str, "loss": str, "penalty": str})


def is_seed_recipe(params: dict, tags: dict) -> bool:
    """Did a run train with the reference system's recipe? Read from its logged spec params and its precision tag."""
    precision = tags.get(N.PRECISION_TAG) or params.get("precision")
    return (params.get("model.normalisation") == "reference" and params.get("train.batch_order") == "random"
            and params.get("train.select_by") == "val_loss" and precision == "fp32")


def lookup(plm, task, loss, penalty) -> tuple[float, str]:
    """(published dev F1 or NaN, the published range as text or '') of one configuration."""
    if plm is None or task is None or loss is None or penalty is None or pd.isna(penalty):
        return math.nan, ""
    table = seed_results()
    same = table[(table["plm"] == str(plm)) & (table["task"] == str(task))]
    for _, r in same.iterrows():
        loss_ok = str(loss) in SEED_LOSSES if r["loss"] == ANY else r["loss"] == str(loss)
        penalty_ok = float(penalty) in SEED_PENALTIES if r["penalty"] == ANY else float(r["penalty"]) == float(penalty)
        if loss_ok and penalty_ok:
            if not pd.isna(r["dev_f1"]):
                return float(r["dev_f1"]), ""
            return math.nan, f"{r['dev_f1_low']:.3f}–{r['dev_f1_high']:.3f}"
    return math.nan, ""


def seed_columns(plm, task, loss, penalty, ours: float) -> dict:
    """The leaderboard's seed columns for one configuration: published F1 (or range) and ours minus theirs."""
    f1, span = lookup(plm, task, loss, penalty)
    return {"seed_dev_f1": f1, "seed_dev_f1_range": span,
            "seed_delta": ours - f1 if not math.isnan(f1) else math.nan}


def has_seed(board: pd.DataFrame) -> bool:
    return ("seed_dev_f1" in board and (board["seed_dev_f1"].notna().any() or (board["seed_dev_f1_range"] != "").any()))


def seed_text(row) -> tuple[str, str]:
    """('0.9129' or '0.882–0.897' or '-', '+0.0012' or '-') for tables."""
    f1, span, delta = row.get("seed_dev_f1", math.nan), row.get("seed_dev_f1_range", ""), row.get("seed_delta", math.nan)
    shown = f"{f1:.4f}" if not pd.isna(f1) else (span or "-")
    return shown, (f"{delta:+.4f}" if not pd.isna(delta) else "-")


RECIPE_NOTE = ("seed dev F1: the reference system's published dev micro-F1 of the same PLM, task, loss and λ; "
               "Δ = our mean val F1 minus theirs. A row marked † did not train with the reference system's recipe (reference "
               "normalisation, random batches, selection by validation loss, fp32): its Δ compares recipes.")
