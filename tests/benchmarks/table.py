"""Regenerate README's benchmark table from the benchmarks' JSON results.

``scripts/bench.sh`` runs every benchmark with ``--json`` into ``tests/benchmarks/results/`` and then this
script, which rewrites the part of README.md between the ``bench:begin`` and ``bench:end`` markers.
A benchmark without a results file shows "not measured". Usage: ``python tests/benchmarks/table.py
[--results DIR] [--readme PATH] [--check|--print]`` (``--check``: exit 1 if README's table is out of
date; ``--print``: print the table, leave README alone).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def load(folder: Path, name: str) -> dict | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _steady(values: list[float]) -> float:
    return statistics.median(values[1:] if len(values) > 1 else values)


def rows(folder: Path) -> list[tuple[str, str, str]]:
    """(figure, value, how it was measured)"""
    out: list[tuple[str, str, str]] = []
    b = load(folder, "batching")
    if b:
        for bs in ("16", "32"):
            p, t = b["padding_efficiency"].get(bs), b["throughput"].get(bs)
            if p:
                out.append((f"padding efficiency, batch {bs}", f"{p['bucketed']:.3f} vs {p['random']:.3f} "
                            f"(**{p['ratio']:.2f}x**)", "real sub-words / padded positions, length-bucketed vs "
                            "random-order batches, real Wojood sample (`bench_batching.py`)"))
            if t:
                out.append((f"training throughput, batch {bs}", f"{t['median_bucketed']:.0f} vs "
                            f"{t['median_random']:.0f} tok/s (**{t['ratio']:.2f}x**)",
                            f"tiny BERT {b['layers']}x{b['hidden']}, {b['threads']} CPU thread(s), median of "
                            f"{b['repeats']} interleaved repeats (`bench_batching.py`)"))
    r = load(folder, "train_loop")
    if r:
        out += [("Ray Train loop vs plain PyTorch loop", f"**{r['ray_vs_plain']:.3f}x** (target >= 0.95)",
                 "steady-state tokens/s, 1 worker vs `train_epoch` in one process, same model, data and "
                 "batches (`bench_train_loop.py`)"),
                ("fixed start-up cost of a training job", f"{r['startup_s']:.1f} s",
                 "1-epoch job wall time minus its epoch (`bench_train_loop.py`)"),
                ("2 workers vs 1 (DDP, gloo, 2 CPU cores)", f"{r['two_vs_one']:.2f}x",
                 "steady-state tokens/s (`bench_train_loop.py`)")]
    s = load(folder, "study")
    if s:
        n = len(s.get("searches", [])) or 1
        share = (f"**{s['search_share']:.2f}** median, {s.get('search_share_max', s['search_share']):.2f} worst "
                 f"over {n} sampler seed(s)")
        out += [("fixed cost per trial", f"{s['trial_overhead_s']:.1f} s (+{s['trial_epoch_s']:.1f} s/epoch, "
                 f"{s['trial_train_epoch_s']:.1f} s of it training steps)",
                 "trial run duration = a + b x epochs from 1- and 5-epoch one-trial studies (`bench_study.py`)"),
                ("fixed cost per study", f"{s['study_overhead_s']:.1f} s",
                 "1-trial study wall time minus its trial (Ray, MLflow server, data, Tune) (`bench_study.py`)"),
                ("study efficiency (training / wall)", f"{s['grid_efficiency']:.2f} "
                 f"({s['grid_train_s']:.0f} s of {s['grid_wall_s']:.0f} s; trials ran {s['grid_concurrency']:.2f}x"
                 " in parallel)", f"{s['grid_trials']}-trial grid, sum of `train/epoch_seconds` over the study's "
                 "wall time (`bench_study.py`)"),
                ("search efficiency (Optuna + ASHA)", f"{share} of the grid's epochs (target <= 0.40)",
                 f"epochs trained, in completion order, until a trial is within 1 F1 point of the grid's best; "
                 f"{s['search_trials']} TPE samples per search, {s['search_stopped_early']} trials stopped early in all "
                 "(`bench_study.py`)")]
    sr = load(folder, "seed_recipe")
    if sr:
        how = (f"real Wojood sample, nested, tiny BERT {sr['layers']}x{sr['hidden']} from scratch, {sr['epochs']} epochs, "
               f"mean of seeds {', '.join(map(str, sr['seeds']))}; epoch of best val F1 (`bench_seed_recipe.py`)")
        for variant in dict.fromkeys(r["variant"] for r in sr["rows"]):
            cells = [f"λ={r['lambda']:g}: {r['by_val_f1.val_f1']:.3f} / {r['by_val_f1.test_f1']:.3f}"
                     for r in sr["rows"] if r["variant"] == variant]
            out.append((f"val / test F1, ({variant})", "; ".join(cells), how))
        t = sr["irm_time"]
        out.append(("IRM term, time per training epoch", f"{t['masked']['ratio']:.2f}x masked, "
                    f"{t['reference']['ratio']:.2f}x reference normalisation (from the loss alone: "
                    f"{t['masked']['ratio_from_loss']:.3f}x, {t['reference']['ratio_from_loss']:.3f}x)",
                    "unified-seed over unified, same batches and weights, fastest of interleaved epochs; "
                    "the loss's own forward + backward added to an epoch (`bench_seed_recipe.py`)"))
    g = load(folder, "gpu")
    if g:
        for row in g["rows"]:
            mfu = f", MFU {row['mfu']:.1%}" if "mfu" in row else ""
            out.append((f"bert-base tagger on {g['device']}, {row['precision']}, batch {row['batch_size']}",
                        f"{row['tokens_per_s']:.0f} tok/s{mfu}", "`bench_gpu.py`"))
    else:
        out.append(("GPU plan (not measured yet)", "run `bench_gpu.py` on one H100",
                    "tokens/s of a bert-base-sized tagger with bf16 autocast vs the reference system's fp32 loop (TF32 off), "
                    "and model FLOPs utilisation = 6 x non-embedding params x tokens/s / dense bf16 peak"))
    return out


def render(folder: Path) -> str:
    lines = [BEGIN, "| figure | value | how it was measured |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows(folder)]
    lines.append(END)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=ROOT / "tests" / "benchmarks" / "results")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    p.add_argument("--check", action="store_true", help="exit 1 if the README's table is out of date")
    p.add_argument("--print", action="store_true", help="print the table only, leave README alone")
    args = p.parse_args(argv)
    if args.print:
        print(render(args.results))
        return 0
    text = args.readme.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        print(f"{args.readme}: no {BEGIN} ... {END} markers", file=sys.stderr)
        return 2
    head, rest = text.split(BEGIN, 1)
    new = head + render(args.results) + rest.split(END, 1)[1]
    if args.check:
        return 0 if new == text else 1
    args.readme.write_text(new, encoding="utf-8")
    print(render(args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
