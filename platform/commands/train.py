"""``nerlab train RUN.yaml``: one distributed training job; ``nerlab train --from-run RUN_ID``: a logged run
(a study's trial, or a job) trained again."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path


def cmd_train(args) -> int:
    from nerlab.models import names as N
    from nerlab.platform.errors import UsageError
    from nerlab.platform.training.job import train
    from nerlab.platform.studies.live_view import Console
    from nerlab.platform.specs.run import load_run_spec

    if (args.spec is None) == (args.from_run is None):
        raise UsageError("give a run spec (RUN.yaml) or --from-run RUN_ID, one of the two "
                         "(see 'nerlab train --help')")
    output = str(Path(args.output).resolve()) if args.output else None
    tags, source = None, args.spec
    if args.from_run is not None:
        from nerlab.platform.training.rerun import rerun_spec

        if args.smoke:
            raise UsageError("--smoke: not with --from-run (it trains the run as it was logged)")
        spec, run_id = rerun_spec(args.from_run, args.study, args.tracking_uri, output)
        tags, source = {N.RERUN_OF_TAG: run_id}, f"--from-run {args.from_run}"
    else:
        if args.study or args.tracking_uri:
            raise UsageError(f"{'--study' if args.study else '--tracking-uri'}: only with --from-run")
        spec = load_run_spec(args.spec, {"output": output} if output else {}, smoke=args.smoke)
    if args.epochs is not None:
        spec = replace(spec, train=replace(spec.train, epochs=args.epochs))
    result = train(spec, workers=args.workers, source=source, replace_old=args.replace,
                   console=Console(verbose=args.verbose, to_stderr=args.json), tags=tags)
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        if result.finished_before:
            print(f"{spec.output} holds this job, finished: nothing to train")
        print(f"run {result.run_id}: val micro-F1 {result.val_f1:.4f}, test micro-F1 {result.test_f1:.4f} "
              f"(best epoch {result.best_epoch} of {result.epochs}); model in {result.model_dir}")
    return 0


def register(sub) -> None:
    from nerlab.platform.commands import output_folder, positive_int

    p = sub.add_parser("train", help="train one model as a Ray Train job, tracked in MLflow")
    p.add_argument("spec", nargs="?", help="run spec (YAML)")
    p.add_argument("--from-run", metavar="RUN_ID",
                   help="train a logged run again (a study's trial or a job; RUN_ID or runs:/RUN_ID) from its "
                        "logged spec and data files (their digests checked); its store: --study or --tracking-uri")
    p.add_argument("--study", help="with --from-run: the study (or job folder) whose MLflow store holds the run")
    p.add_argument("--tracking-uri", help="with --from-run: the MLflow store or server holding the run")
    p.add_argument("--workers", type=positive_int, help="DDP workers (overrides resources.workers)")
    p.add_argument("--output", type=output_folder,
                   help="output folder (default: runs/<name>; with --from-run runs/<name>-rerun-<run id>)")
    p.add_argument("--epochs", type=positive_int, help="override train.epochs")
    p.add_argument("--smoke", action="store_true", help="shrink to seconds: synthetic data, 1 epoch, tiny PLM")
    p.add_argument("--replace", action="store_true",
                   help="if the output folder holds a job with another spec, archive it (to "
                        "OUTPUT.archived-TIME, nothing is deleted) and train anew")
    p.add_argument("--verbose", action="store_true",
                   help="Ray's and the workers' output on the terminal (else in OUTPUT/logs/train.log)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_train)
