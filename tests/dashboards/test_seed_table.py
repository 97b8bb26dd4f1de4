"""The reference system's published dev F1 beside a study's configurations, in the leaderboard and the report.

Built from hand-made trial rows (no Ray, no MLflow): the expected figures are the paper's dev table, typed here.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from nerlab.dashboards.leaderboard import format_board, leaderboard_frame
from nerlab.dashboards.report import render_html
from nerlab.dashboards.seed_table import is_seed_recipe, lookup, seed_results

ARBERT, MIX = "UBC-NLP/ARBERTv2", "CAMeL-Lab/bert-base-arabic-camelbert-mix"

# The paper's dev table: ARBERTv2 dev micro-F1, CE / CE + penalty / unified / unified + penalty.
PUBLISHED = {("flat", "ce", 0.0): 0.8749, ("flat", "ce", 5.0): 0.8771, ("flat", "unified-seed", 0.0): 0.9031,
             ("flat", "unified-seed", 5.0): 0.9054, ("nested", "ce", 0.0): 0.9129, ("nested", "ce", 5.0): 0.9136,
             ("nested", "unified-seed", 0.0): 0.9245, ("nested", "unified-seed", 5.0): 0.9247}


def test_the_data_file_holds_the_published_figures():
    for (task, loss, lam), f1 in PUBLISHED.items():
        assert lookup(ARBERT, task, loss, lam) == (f1, "")
    assert lookup(MIX, "flat", "ce", 5.0) == (pytest.approx(math.nan, nan_ok=True), "0.882–0.897")
    assert lookup("qarib/bert-base-qarib", "nested", "unified-seed", 0.0)[1] == "0.891–0.908"
    # nerlab's own unified (no IRM), another λ or another PLM: no published figure.
    for key in ((ARBERT, "nested", "unified", 5.0), (ARBERT, "nested", "ce", 1.0), (MIX, "flat", "dice", 0.0),
                ("tiny:2x32", "nested", "ce", 0.0)):
        f1, span = lookup(*key)
        assert math.isnan(f1) and span == ""
    assert len(seed_results()) == 12


def trial(plm, loss, penalty, seed, val, recipe=True, task="nested"):
    return {"run_id": f"{plm}-{loss}-{penalty}-{seed}", "trial": str(seed), "status": "FINISHED", "plm": plm,
            "loss": loss, "penalty": penalty, "seed": seed, "val_f1": val, "test_f1": val - 0.01, "best_epoch": 7.0,
            "stopped_early": False, "completed": True, "device": "gpu", "wall_s": 100.0, "cpu_s": 0.0,
            "gpu_s": 100.0, "start_time": seed, "task": task, "seed_recipe": recipe}


@pytest.fixture
def board() -> pd.DataFrame:
    trials = pd.DataFrame([
        trial(ARBERT, "ce", 0.0, 1, 0.90), trial(ARBERT, "ce", 0.0, 2, 0.92),  # mean 0.91 vs 0.9129
        trial(ARBERT, "unified-seed", 5.0, 1, 0.93, recipe=False),  # vs 0.9247, another recipe
        trial(ARBERT, "unified", 5.0, 1, 0.95),  # nerlab's unified: nothing published
        trial(MIX, "unified-seed", 5.0, 1, 0.90),  # a published range only
    ])
    return leaderboard_frame(None, "exp", "parent", trials=trials)


def test_leaderboard_rows_carry_the_seed_figure_and_the_difference(board):
    rows = {(r["plm"], r["loss"], r["penalty"]): r for _, r in board.iterrows()}
    ce = rows[(ARBERT, "ce", 0.0)]
    assert ce["seed_dev_f1"] == 0.9129 and ce["seed_delta"] == pytest.approx(0.91 - 0.9129) and ce["seed_recipe"]
    uni = rows[(ARBERT, "unified-seed", 5.0)]
    assert uni["seed_dev_f1"] == 0.9247 and uni["seed_delta"] == pytest.approx(0.93 - 0.9247) and not uni["seed_recipe"]
    ours = rows[(ARBERT, "unified", 5.0)]
    assert math.isnan(ours["seed_dev_f1"]) and math.isnan(ours["seed_delta"]) and ours["seed_dev_f1_range"] == ""
    mix = rows[(MIX, "unified-seed", 5.0)]
    assert math.isnan(mix["seed_delta"]) and mix["seed_dev_f1_range"] == "0.897–0.919"

    text = format_board(board)

    def line(config: str) -> str:
        return next(x for x in text.splitlines() if config in x)

    assert "seed dev F1" in text and "Δ" in text and "compares recipes" in text
    assert "0.9129" in line(f"{ARBERT} | ce | λ=0") and "-0.0029" in line(f"{ARBERT} | ce | λ=0")
    assert "0.9247 †" in line(f"{ARBERT} | unified-seed | λ=5") and "+0.0053" in line(f"{ARBERT} | unified-seed | λ=5")
    assert "0.897–0.919" in line(f"{MIX} | unified-seed | λ=5")
    assert line(f"{ARBERT} | unified | λ=5").count(" - ") >= 2  # nothing published for nerlab's unified


def test_report_shows_the_same_columns(board, tmp_path):
    info = {"study": "s", "mode": "grid", "task": "nested", "parent_run_id": "p", "experiment_id": "e"}
    page = render_html(info, board, pd.DataFrame([{"status": "FINISHED", "stopped_early": False}]), [], tmp_path, [])
    assert "<th>seed dev F1</th><th>Δ</th>" in page and "id='seed-note'" in page
    assert "<td class='seed'>0.9129</td><td class='delta'>-0.0029</td>" in page
    assert "<td class='seed'>0.9247 †</td><td class='delta'>+0.0053</td>" in page


def test_a_study_with_nothing_published_keeps_its_table():
    trials = pd.DataFrame([trial("tiny:2x32", "ce", 0.0, 1, 0.5), trial("tiny:2x32", "unified", 5.0, 1, 0.6)])
    board = leaderboard_frame(None, "exp", "parent", trials=trials)
    assert "seed dev F1" not in format_board(board) and "Δ" not in format_board(board)


def test_seed_recipe_is_read_from_the_runs_params():
    params = {"model.normalisation": "reference", "train.batch_order": "random", "train.select_by": "val_loss",
              "precision": "fp32"}
    assert is_seed_recipe(params, {})
    assert is_seed_recipe({**params, "precision": "auto"}, {"nerlab.precision": "fp32"})
    assert not is_seed_recipe({**params, "precision": "auto"}, {"nerlab.precision": "bfloat16"})
    assert not is_seed_recipe({**params, "train.select_by": "val_f1"}, {})
    assert not is_seed_recipe({**params, "model.normalisation": "masked"}, {})
