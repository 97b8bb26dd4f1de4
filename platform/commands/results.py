"""``nerlab leaderboard|report|select``: a study's results, read from MLflow, that people can see and act on.

The study is named by its output folder, its name under ./runs, or its name with ``--tracking-uri``
(``platform/tracking/stores.py`` finds it).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from nerlab.models import names as N
from nerlab.platform.specs.paths import writable_folder
from nerlab.platform.tracking.stores import artifacts_reachable, resolve_study
from nerlab.platform.errors import UsageError


def _clean(obj):
    """JSON-safe: NaN becomes null."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj



def cmd_leaderboard(args) -> int:
    from nerlab.dashboards.leaderboard import format_board, leaderboard_frame

    ref = resolve_study(args.study, args.tracking_uri)
    board = leaderboard_frame(ref.client, ref.experiment_id, ref.parent_run_id, metric=args.metric)
    if args.json:
        rows = _clean(board.to_dict(orient="records")) if len(board) else []  # floats exact, NaN as null
        print(json.dumps({"study": ref.name, "metric": args.metric, "rows": rows}, indent=2, ensure_ascii=False,
                         default=str))
    elif args.csv:
        board.to_csv(sys.stdout, index=False)
    else:
        print(f"study {ref.name}: {len(board)} configurations")
        print(format_board(board))
    return 0


def cmd_report(args) -> int:
    from nerlab.dashboards.report import build_report

    ref = resolve_study(args.study, args.tracking_uri)
    artifacts_reachable(ref, "report")
    out = Path(args.out) if args.out else (ref.folder / N.REPORT_DIR if ref.folder else Path(f"report-{ref.name}"))
    writable_folder(out, "--out" if args.out else "the report's folder")
    result = build_report(ref.client, ref.experiment_id, ref.parent_run_id, out.resolve(), top_k=args.top,
                          log=not args.no_log)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print(f"wrote {result['html']} ({len(result['files'])} files)")
        if result["logged_to"]:
            print(f"attached to the study's run: {result['logged_to']}")
    return 0


def cmd_select(args) -> int:
    from nerlab.dashboards.champion import NoChoice, choose, register

    for flag in ("gold", "gold_test"):
        value = getattr(args, flag)
        if value and not Path(value).is_file():
            raise FileNotFoundError(f"{value}: no such file (--{flag.replace('_', '-')})")
    ref = resolve_study(args.study, args.tracking_uri)
    artifacts_reachable(ref, "select")
    if args.ensemble:
        return _select_ensemble(args, ref)
    try:
        choice = choose(ref.client, ref.experiment_id, ref.parent_run_id, ref.name, metric=args.metric,
                        gold=args.gold, samples=args.samples, seed=args.seed)
    except NoChoice as e:
        raise UsageError(str(e)) from None
    result = {"choice": choice.to_dict(), "registered": None}
    if not args.dry_run:
        result["registered"] = _registered(args, *register(ref.client, args.name, choice, alias=args.alias))
    if args.json:
        print(json.dumps(_clean(result), indent=2, ensure_ascii=False))
        return 0
    c = choice
    spread = "" if math.isnan(c.std) else f" ± {c.std:.4f}"
    print(f"champion of {ref.name}: {c.config}")
    print(f"  {c.metric}: {c.mean:.4f}{spread} over {c.seeds} seed(s); chosen trial {c.trial} (run {c.run_id})")
    if c.runner_up is not None:
        print(f"  runner-up: {c.runner_up} ({c.runner_up_mean:.4f})")
    if c.p_better is not None:
        print(f"  paired bootstrap over {c.sentences} validation sentences: P(champion better) = {c.p_better:.3f}, "
              f"difference {c.delta:+.4f} (95% interval {c.ci95[0]:+.4f} .. {c.ci95[1]:+.4f})")
    for note in c.notes:
        print(f"  note: {note}")
    _print_registered(result["registered"])
    return 0


def _registered(args, version, created: bool) -> dict:
    return {"name": args.name, "version": int(version.version), "alias": args.alias,
            "uri": f"models:/{args.name}@{args.alias}", "created": created, "source": version.source,
            "run_id": version.run_id}


def _print_registered(r: dict | None) -> None:
    if r:
        verb = "registered" if r["created"] else "already registered as"
        print(f"{verb} {r['name']} version {r['version']}; alias {r['alias']!r} -> {r['uri']}")


def _select_ensemble(args, ref) -> int:
    from nerlab.platform.studies import top_k_ensemble as E

    result, _ = E.build(ref, args.ensemble, metric=args.metric, gold={"val": args.gold, "test": args.gold_test},
                        samples=args.samples, seed=args.seed, log=not args.dry_run)
    out = {"ensemble": _clean(result.to_dict()), "registered": None}
    if not args.dry_run:
        out["registered"] = _registered(args, *E.register(ref, result, args.name, args.alias))
    if args.json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    print(f"ensemble of {ref.name}: top {result.k} configurations ({result.rule})")
    for i, m in enumerate(result.members, 1):
        test = "-" if m["test_f1"] is None else f"{m['test_f1']:.4f}"
        print(f"  {i}. {m['config']}: val F1 {m['val_f1']:.4f}, test F1 {test} (trial {m['trial']}, run {m['run_id']})")
    for split, f1 in result.f1.items():
        b = result.bootstrap[split]
        print(f"  {split}: ensemble F1 {f1:.4f}, best single {result.single_f1[split]:.4f}; paired bootstrap over "
              f"{b['sentences']} sentences: P(ensemble better) = {b['p_better']:.3f}, difference {b['delta']:+.4f} "
              f"(95% interval {b['ci95'][0]:+.4f} .. {b['ci95'][1]:+.4f})")
    for note in result.notes:
        print(f"  note: {note}")
    if result.run_id:
        print(f"  logged as run {result.run_id} (kind ensemble) in the study's experiment")
    _print_registered(out["registered"])
    return 0


def _study_args(p, what: str) -> None:
    p.add_argument("study", help=f"study output folder, or its name (under ./runs, or on --tracking-uri) {what}")
    p.add_argument("--tracking-uri", help="the MLflow store or server holding the study (default: the study's own)")


def register(sub) -> None:
    from nerlab.platform.commands import output_folder, positive_int

    lb = sub.add_parser("leaderboard", help="one row per configuration: val F1 mean ± std over seeds, test F1, cost")
    _study_args(lb, "")
    lb.add_argument("--metric", default=N.VAL_F1, help="rank by this metric's mean over seeds")
    fmt = lb.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    lb.set_defaults(fn=cmd_leaderboard)

    rp = sub.add_parser("report", help="HTML + PNG report (heatmaps, λ effect, per-type F1, curves), logged to MLflow")
    _study_args(rp, "")
    rp.add_argument("--out", type=output_folder, help="folder for the report (default: STUDY/report)")
    rp.add_argument("--top", type=positive_int, default=5, help="configurations in the per-type and curve figures")
    rp.add_argument("--no-log", action="store_true", help="write files only; do not attach them to the study run")
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(fn=cmd_report)

    se = sub.add_parser("select", help="pick the champion (mean over seeds, paired bootstrap), or build an ensemble "
                                       "of the top K, and register it")
    _study_args(se, "")
    se.add_argument("--name", required=True, help="registered model name in the MLflow Model Registry")
    se.add_argument("--metric", default=N.VAL_F1, help="choose by this metric's mean over seeds")
    se.add_argument("--alias", default="champion")
    se.add_argument("--ensemble", type=positive_int, metavar="K",
                    help="register one model from the top K configurations' chosen trials (mean of per-word head "
                         "probabilities), scored on val and test beside the best single model")
    se.add_argument("--gold", help="gold validation file (default: the file the trials were validated on)")
    se.add_argument("--gold-test", help="gold test file for --ensemble (default: the file the trials were tested "
                    "on, else the study's logged copy)")
    se.add_argument("--samples", type=positive_int, default=2000, help="bootstrap samples")
    se.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    se.add_argument("--dry-run", action="store_true", help="choose and report, register nothing")
    se.add_argument("--json", action="store_true")
    se.set_defaults(fn=cmd_select)
