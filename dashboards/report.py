"""A study's report: one self-contained HTML page of its leaderboard and figures (``figures.py``), attached
to the study's parent run.

The leaderboard on the page shows the reference system's published dev F1 beside a configuration that matches one of the
seed's runs (PLM, task, loss, λ; ``seed_table.py``), with the difference.

``report.html`` embeds the figures as data URIs, so it renders on its own: in a browser, and in the MLflow
UI's artifact viewer (which shows an HTML artifact in a sandboxed frame where relative links do not load).
"""

from __future__ import annotations

import base64
import html
import math
import time
from pathlib import Path

import pandas as pd

from nerlab.dashboards import figures as F
from nerlab.dashboards.leaderboard import leaderboard_frame, study_runs, trial_frame
from nerlab.dashboards.seed_table import RECIPE_NOTE, has_seed, seed_text
from nerlab.models import names as N


def study_info(parent) -> dict:
    p, t = parent.data.params, parent.data.tags
    return {"study": t.get(N.STUDY_RUN_TAG, parent.info.run_name), "mode": p.get("search.mode", "grid"),
            "task": p.get("task", "?"), "parent_run_id": parent.info.run_id,
            "experiment_id": parent.info.experiment_id, "status": parent.info.status}


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(info: dict, board: pd.DataFrame, trials: pd.DataFrame, figures: list[dict], out: Path,
                notes: list[str]) -> str:
    esc = html.escape
    table = "<p>(no finished trials)</p>"
    seed_note = ""
    if not board.empty:
        with_seed = has_seed(board)  # the reference system's published dev F1 beside ours (seed_table.py)
        rows = []
        for i, (_, r) in enumerate(board.iterrows(), start=1):
            std = "" if math.isnan(r["val_f1_std"]) else f" ± {r['val_f1_std']:.4f}"
            test = "-" if math.isnan(r["test_f1_mean"]) else f"{r['test_f1_mean']:.4f}"
            epoch = "-" if math.isnan(r["best_epoch"]) else f"{r['best_epoch']:.1f}"
            seed = ""
            if with_seed:
                f1, delta = seed_text(r)
                mark = "" if f1 == "-" or r.get("seed_recipe", False) else " †"
                seed = f"<td class='seed'>{esc(f1)}{mark}</td><td class='delta'>{esc(delta)}</td>"
            rows.append(f"<tr><td>{i}</td><td>{esc(r['config'])}</td><td>{r['val_f1_mean']:.4f}{std}</td>{seed}"
                        f"<td>{test}</td><td>{epoch}</td><td>{r['trials']}</td><td>{r['stopped_early']}</td><td>{r['cpu_s']:.0f}</td>"
                        f"<td>{r['gpu_s']:.0f}</td></tr>")
        seed_head = "<th>seed dev F1</th><th>Δ</th>" if with_seed else ""
        table = ("<table id='leaderboard'><thead><tr><th>#</th><th>configuration</th><th>val F1 (mean ± std)</th>"
                 f"{seed_head}<th>test F1</th><th>best epoch</th><th>trials</th><th>stopped early</th><th>CPU s</th>"
                 "<th>GPU s</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
        seed_note = f"<p class='caption' id='seed-note'>{esc(RECIPE_NOTE)}</p>" if with_seed else ""
    sections = []
    for f in figures:
        sections.append(f"<section><h2>{esc(f['title'])}</h2><img id='{esc(f['id'])}' alt='{esc(f['title'])}' "
                        f"src='{_data_uri(out / f['file'])}'><p class='caption'>{esc(f['caption'])} "
                        f"(<code>{esc(f['file'])}</code>)</p></section>")
    finished = int((trials["status"] == "FINISHED").sum()) if not trials.empty else 0
    stopped = int(trials["stopped_early"].sum()) if not trials.empty else 0
    notes_html = "".join(f"<li>{esc(n)}</li>" for n in notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>nerlab report: {esc(info['study'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1150px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; }}
th {{ background: #f0f0f0; }} tbody tr:first-child {{ background: #eaf6ea; font-weight: 600; }}
img {{ max-width: 100%; border: 1px solid #ddd; }} .caption {{ color: #555; font-size: 0.9em; }}
</style></head><body>
<h1>Study report: {esc(info['study'])}</h1>
<p id="summary">{esc(info['mode'])} study, {esc(info['task'])} NER, {len(trials)} trials ({finished} finished, {stopped} of them stopped early by ASHA),
{len(board)} configurations. Parent run <code>{esc(info['parent_run_id'])}</code> in experiment
<code>{esc(info['experiment_id'])}</code>. Generated {esc(time.strftime('%Y-%m-%d %H:%M:%S'))}.</p>
<h2>Leaderboard</h2>
{table}
<p class="caption">Sorted by mean validation micro-F1 of the best epoch over seeds (a trial stopped early
by ASHA counts with its best epoch so far, and has no test score). CPU/GPU s: wall time x workers x CPUs or
GPUs per worker, summed over trials. Pick and register the champion with <code>nerlab select {esc(info['study'])} --name NAME</code>.</p>
{seed_note}
{''.join(sections)}
{f'<h2>Notes</h2><ul>{notes_html}</ul>' if notes else ''}
</body></html>
"""


def build_report(client, experiment_id: str, parent_run_id: str, out_dir: str | Path, top_k: int = 5,
                 log: bool = True) -> dict:
    """Write the figures and ``report.html`` into ``out_dir``; attach them to the parent run under
    ``report/``. Returns the files written and whether they were logged."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("*.png")) + [out / "report.html"]:  # a figure of an earlier report must not linger
        old.unlink(missing_ok=True)
    parent = client.get_run(parent_run_id)
    info = study_info(parent)
    runs = study_runs(client, experiment_id, parent_run_id)
    trials = trial_frame(client, experiment_id, parent_run_id, runs=runs)
    board = leaderboard_frame(client, experiment_id, parent_run_id, trials=trials)
    figures, notes = [], []
    if not board.empty:
        scored = trials[trials["val_f1"].notna()]
        figures += F.heatmaps(board, out)
        figures.append(F.penalty_effect(scored, out))
        pt = F.per_type(client, board, scored, out, top_k)
        if pt:
            figures.append(pt)
        else:
            notes.append("No per-type report found among the top configurations' runs.")
        figures.append(F.learning_curves(client, scored, board, out, top_k))
        if info["mode"] == "optuna":
            figures.append(F.search_history(scored, out))
            importances = F.param_importances(scored)
            if importances:
                figures.append(F.importance_figure(importances, out))
            else:
                notes.append("Parameter importance needs at least 3 scored trials and a parameter that varies.")
    else:
        notes.append("No trial has a validation score yet.")
    if not board.empty:
        board.to_csv(out / "leaderboard.csv", index=False)
    page = render_html(info, board, trials, figures, out, notes)
    (out / "report.html").write_text(page, encoding="utf-8")
    files = ["report.html", *(f["file"] for f in figures)] + (["leaderboard.csv"] if not board.empty else [])
    if log:
        client.log_artifacts(parent_run_id, str(out), N.REPORT_DIR)
    return {"study": info["study"], "out": str(out), "html": str(out / "report.html"), "files": files,
            "figures": [f["id"] for f in figures], "logged_to": f"runs:/{parent_run_id}/{N.REPORT_DIR}" if log else None}
