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
        new, old = s.get("inline", s), s.get("ray_train")
        vs = lambda key, fmt: "" if old is None else f" (Ray Train job per trial: {old[key]:{fmt}})"  # noqa: E731
        ratio = lambda key: "" if old is None else f", **{old[key] / new[key]:.1f}x** less"  # noqa: E731
        out += [("fixed cost per trial", f"{new['trial_overhead_s']:.1f} s{vs('trial_overhead_s', '.1f')}"
                 f"{ratio('trial_overhead_s')} (+{new['trial_epoch_s']:.1f} s/epoch, "
                 f"{new['trial_train_epoch_s']:.1f} s of it training steps)",
                 "inline one-worker trials; trial run duration = a + b x epochs from 1- and 5-epoch one-trial "
                 "studies, both ways in one run (`bench_study.py`)"),
                ("fixed cost per study", f"{new['study_overhead_s']:.1f} s{vs('study_overhead_s', '.1f')}",
                 "1-trial study wall time minus its trial (Ray, MLflow server, data, Tune) (`bench_study.py`)"),
                ("grid: wall / training time", f"{new.get('grid_wall_over_train', 1 / new['grid_efficiency']):.2f}"
                 f"{vs('grid_wall_over_train', '.2f') if old and 'grid_wall_over_train' in old else ''}; trials' phase "
                 f"{new.get('grid_trials_wall_over_train', float('nan')):.2f} (goal <= 1.25)",
                 f"{new['grid_trials']}-trial grid, 2 at a time: study wall time (and first trial start to last trial "
                 f"end) over the sum of `train/epoch_seconds`; best F1 {new['grid_best_f1']:.3f} (`bench_study.py`)")]
        if "search_share" in s:
            share = (f"**{s['search_share']:.2f}** median, {s.get('search_share_max', s['search_share']):.2f} worst "
                     f"over {n} sampler seed(s)")
            out.append(("search efficiency (Optuna + ASHA)", f"{share} of the grid's epochs (target <= 0.40)",
                        f"epochs trained, in completion order, until a trial is within 1 F1 point of the grid's best; "
                        f"{s['search_trials']} TPE samples per search, {s['search_stopped_early']} trials stopped "
                        "early in all (`bench_study.py`)"))
    tl = load(folder, "trial_timeline")
    if tl and "inline" in tl:
        i, t = tl["inline"], tl["ray_train"]
        for key, label in (("trial_start_to_first_step_s", "trial start -> first training step"),
                           ("last_epoch_to_tune_final_s", "last epoch -> Tune holds the final result"),
                           ("trial_fixed_s", "a trial's fixed cost")):
            out.append((f"trial timeline: {label}", f"inline {i['warm'][key]:.2f} s vs Ray Train job "
                        f"{t['warm'][key]:.2f} s (**{t['warm'][key] / max(i['warm'][key], 1e-9):.0f}x**); first trial "
                        f"(new process) {i['cold'][key]:.2f} vs {t['cold'][key]:.2f} s",
                        f"{tl['trials']} one-epoch trials in turn per way, phase timestamps (`NERLAB_TIMELINE`), "
                        "median of the trials after the first (`bench_trial_timeline.py`)"))
    m = load(folder, "many_trials")
    if m:
        out.append((f"{m['trials']}-trial study: per-trial cost, first vs last",
                    f"run {m['first']['run_s']:.2f} -> {m['last']['run_s']:.2f} s ({m['last_over_first_run']:.2f}x), "
                    f"fixed {m['first']['fixed_s']:.2f} -> {m['last']['fixed_s']:.2f} s; slope "
                    f"{m['fixed_slope_s_per_100']:+.2f} s per 100 trials; {m['wall_per_trial_s']:.2f} s of wall per trial",
                    f"one-epoch tiny trials, {m['mode']}, 2 at a time; medians over the first and last eighth, "
                    "by start (`bench_many_trials.py`)"))
    sg = load(folder, "search_growth")
    if sg:
        n, k, seeds = sg["trials_per_half"], sg["startup_trials"], len(sg["seeds"])
        out.append((f"Optuna search grown {n} + {n} vs {2 * n} at once vs two independent searches of {n}",
                    f"best val F1 {sg['grown']['mean']:.3f} ± {sg['grown']['std']:.3f} vs {sg['at_once']['mean']:.3f} "
                    f"± {sg['at_once']['std']:.3f} vs {sg['independent']['mean']:.3f} ± {sg['independent']['std']:.3f}; "
                    f"grown beats independent in **{sg['grown_beats_independent']} of {seeds}** sampler seeds (at once in "
                    f"{sg['at_once_beats_independent']}); second half's mean val F1 {sg['grown']['second_half_mean_f1']['mean']:.3f} "
                    f"vs {sg['at_once']['second_half_mean_f1']['mean']:.3f} vs {sg['independent']['second_half_mean_f1']['mean']:.3f}",
                    f"tiny trials (TPE over lr x λ x loss, first {k} points random), {seeds} sampler seeds, "
                    "`nerlab study run` (`bench_search_growth.py`)"))
    rs = load(folder, "results_scale")
    if rs:
        lo, hi = (str(n) for n in (min(rs["sizes"]), max(rs["sizes"])))
        for verb, by in rs["verbs"].items():
            b = rs.get("before", {}).get(verb)
            was = (f"; before: {b[lo]['cpu_s']:.1f} / {b[hi]['cpu_s']:.1f} s, {b[lo]['peak_rss_mib']:.0f} / "
                   f"{b[hi]['peak_rss_mib']:.0f} MiB (**{b[hi]['cpu_s'] / by[hi]['cpu_s']:.2f}x** at {int(hi):,})") if b else ""
            out.append((f"`{verb}` at {int(lo):,} / {int(hi):,} trial runs",
                        f"{by[lo]['cpu_s']:.1f} / {by[hi]['cpu_s']:.1f} s CPU ({by[lo]['wall_s']:.1f} / {by[hi]['wall_s']:.1f} s "
                        f"wall), peak RSS {by[lo]['peak_rss_mib']:.0f} / {by[hi]['peak_rss_mib']:.0f} MiB{was}",
                        "synthetic SQLite store (tags, params, 5 epochs of metrics, artifacts as a study logs them), the "
                        "verb in a fresh process, CPU seconds incl. imports, before/after interleaved; goal <= 5 s at "
                        "2,000 (`bench_results_scale.py`)"))
    pgs = load(folder, "results_scale_pg")  # bench_results_scale.py --backends sqlite postgresql
    if pgs and "pg_over_sqlite" in pgs:
        hi = str(max(pgs["sizes"]))
        pg, lite = pgs["postgresql"]["verbs"], pgs["verbs"]
        for verb, ratio in pgs["pg_over_sqlite"].items():
            route = {"database": "--tracking-uri postgresql://", "server": "--tracking-uri http:// (mlflow server)",
                     "spec": "study.yaml's postgresql://"}[pgs["postgresql"]["routes"][verb]]
            out.append((f"`{verb}` at {int(hi):,} trial runs, PostgreSQL vs SQLite",
                        f"{pg[verb][hi]['wall_s']:.1f} vs {lite[verb][hi]['wall_s']:.1f} s wall "
                        f"(**{ratio[hi]['wall_s']:.2f}x**), verb's CPU {pg[verb][hi]['cpu_s']:.1f} vs "
                        f"{lite[verb][hi]['cpu_s']:.1f} s, peak RSS {pg[verb][hi]['peak_rss_mib']:.0f} vs "
                        f"{lite[verb][hi]['peak_rss_mib']:.0f} MiB",
                        f"same synthetic study in PostgreSQL 15 (tests/lab.py), read with {route}; SQLite: the study's "
                        "own store; interleaved, one run (`bench_results_scale.py --backends sqlite postgresql`)"))
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
    tl = load(folder, "tracking_load")
    if tl:
        sq = tl["sqlite"]
        for name in sorted(k for k in tl if k.startswith("postgres_")):
            pg = tl[name]
            out.append((f"tracking server under {tl['loggers']} trial loggers, PostgreSQL ({name[9:-1]} worker(s)) "
                        "vs SQLite", f"{pg['req_per_s']:.0f} vs {sq['req_per_s']:.0f} log_batch/s "
                        f"(**{pg['req_per_s'] / sq['req_per_s']:.2f}x**), p95 {pg['p95_ms']:.0f} vs "
                        f"{sq['p95_ms']:.0f} ms, errors {pg['errors']} vs {sq['errors']}",
                        f"{tl['loggers']} processes x {tl['batches']} log_batch of {tl['metrics_per_batch']} metrics, "
                        "client retries off; SQLite: the study's own server (1 worker); PostgreSQL 15 + S3 "
                        "(SeaweedFS) as README's lab setup; same machine, one run (`bench_tracking_load.py`)"))
    c = load(folder, "cpu")
    if c:
        base = next(r for r in c["rows"] if r["variant"] == c["rows"][0]["variant"])
        for row in c["rows"]:
            out.append((f"bert-base tagger on the CPU, `{row['variant']}`, batch {c['batch_size']} x {c['length']}",
                        f"{row['tokens_per_s']:.0f} tok/s, MFU {row['mfu']:.1%} of the {row['precision']} peak"
                        + (f" (**{row['tokens_per_s'] / base['tokens_per_s']:.2f}x** {base['variant']})"
                           if row is not base else ""),
                        f"{c['threads']} threads; peak measured in the same run: fp32 {c['peak_tflops']['fp32']:.2f}, "
                        f"bf16 {c['peak_tflops']['bf16']:.2f} TFLOP/s"
                        + (f"; load average {max(c['load_avg_1min']):.0f} on {c['cpus']} CPUs" if "load_avg_1min" in c
                           else "") + " (`bench_cpu.py`)"))
    q = load(folder, "precision_quality")
    if q:
        setup = q["setup"]
        for task, r in q["tasks"].items():
            f, b = r["fp32"], r["bf16"]
            out.append((f"test F1, bf16 vs fp32 training, {task}",
                        f"{b['test_f1']['mean']:.4f} ± {b['test_f1']['std']:.4f} vs {f['test_f1']['mean']:.4f} ± "
                        f"{f['test_f1']['std']:.4f} (bf16 - fp32 **{r['test_f1_gap']:+.4f}**; goal within 0.01 and "
                        f"the seed spread {r['seed_spread']:.4f}: {'met' if r['within_goal'] else 'not met'})",
                        f"real Wojood sample, {setup['plm']} from scratch, {setup['loss']} λ={setup['variance_penalty']:g}, "
                        f"{setup['epochs']} epochs, seeds {', '.join(map(str, setup['seeds']))}, one grid study per "
                        "precision, runs tagged with their precision (`bench_precision_quality.py`)"))
    eb = load(folder, "epoch_breakdown")
    if eb:
        for row in eb["rows"]:
            t = row["seconds"]
            parts = ", ".join(f"{k} {v:.1f}" for k, v in t.items() if k not in ("epoch", "fused_adamw"))
            out.append((f"one epoch, {eb['encoder']} encoder, {row['batch_order']} batches, {row['precision']}",
                        f"{t['epoch']:.1f} s: {parts} s",
                        f"Wojood sample's train split ({eb['train_windows']} windows), batch 16, {eb['threads']} "
                        "threads, one process (`bench_epoch_breakdown.py`)"))
    pr = load(folder, "predict")
    if pr:
        by = {(r["input"], r["precision"], r.get("budget", "default")): r for r in pr["rows"]}
        for name in dict.fromkeys(r["input"] for r in pr["rows"]):
            f, b = by.get((name, "fp32", "default")), by.get((name, "bf16", "default"))
            if f and b:
                out.append((f"`nerlab predict`, {name} ({f['tokens']} tokens), bf16 vs fp32 model",
                            f"{b['cli_tokens_per_s']:.0f} vs {f['cli_tokens_per_s']:.0f} tok/s "
                            f"(**{b['cli_tokens_per_s'] / f['cli_tokens_per_s']:.2f}x**); tagging alone "
                            f"{b['predict_tokens_per_s']:.0f} vs {f['predict_tokens_per_s']:.0f} tok/s",
                            f"{pr['encoder']} encoder on the CPU, process wall time incl. start-up, median of {pr['repeats']} "
                            "interleaved (`bench_predict.py`)"))
            for precision in ("fp32", "bf16"):
                a, n = by.get((name, precision, "default")), by.get((name, precision, "0"))
                if a and n:
                    out.append((f"`predict()`, {name}, {precision}: batches of at most {pr['cpu_batch_tokens']} "
                                "padded sub-words vs batch size alone",
                                f"{a['predict_tokens_per_s']:.0f} vs {n['predict_tokens_per_s']:.0f} tok/s "
                                f"(**{a['predict_tokens_per_s'] / n['predict_tokens_per_s']:.2f}x**); `nerlab predict` "
                                f"{a['cli_tokens_per_s'] / n['cli_tokens_per_s']:.2f}x",
                                f"{pr['encoder']} encoder on the CPU, length-sorted batches of 32, interleaved (`bench_predict.py`)"))
    sv = load(folder, "serve")
    if sv:
        by = {(r["precision"], r["sentences_per_request"], r["clients"], r.get("budget", "default")): r
              for r in sv["rows"]}
        for size in dict.fromkeys(r["sentences_per_request"] for r in sv["rows"]):
            for clients in dict.fromkeys(r["clients"] for r in sv["rows"]):
                f, b = by.get(("fp32", size, clients, "default")), by.get(("bf16", size, clients, "default"))
                n = by.get(("bf16", size, clients, "0"))
                if size > 1 and b and n:
                    out.append((f"served model, {size} sentences per request, {clients} client{'s' * (clients > 1)}, "
                                f"bf16: batches of at most {sv['cpu_batch_tokens']} padded sub-words vs one per request",
                                f"{b['sentences_per_s']:.0f} vs {n['sentences_per_s']:.0f} sentences/s "
                                f"(**{b['sentences_per_s'] / n['sentences_per_s']:.2f}x**); p95 latency "
                                f"{b['latency_p95_s'] * 1000:.0f} vs {n['latency_p95_s'] * 1000:.0f} ms",
                                f"{sv['encoder']} encoder, 1 server worker, the servers in turn in one run (`bench_serve.py`)"))
                if f and b:
                    out.append((f"served model (`mlflow models serve`), {size} sentence{'s' * (size > 1)} per request, "
                                f"{clients} client{'s' * (clients > 1)}, bf16 vs fp32 model",
                                f"{b['sentences_per_s']:.0f} vs {f['sentences_per_s']:.0f} sentences/s "
                                f"(**{b['sentences_per_s'] / f['sentences_per_s']:.2f}x**); p95 latency "
                                f"{b['latency_p95_s'] * 1000:.0f} vs {f['latency_p95_s'] * 1000:.0f} ms",
                                f"{sv['encoder']} encoder, 1 server worker, {sv['cpus']} CPUs, HTTP on 127.0.0.1, "
                                f"{sv['seconds_per_setting']:.0f} s per setting (`bench_serve.py`)"))
    out += gpu_rows(folder)
    return out


GPU_PLAN = {  # figure file -> what it will hold; scripts/gpu/step*.sh write them on one H200
    "gpu": "bench_gpu.py: tokens/s of a bert-base-sized tagger, bf16 autocast vs fp32 (TF32 off), MFU = 6 x "
           "non-embedding params x tokens/s / dense bf16 peak, batch 16 and 64 (goals: bf16 >= 2.5x, MFU >= 45%)",
    "gpu_variants": "bench_gpu.py --variants: what SDPA, fused AdamW, torch.compile, pinned + prefetched "
                    "batches and bucketing each buy",
    "gpu_memory": "bench_gpu_memory.py: peak memory of a trial at batch 16 x 512, largest bf16 batch",
    "gpu_train": "scripts/gpu/train_check.py: `nerlab train` on 1 GPU worker (nccl, bf16), Ray loop vs plain loop "
                 "tokens/s (goal >= 0.95)",
    "gpu_study": "scripts/gpu/study_check.py: 4 trials sharing one GPU (0.25 each) vs the same trials in turn",
}


def gpu_rows(folder: Path) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    g = load(folder, "gpu")
    if g:
        for row in g["rows"]:
            mfu = f", MFU {row['mfu']:.1%}" if "mfu" in row else ""
            out.append((f"bert-base tagger on {g['device']}, {row['precision']}, batch {row['batch_size']}",
                        f"{row['tokens_per_s']:.0f} tok/s{mfu}", "`bench_gpu.py`"))
    v = load(folder, "gpu_variants")
    if v:
        base = {(r["batch_size"], r["precision"]): r["tokens_per_s"] for r in v["variants"]["as-written"]["rows"]}
        for name, res in v["variants"].items():
            cells = [f"batch {r['batch_size']}: {r['tokens_per_s'] / base[(r['batch_size'], r['precision'])]:.2f}x"
                     + (f" (MFU {r['mfu']:.1%})" if "mfu" in r else "")
                     for r in res["rows"] if (r["batch_size"], r["precision"]) in base]
            if name != "as-written" and cells:
                out.append((f"speed-up `{name}` ({res['rows'][0]['precision']})", ", ".join(cells),
                            f"tokens/s over as-written, same process (`bench_gpu.py --variants`, {v['device']})"))
    m = load(folder, "gpu_memory")
    if m:
        seed = m["seed_settings"]
        cells = [f"{p} out of memory" if r is None else f"{p} {r['peak_allocated_gib']:.1f} GiB"
                 if "peak_allocated_gib" in r else f"{p} n/a (no GPU)" for p, r in seed.items()]
        best = m["bf16_largest_batch"]["largest_fitting"]
        out.append((f"GPU memory of a trial, batch {m['seed_batch']} x {m['length']}", ", ".join(cells),
                    f"peak allocated over 3 training steps (`bench_gpu_memory.py`, {m['device']})"))
        out.append((f"largest bf16 batch x {m['length']}", str(best["batch"]) if best else "none",
                    f"doubling then bisection to {m['bf16_largest_batch'].get('resolution', 16)} (`bench_gpu_memory.py`)"))
    t = load(folder, "gpu_train")
    if t and "ray_vs_plain" in t:
        ok = "MLflow run complete, saved model scores the logged F1" if not t["problems"] else f"problems: {t['problems']}"
        out.append((f"Ray Train loop vs plain loop on {t['device']} (bf16, 1 worker, nccl)",
                    f"**{t['ray_vs_plain']:.3f}x** (target >= 0.95)", f"{ok} (`scripts/gpu/train_check.py`)"))
    s = load(folder, "gpu_study")
    if s and "serial_over_shared_wall" in s:
        gpu = s["shared"]["gpu"]
        out.append(("4 trials sharing one GPU (0.25 each) vs in turn",
                    f"**{s['serial_over_shared_wall']:.2f}x** faster; {s['shared'].get('max_concurrent_trials')} at once",
                    f"study wall times; GPU peak {gpu.get('peak_memory_mib', 0) / 1024:.1f} GiB, mean utilisation "
                    f"{gpu.get('mean_util_while_busy', 0):.0f}% (`scripts/gpu/study_check.py`)"))
    missing = [text for name, text in GPU_PLAN.items() if not load(folder, name)]
    if missing:
        out.append(("GPU figures not measured yet", "run `scripts/gpu/step{1,2,3}*.sh` on one H200",
                    "; ".join(missing)))
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
