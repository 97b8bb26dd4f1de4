"""The study leaderboard: one row per configuration, validation F1 as mean ± std over seeds, from MLflow.

Everything here is read from the tracking store (runs, tags, params, metrics), never from files on the
machine that ran the study, so a leaderboard of a study on a remote tracking server is the same table.

A configuration is a trial's point in the search space without its seed: the PLM, the loss, the
variance-penalty weight λ and any other searched axis (learning rate, batch size, ...), read from the
``trial.*`` params each trial run logs.
"""

from __future__ import annotations

import math

import pandas as pd

from nerlab.dashboards.runs import metric_histories, study_runs  # noqa: F401 (study_runs re-exported)
from nerlab.dashboards.seed_table import RECIPE_NOTE, has_seed, is_seed_recipe, seed_columns, seed_text
from nerlab.models import names as N
from nerlab.models.names import BEST_VAL_F1 as VAL  # the best epoch's validation micro-F1 (the selected one)
from nerlab.models.names import TEST_F1 as TEST
from nerlab.models.names import VAL_F1 as VAL_EPOCH  # per-epoch validation micro-F1

# Axes of the search space that name the configuration in the first columns; ``seed`` is what varies
# inside a configuration.
NAMED_AXES = {"plm": "plm", "loss": "loss", "variance_penalty": "penalty"}
SEED_AXIS = "seed"


def metric_key(name: str) -> str:
    """The logged metric a user means: ``val/micro_f1`` is the best epoch's value, not the last epoch's."""
    return VAL if name in (VAL_EPOCH, "val_f1", "val") else TEST if name in ("test_f1", "test") else name


def higher_is_better(metric: str) -> bool:
    """F1, precision, recall, throughput: higher is better; a loss or a time: lower is better."""
    key = metric_key(metric)
    return not ("loss" in key or key.endswith(("seconds", "_s")))


def _number(text: str | None):
    """A param's value as int or float where it is one (``'5.0'`` -> 5.0), else the text."""
    if text is None or text == "None":
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def _device(run) -> str:
    """'gpu' or 'cpu': the device the job's workers logged, else what its spec asked for."""
    tag = run.data.tags.get(N.DEVICE_TAG, "").lower()
    if tag:
        return "gpu" if tag.startswith("cuda") else "cpu"
    return "gpu" if run.data.params.get("resources.use_gpu") == "True" else "cpu"


def _precision(tags) -> str | None:
    """The precision the run's workers trained in (its tag; older runs' tags say bfloat16/float16)."""
    tag = tags.get(N.PRECISION_TAG)
    return {"bfloat16": "bf16", "float16": "fp16"}.get(tag, tag)


def _needs_history(run) -> bool:
    """A trial stopped early (no final metrics) whose best epoch so far was not read with the run."""
    m = run.data.metrics
    return VAL not in m and VAL_EPOCH in m and getattr(run, "best_val_f1_so_far", None) is None


def _best_val(run, history: list | None) -> float | None:
    """The best epoch's validation F1; a trial stopped early gets its best epoch so far: read with the run
    (dashboards/runs.py's SQL path) or from its ``history`` of per-epoch validation F1."""
    m = run.data.metrics
    if VAL in m:
        return m[VAL]
    if VAL_EPOCH not in m:
        return None
    so_far = getattr(run, "best_val_f1_so_far", None)
    return so_far if so_far is not None else max(x.value for x in history)


def trial_frame(client, experiment_id: str, parent_run_id: str, metrics: tuple[str, ...] = (),
                runs: list | None = None) -> pd.DataFrame:
    """One row per trial run of the study, with its search point, scores and cost.

    ``metrics`` adds a column per extra logged metric (its latest value), named as the metric.
    """
    runs = study_runs(client, experiment_id, parent_run_id) if runs is None else runs
    histories = metric_histories(client, [r.info.run_id for r in runs if _needs_history(r)], VAL_EPOCH)
    rows = []
    for r in runs:
        t, m, p = r.data.tags, r.data.metrics, r.data.params
        point = {k[len("trial."):]: _number(v) for k, v in p.items() if k.startswith("trial.")}
        start, end = r.info.start_time, r.info.end_time
        wall = (end - start) / 1000 if start and end else math.nan
        workers = float(p.get("resources.workers", "1"))
        device = _device(r)
        per_worker = float(p.get("resources.gpus_per_worker" if device == "gpu" else "resources.cpus_per_worker", "1"))
        row = {  # every trial run carries these tags (platform/training/job.py open_run, platform/studies/driver.py)
            "run_id": r.info.run_id, "trial": t.get(N.TRIAL_TAG), "status": r.info.status,
            "plm": t.get(N.PLM_TAG), "loss": t.get(N.LOSS_TAG), "penalty": float(t.get(N.PENALTY_TAG, math.nan)),
            "seed": int(t.get(N.SEED_TAG, 0)),
            "val_f1": _best_val(r, histories.get(r.info.run_id)), "test_f1": m.get(TEST), "best_epoch": m.get(N.BEST_EPOCH),
            "stopped_early": t.get(N.STOPPED_EARLY_TAG) == "true", "completed": VAL in m,
            "device": device, "precision": _precision(t), "wall_s": wall,
            "cpu_s": wall * workers * per_worker if device == "cpu" else 0.0,
            "gpu_s": wall * workers * per_worker if device == "gpu" else 0.0,
            "start_time": start, "task": t.get(N.TASK_TAG), "seed_recipe": is_seed_recipe(p, t),
            "artifact_uri": r.info.artifact_uri,
        }
        for axis, value in point.items():  # other searched axes (lr, batch_size, loss_w_*, ...)
            if axis not in NAMED_AXES and axis != SEED_AXIS:
                row[f"axis.{axis}"] = value
        for key in metrics:
            row[key] = m.get(key) if key != VAL else row["val_f1"]
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.sort_values("start_time", kind="stable").reset_index(drop=True)
    return frame


def config_columns(trials: pd.DataFrame) -> list[str]:
    """The columns that name a configuration: PLM, loss, λ, then every other searched axis."""
    return ["plm", "loss", "penalty", *sorted(c for c in trials.columns if c.startswith("axis."))]


def in_config(trials: pd.DataFrame, cfg) -> pd.Series:
    """Which trials belong to configuration ``cfg`` (a leaderboard row): same value on every config column."""
    mask = pd.Series(True, index=trials.index)
    for col in config_columns(trials):
        mask &= (trials[col] == cfg[col]) | (trials[col].isna() & pd.isna(cfg[col]))
    return mask


def config_label(row, columns: list[str]) -> str:
    parts = [str(row["plm"]), str(row["loss"]), f"λ={row['penalty']:g}"]
    for c in columns[3:]:
        v = row[c]
        parts.append(f"{c[len('axis.'):]}={v:g}" if isinstance(v, float) else f"{c[len('axis.'):]}={v}")
    return " | ".join(parts)


def _std(values: pd.Series) -> float:
    """Sample standard deviation over seeds; NaN for a single seed (there is no spread to report)."""
    return float(values.std(ddof=1)) if values.notna().sum() > 1 else math.nan


def leaderboard_frame(client, experiment_id: str, parent_run_id: str, metric: str = VAL,
                      trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """Configurations sorted by the mean of ``metric`` over seeds (best first; ties: smaller spread).

    Best is highest, or lowest for a loss or a time (``higher_is_better``).

    Columns: config, the configuration's axes, val_f1_mean/std, test_f1_mean/std, best_epoch (mean),
    precision (the precisions its trials trained in), trials, finished, stopped_early, wall_s / cpu_s / gpu_s (summed resource-seconds: wall time x
    workers x CPUs or GPUs per worker), best_run_id (its best trial by ``metric``), task, seed_recipe
    (every trial ran the reference system's recipe), seed_dev_f1 / seed_dev_f1_range / seed_delta (the reference system's published
    dev F1 of the same configuration and ours minus it, seed_table.py) and, when ``metric`` is not
    validation F1, score_mean/score_std of that metric.
    """
    key = metric_key(metric)
    if trials is None:
        trials = trial_frame(client, experiment_id, parent_run_id, metrics=(key,) if key not in (VAL, TEST) else ())
    if trials.empty:
        return trials
    score_col = {VAL: "val_f1", TEST: "test_f1"}.get(key, key)
    if score_col not in trials:
        trials = trials.assign(**{score_col: math.nan})
    trials = trials[trials[score_col].notna()]
    if trials.empty:
        return pd.DataFrame()
    cols = config_columns(trials)
    rows = []
    for values, g in trials.groupby(cols, dropna=False, sort=False):
        best = g.loc[g[score_col].idxmax() if higher_is_better(key) else g[score_col].idxmin()]
        row = dict(zip(cols, values))
        row.update(
            val_f1_mean=float(g["val_f1"].mean()), val_f1_std=_std(g["val_f1"]),
            test_f1_mean=float(g["test_f1"].mean()) if g["test_f1"].notna().any() else math.nan,
            test_f1_std=_std(g["test_f1"]),
            best_epoch=float(g["best_epoch"].mean()) if g["best_epoch"].notna().any() else math.nan,
            trials=int(len(g)), finished=int((g["status"] == "FINISHED").sum()),
            stopped_early=int(g["stopped_early"].sum()), wall_s=float(g["wall_s"].sum()),
            cpu_s=float(g["cpu_s"].sum()), gpu_s=float(g["gpu_s"].sum()), best_run_id=best["run_id"],
            seeds=",".join(str(s) for s in sorted(g["seed"])),
            precision=(",".join(sorted(g["precision"].dropna().unique())) or None) if "precision" in g else None,
            task=g["task"].dropna().iloc[0] if g["task"].notna().any() else None,
            seed_recipe=bool(g["seed_recipe"].all()) if "seed_recipe" in g else False,
        )
        # The reference system's published figure for this PLM, task, loss and λ, when there is one (seed_table.py).
        row.update(seed_columns(row["plm"], row["task"], row["loss"], row["penalty"], row["val_f1_mean"]))
        if score_col != "val_f1":
            row.update(score_mean=float(g[score_col].mean()), score_std=_std(g[score_col]))
        rows.append(row)
    board = pd.DataFrame(rows)
    board.insert(0, "config", [config_label(r, cols) for _, r in board.iterrows()])
    sort_col = "val_f1_mean" if score_col == "val_f1" else "score_mean"
    spread = board[sort_col.replace("_mean", "_std")].fillna(0.0)
    board = board.assign(_spread=spread).sort_values([sort_col, "_spread", "config"],
                                                     ascending=[not higher_is_better(key), True, True], kind="stable")
    return board.drop(columns="_spread").reset_index(drop=True)


def format_board(board: pd.DataFrame) -> str:
    """A text table: configuration, val F1 mean ± std, test F1, best epoch, trials, time."""
    if board.empty:
        return "(no finished trials)"

    def pm(mean, std):
        return f"{mean:.4f}" + ("" if math.isnan(std) else f" ± {std:.4f}")

    table = pd.DataFrame({
        "#": range(1, len(board) + 1), "configuration": board["config"],
        "val F1 (mean ± std)": [pm(m, s) for m, s in zip(board["val_f1_mean"], board["val_f1_std"])],
        "test F1": [f"{v:.4f}" if not math.isnan(v) else "-" for v in board["test_f1_mean"]],
        "best epoch": [f"{v:.1f}" if not math.isnan(v) else "-" for v in board["best_epoch"]],
        "precision": board["precision"].fillna("-") if "precision" in board else "-", "trials": board["trials"], "stopped": board["stopped_early"],
        "CPU s": [f"{v:.0f}" for v in board["cpu_s"]], "GPU s": [f"{v:.0f}" for v in board["gpu_s"]],
    })
    if "score_mean" in board:
        table.insert(3, "score", [pm(m, s) for m, s in zip(board["score_mean"], board["score_std"])])
    if not has_seed(board):
        return table.to_string(index=False)
    shown, delta = [], []
    for _, r in board.iterrows():
        f1, d = seed_text(r)
        shown.append(f1 + ("" if f1 == "-" or r.get("seed_recipe", False) else " †"))
        delta.append(d)
    at = table.columns.get_loc("test F1")
    table.insert(at, "seed dev F1", shown)
    table.insert(at + 1, "Δ", delta)
    return table.to_string(index=False) + "\n" + RECIPE_NOTE
