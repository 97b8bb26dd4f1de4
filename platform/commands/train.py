"""``nerlab train RUN.yaml``: one distributed training job."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path


def cmd_train(args) -> int:
    from nerlab.platform.training.job import train
    from nerlab.platform.studies.live_view import Console
    from nerlab.platform.specs.run import load_run_spec

    overrides = {}
    if args.output:
        overrides["output"] = str(Path(args.output).resolve())
    spec = load_run_spec(args.spec, overrides, smoke=args.smoke)
    if args.epochs is not None:
        spec = replace(spec, train=replace(spec.train, epochs=args.epochs))
    result = train(spec, workers=args.workers, source=args.spec, replace_old=args.replace,
                   console=Console(verbose=args.verbose, to_stderr=args.json))
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
    p.add_argument("spec", help="run spec (YAML)")
    p.add_argument("--workers", type=positive_int, help="DDP workers (overrides resources.workers)")
    p.add_argument("--output", type=output_folder, help="output folder (default: runs/<name>)")
    p.add_argument("--epochs", type=positive_int, help="override train.epochs")
    p.add_argument("--smoke", action="store_true", help="shrink to seconds: synthetic data, 1 epoch, tiny PLM")
    p.add_argument("--replace", action="store_true",
                   help="if the output folder holds a job with another spec, archive it (to "
                        "OUTPUT.archived-TIME, nothing is deleted) and train anew")
    p.add_argument("--verbose", action="store_true",
                   help="Ray's and the workers' output on the terminal (else in OUTPUT/logs/train.log)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_train)
