"""``nerlab study run|resume|status``: searches over PLM x loss x variance penalty."""

from __future__ import annotations

import json
from pathlib import Path

from nerlab.models import names as N


def cmd_run(args) -> int:
    from nerlab.platform.studies.driver import run_study
    from nerlab.platform.specs.study import load_study_spec

    spec = load_study_spec(args.spec, smoke_mode=args.smoke, output=args.output)
    summary = _with_report(run_study(spec, source=args.spec, replace_old=args.replace, console=_console(args)))
    _summary(summary, args.json)
    return 0 if not summary["errors"] else 1


def cmd_resume(args) -> int:
    from nerlab.platform.studies.driver import run_study
    from nerlab.platform.studies.state import load_saved_study

    spec = load_saved_study(args.study)
    summary = _with_report(run_study(spec, source=str(Path(spec.output) / N.STUDY_FILE), console=_console(args)))
    _summary(summary, args.json)
    return 0 if not summary["errors"] else 1


def _console(args):
    from nerlab.platform.studies.live_view import Console

    return Console(verbose=args.verbose, to_stderr=args.json)


def cmd_status(args) -> int:
    from nerlab.platform.studies.state import load_saved_study, study_status

    st = study_status(load_saved_study(args.study))
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    interrupted = f", {st['interrupted']} interrupted (resumed by study run or resume)" if st["interrupted"] else ""
    print(f"{st['study']}: {st['done']} done, {st['running']} running, {st['pending']} pending, "
          f"{st['failed']} failed{interrupted} (of {st['total']})")
    if len(st["rounds"]) > 1:  # a grown study: which trials came with which command
        for r in st["rounds"]:
            print(f"  round {r['round']} ({r['what']}): {r['done']} done of {r['trials']} started")
    if st["best"]:
        b = st["best"]
        print(f"best so far: val micro-F1 {b['val_f1']:.4f} (trial {b['trial']}: {b['plm']}, {b['loss']}, "
              f"λ={b['penalty']})")
    return 0


def _with_report(summary: dict) -> dict:
    """Build the study's report (HTML + figures, attached to its run) once the study has returned; a
    figure that fails does not fail the study. A study that had finished keeps the report it has."""
    if summary.get("finished_before"):
        return summary
    import logging

    from nerlab.dashboards.report import build_report
    from nerlab.platform.tracking.stores import resolve_study

    try:
        ref = resolve_study(summary["output"])
        summary["report"] = build_report(ref.client, ref.experiment_id, ref.parent_run_id,
                                         Path(summary["output"]) / N.REPORT_DIR)["html"]
    except Exception as e:  # noqa: BLE001
        logging.getLogger("nerlab").warning("study %s: the report failed (%s: %s); retry with: nerlab report %s",
                                            summary["study"], type(e).__name__, e, summary["output"])
    return summary


def _summary(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    if summary.get("finished_before"):
        print(f"study {summary['study']} had finished: nothing to run (nerlab study status {summary['output']})")
    print(f"study {summary['study']}: {summary['trials']} trials, {summary['errors']} failed")
    if "best_config" in summary:
        print(f"best: {summary['best_config']} (val micro-F1 {summary['best_val_f1']:.4f})")
    if summary.get("report"):
        print(f"report: {summary['report']}")
    print(f"browse it: nerlab ui {summary['output']}")


VERBOSE_HELP = ("also show Ray's trial tables and the workers' logs here (by default they go to "
                "OUTPUT/logs/study.log and the terminal shows a live view: one line per trial, a status line)")


def register(sub) -> None:
    from nerlab.platform.commands import output_folder

    p = sub.add_parser("study", help="run, resume or inspect a study (Ray Tune + Optuna + ASHA, MLflow)")
    verbs = p.add_subparsers(dest="study_verb", required=True, metavar="ACTION")
    r = verbs.add_parser("run", help="run a study spec (continues the study if it exists with the same spec)")
    r.add_argument("spec")
    r.add_argument("--smoke", action="store_true", help="shrink to seconds: few sentences, 1 epoch, tiny PLM")
    r.add_argument("--output", type=output_folder, help="output folder (default: runs/<name>)")
    r.add_argument("--replace", action="store_true",
                   help="if a study of this name was started with another spec, archive it (its folder "
                        "moves to OUTPUT.archived-TIME, nothing is deleted) and start anew")
    r.add_argument("--json", action="store_true", help="the summary as JSON on stdout (the live view on stderr)")
    r.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    r.set_defaults(fn=cmd_run)
    s = verbs.add_parser("resume", help="finish an interrupted study (finished trials are not rerun)")
    s.add_argument("study", help="study name (under ./runs) or output folder")
    s.add_argument("--json", action="store_true", help="the summary as JSON on stdout (the live view on stderr)")
    s.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    s.set_defaults(fn=cmd_resume)
    t = verbs.add_parser("status", help="trials done, running, pending, failed; best so far")
    t.add_argument("study", help="study name (under ./runs) or output folder")
    t.add_argument("--json", action="store_true")
    t.set_defaults(fn=cmd_status)

