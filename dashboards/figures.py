"""The report's figures, each a PNG written into a folder and described for the page (id, file, title,
caption). All read from the trials and leaderboard tables of ``leaderboard.py`` (and, for per-type F1 and
learning curves, from MLflow):

- ``heatmap_lambda-<λ>.png``: validation F1 (mean over seeds) of PLM x loss, one per λ;
- ``penalty_effect.png``: validation F1 against λ, per PLM, one line per loss;
- ``per_type_f1.png``: validation F1 per entity type of the top configurations (best epoch, mean over seeds);
- ``learning_curves.png``: validation F1 and training loss per epoch of every trial;
- Optuna studies: ``search_history.png`` (each trial's F1 in order, and the best so far) and
  ``param_importance.png`` (fANOVA importance of each searched parameter, computed with Optuna from the
  trials' MLflow params and scores).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pandas as pd

from nerlab.dashboards.leaderboard import in_config
from nerlab.dashboards.runs import metric_histories, quiet_downloads
from nerlab.dashboards.runs import run_file
from nerlab.models import names as N

MAX_HEATMAPS = 6  # more distinct λ than this (a continuous Optuna axis): one heatmap over all λ


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, no display backend

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path


def _lam(value: float) -> str:
    return f"{value:g}"


def heatmaps(board: pd.DataFrame, out: Path) -> list[dict]:
    """PLM x loss validation F1, one heatmap per λ (the best configuration of each cell, if several)."""
    cells = board.drop_duplicates(["plm", "loss", "penalty"], keep="first")  # board is sorted best first
    lambdas = sorted(cells["penalty"].dropna().unique())
    groups = [(lam, cells[cells["penalty"] == lam]) for lam in lambdas]
    if len(lambdas) > MAX_HEATMAPS or not lambdas:
        groups = [(None, board.groupby(["plm", "loss"], as_index=False).agg(
            val_f1_mean=("val_f1_mean", "max"), val_f1_std=("val_f1_std", "first")))]
    lo, hi = float(board["val_f1_mean"].min()), float(board["val_f1_mean"].max())
    figs = []
    for lam, g in groups:
        mean = g.pivot_table(index="plm", columns="loss", values="val_f1_mean", aggfunc="max")
        std = g.pivot_table(index="plm", columns="loss", values="val_f1_std", aggfunc="first", dropna=False)
        std = std.reindex(index=mean.index, columns=mean.columns)
        stopped = (g.assign(_all=g["stopped_early"] >= g["trials"]) if "stopped_early" in g else g.assign(_all=False)
                   ).pivot_table(index="plm", columns="loss", values="_all", aggfunc="first")
        stopped = stopped.reindex(index=mean.index, columns=mean.columns)
        fig = _figure(1.9 + 1.6 * len(mean.columns), 1.3 + 0.7 * len(mean.index))
        ax = fig.subplots()
        im = ax.imshow(mean.to_numpy(dtype=float), cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1e-9,
                       aspect="auto")
        ax.set_xticks(range(len(mean.columns)), [str(c) for c in mean.columns])
        ax.set_yticks(range(len(mean.index)), [str(i) for i in mean.index])
        ax.set_xlabel("loss")
        ax.set_ylabel("PLM")
        for i in range(len(mean.index)):
            for j in range(len(mean.columns)):
                m, s = mean.iat[i, j], std.iat[i, j]
                if not math.isnan(m):
                    text = f"{m:.3f}" + ("*" if stopped.iat[i, j] == 1 else "")
                    text += "" if s is None or math.isnan(s) else f"\n±{s:.3f}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=9,
                            color="white" if m < (lo + hi) / 2 else "black")
        title = "all λ (best per cell)" if lam is None else f"λ = {_lam(lam)}"
        ax.set_title(f"validation micro-F1, {title}", fontsize=10)
        fig.colorbar(im, ax=ax, shrink=0.8)
        name = "heatmap_all.png" if lam is None else f"heatmap_lambda-{_lam(lam)}.png"
        figs.append({"id": "heatmap-" + ("all" if lam is None else _lam(lam)), "file": _save(fig, out / name).name,
                     "title": f"PLM × loss, {title}",
                     "caption": "Validation micro-F1 of the best epoch, mean ± std over seeds; * every trial "
                                "of the cell was stopped early by ASHA (its best epoch so far)."})
    return figs


def penalty_effect(trials: pd.DataFrame, out: Path) -> dict:
    """Validation F1 against the variance-penalty weight λ: one panel per PLM, one line per loss."""
    plms = sorted(trials["plm"].dropna().unique())
    cols = min(3, len(plms))
    rows = math.ceil(len(plms) / cols)
    fig = _figure(4.2 * cols, 3.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    losses = sorted(trials["loss"].dropna().unique())
    colors = {loss: f"C{i % 10}" for i, loss in enumerate(losses)}
    for ax, plm in zip(axes, plms):
        t = trials[trials["plm"] == plm]
        for loss in losses:
            g = t[t["loss"] == loss]
            if g.empty:
                continue
            ax.scatter(g["penalty"], g["val_f1"], color=colors[loss], alpha=0.35, s=18)
            means = g.groupby("penalty")["val_f1"].agg(["mean", "std"]).reset_index()
            if len(means) <= MAX_HEATMAPS * 2:
                ax.errorbar(means["penalty"], means["mean"], yerr=means["std"].fillna(0.0), color=colors[loss],
                            marker="o", capsize=3, label=loss)
            else:
                ax.plot([], [], color=colors[loss], marker="o", label=loss)
        ax.set_title(str(plm), fontsize=10)
        ax.set_xlabel("variance penalty λ")
        ax.set_ylabel("validation micro-F1")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(plms):]:
        ax.set_visible(False)
    return {"id": "penalty-effect", "file": _save(fig, out / "penalty_effect.png").name,
            "title": "Effect of the variance penalty per PLM",
            "caption": "Dots: trials (seeds); lines: mean ± std over seeds at each λ."}


def _val_report(client, run_id: str, tmp: Path, artifact_uri: str | None = None) -> dict | None:
    try:
        path = run_file(client, run_id, N.report_file("val"), str(tmp), artifact_uri)
    except Exception:  # a trial stopped early has no final report
        return None
    return json.loads(Path(path).read_text(encoding="utf-8"))


def per_type(client, board: pd.DataFrame, trials: pd.DataFrame, out: Path, top_k: int) -> dict | None:
    """Validation F1 per entity type of the top configurations (from each trial's best-epoch report)."""
    top = board.head(top_k)
    rows = {}
    with tempfile.TemporaryDirectory() as d, quiet_downloads():
        for i, (_, cfg) in enumerate(top.iterrows()):
            mine = trials.loc[in_config(trials, cfg)]
            uris = mine["artifact_uri"] if "artifact_uri" in mine else [None] * len(mine)
            reports = [r for r in (_val_report(client, rid, Path(d) / f"{i}-{n}", uri)
                                   for n, (rid, uri) in enumerate(zip(mine["run_id"], uris))) if r]
            if reports:
                per = pd.DataFrame([{t: s["f1"] for t, s in r["per_type"].items()} for r in reports]).mean()
                rows[f"#{i + 1} {cfg['config']}"] = per
    if not rows:
        return None
    table = pd.DataFrame(rows).T.sort_index(axis=1)
    fig = _figure(2.5 + 0.42 * len(table.columns), 1.4 + 0.45 * len(table.index))
    ax = fig.subplots()
    im = ax.imshow(table.to_numpy(dtype=float), cmap="magma", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(table.columns)), table.columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(table.index)), table.index, fontsize=8)
    for i in range(len(table.index)):
        for j in range(len(table.columns)):
            v = table.iat[i, j]
            if not math.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v < 0.5 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8, label="F1")
    ax.set_title("validation F1 per entity type (best epoch, mean over seeds)", fontsize=10)
    return {"id": "per-type", "file": _save(fig, out / "per_type_f1.png").name,
            "title": f"Per-type F1 of the top {len(table)} configurations", "caption": "Rows in leaderboard order."}


def learning_curves(client, trials: pd.DataFrame, board: pd.DataFrame, out: Path, top_k: int,
                    max_trials: int = 60) -> dict:
    """Validation F1 and training loss per epoch; the top configurations in colour, the rest grey."""
    colors = {}
    for i, (_, cfg) in enumerate(board.head(top_k).iterrows()):
        for rid in trials.loc[in_config(trials, cfg), "run_id"]:
            colors[rid] = (f"C{i % 10}", f"#{i + 1} {cfg['config']}")
    shown = list(colors) + [r for r in trials["run_id"] if r not in colors]
    fig = _figure(11, 3.8)
    ax_f1, ax_loss = fig.subplots(1, 2)
    labelled = set()
    histories = {key: metric_histories(client, shown[:max_trials], key) for key in (N.VAL_F1, N.TRAIN_LOSS)}
    for rid in shown[:max_trials]:
        color, label = colors.get(rid, ("0.7", "other configurations"))
        for ax, key in ((ax_f1, N.VAL_F1), (ax_loss, N.TRAIN_LOSS)):
            hist = sorted(histories[key][rid], key=lambda m: m.step)
            if hist:
                lab = label if (ax is ax_f1 and label not in labelled) else None
                ax.plot([m.step for m in hist], [m.value for m in hist], color=color, marker=".", alpha=0.85,
                        label=lab, linewidth=1.2)
                if lab:
                    labelled.add(label)
    ax_f1.set(xlabel="epoch", ylabel="validation micro-F1", title="validation micro-F1 per epoch")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="training loss per epoch")
    for ax in (ax_f1, ax_loss):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if labelled:
        ax_f1.legend(fontsize=7)
    return {"id": "learning-curves", "file": _save(fig, out / "learning_curves.png").name,
            "title": "Learning curves", "caption": f"One line per trial ({min(len(shown), max_trials)} shown)."}


def search_history(trials: pd.DataFrame, out: Path) -> dict:
    """Each trial's validation F1 in the order trials started, and the best so far."""
    t = trials[trials["val_f1"].notna()].sort_values("start_time")
    x = range(1, len(t) + 1)
    fig = _figure(7, 3.6)
    ax = fig.subplots()
    stopped = t["stopped_early"].to_numpy()
    ax.scatter([i for i, s in zip(x, stopped) if not s], t["val_f1"][~stopped], label="trial", color="C0")
    if stopped.any():
        ax.scatter([i for i, s in zip(x, stopped) if s], t["val_f1"][stopped], label="stopped early (ASHA)",
                   color="C3", marker="x")
    ax.step(list(x), t["val_f1"].cummax(), where="post", color="C1", label="best so far")
    ax.set(xlabel="trial (in start order)", ylabel="validation micro-F1", title="Optuna search history")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return {"id": "search-history", "file": _save(fig, out / "search_history.png").name,
            "title": "Search history", "caption": "Validation micro-F1 of each trial's best epoch."}


def param_importances(trials: pd.DataFrame) -> dict[str, float]:
    """fANOVA importance of each searched parameter that varies, via an in-memory Optuna study."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    t = trials[trials["val_f1"].notna()]
    axes = ["plm", "loss", "penalty", *[c for c in t.columns if c.startswith("axis.")]]
    dists = {}
    for col in axes:
        values = t[col].dropna().unique()
        if len(values) < 2:
            continue
        name = col[len("axis."):] if col.startswith("axis.") else col
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            lo, hi = float(min(values)), float(max(values))
            dists[(col, name)] = FloatDistribution(lo, hi, log=lo > 0 and hi / lo >= 100)
        else:
            dists[(col, name)] = CategoricalDistribution(sorted(str(v) for v in values))
    if not dists or len(t) < 3:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for _, row in t.iterrows():
        params, distributions = {}, {}
        for (col, name), dist in dists.items():
            if pd.isna(row[col]):
                break
            params[name] = str(row[col]) if isinstance(dist, CategoricalDistribution) else float(row[col])
            distributions[name] = dist
        else:
            study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                      value=float(row["val_f1"])))
    try:
        from optuna.importance import FanovaImportanceEvaluator

        return optuna.importance.get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
    except (ImportError, RuntimeError, ValueError):
        return optuna.importance.get_param_importances(study)


def importance_figure(importances: dict[str, float], out: Path) -> dict:
    names = list(importances)[::-1]
    fig = _figure(6, 1.2 + 0.45 * len(names))
    ax = fig.subplots()
    ax.barh(names, [importances[n] for n in names], color="C2")
    ax.set(xlabel="importance (fANOVA, normalised)", title="Parameter importance for validation micro-F1")
    ax.grid(alpha=0.3, axis="x")
    return {"id": "param-importance", "file": _save(fig, out / "param_importance.png").name,
            "title": "Parameter importance",
            "caption": "How much of the variance of validation micro-F1 each searched parameter explains."}
