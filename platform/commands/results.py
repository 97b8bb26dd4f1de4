"""``nerlab leaderboard|report|select|predict|ui``: results people can see and act on.

A study is named by its output folder (or its name under ./runs): its ``study.yaml`` says where its
MLflow store is. A study on a tracking server is named by its name with ``--tracking-uri`` (or
``MLFLOW_TRACKING_URI``). Everything shown is read from MLflow.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

STUDY_FILE = "study.yaml"
PARENT_TAG = "nerlab.study_run"


@dataclass
class StudyRef:
    name: str
    uri: str
    client: object
    experiment_id: str
    parent_run_id: str
    folder: Path | None  # the study's output folder, when it is on this machine


def _quiet() -> None:
    """No MLflow download progress bars in command output."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _usage(msg: str):
    from nerlab.platform.cli import UsageError

    return UsageError(msg)


def _store_uri(text: str) -> str:
    """A tracking URI from a URI, a SQLite file, or a folder holding ``mlflow.db``; checked to exist."""
    from nerlab.platform import tracking as T

    path = Path(text)
    if "://" not in text and path.is_dir():
        path = path / "mlflow.db"
        if not path.is_file():
            raise _usage(f"{text}: no MLflow store found (looked for {path.resolve()})")
    uri, _ = T.resolve_tracking(str(path) if "://" not in text else text, ".")
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise _usage(f"{text}: no MLflow store found (no SQLite file {uri[len('sqlite:///'):]})")
    return uri


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _saved_study(study: str) -> tuple[Path, dict] | None:
    import yaml

    path = Path(study)
    folder = path if path.is_dir() else Path("runs") / study
    saved = folder / STUDY_FILE
    if not saved.is_file():
        return None
    return folder.resolve(), yaml.safe_load(saved.read_text(encoding="utf-8")) or {}


def study_store(study: str, tracking_uri: str | None = None) -> tuple[str, str, str | None, Path | None]:
    """(store URI, study name, experiment name or None, local folder or None) of a study argument."""
    from nerlab.platform import tracking as T

    saved = _saved_study(study)
    if saved is not None:
        folder, spec = saved
        tracking = spec.get("tracking") or {}
        if tracking_uri:
            uri = _store_uri(tracking_uri)
        else:
            uri, _ = T.resolve_tracking(tracking.get("tracking_uri"), folder)
            if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
                raise _usage(f"{study}: the study's MLflow store {uri[len('sqlite:///'):]} does not exist")
        name = spec.get("name") or folder.name
        return uri, name, tracking.get("experiment") or name, folder
    for path in (Path(study), Path("runs") / study):  # a store folder without a study.yaml (nerlab train)
        if path.is_dir() and (path / "mlflow.db").is_file():
            return _store_uri(str(path)), "", None, path.resolve()
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        places = dict.fromkeys(str((p / name).resolve()) for p in (Path(study), Path("runs") / study)
                               for name in (STUDY_FILE, "mlflow.db"))
        raise _usage(f"{study}: no study and no MLflow store found (looked for {', '.join(places)}); "
                     "give a study's output folder, or --tracking-uri")
    return _store_uri(uri), study, None, None


def resolve_study(study: str, tracking_uri: str | None = None) -> StudyRef:
    """The study's parent run in its MLflow store; a one-line UsageError when it cannot be found."""
    from nerlab.platform.tracking import redact

    _quiet()
    uri, name, experiment, folder = study_store(study, tracking_uri)
    client = _client(uri)
    exp_ids = []
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        exp_ids = [exp.experiment_id] if exp is not None else []
    if not exp_ids:
        exp_ids = [e.experiment_id for e in client.search_experiments(max_results=1000)]
    query = f"tags.`{PARENT_TAG}` = '{name}'" if name else f"tags.`{PARENT_TAG}` != ''"
    parents = client.search_runs(exp_ids, query, max_results=2) if exp_ids else []
    if not parents:
        raise _usage(f"{study}: no study run {('named ' + repr(name)) if name else ''} in the MLflow store "
                     f"{redact(uri)}".replace("  ", " "))
    if not name and len(parents) > 1:
        raise _usage(f"{study}: the store holds several studies; name one with --tracking-uri {study} NAME")
    p = parents[0]
    return StudyRef(name or p.data.tags[PARENT_TAG], uri, client, p.info.experiment_id, p.info.run_id, folder)


def _clean(obj):
    """JSON-safe: NaN becomes null."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


# ---- leaderboard -----------------------------------------------------------------------------------------
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


# ---- report ----------------------------------------------------------------------------------------------
def cmd_report(args) -> int:
    from nerlab.dashboards.report import build_report

    ref = resolve_study(args.study, args.tracking_uri)
    out = Path(args.out) if args.out else (ref.folder / "report" if ref.folder else Path(f"report-{ref.name}"))
    result = build_report(ref.client, ref.experiment_id, ref.parent_run_id, out.resolve(), top_k=args.top,
                          log=not args.no_log)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print(f"wrote {result['html']} ({len(result['files'])} files)")
        if result["logged_to"]:
            print(f"attached to the study's run: {result['logged_to']}")
    return 0


# ---- select ----------------------------------------------------------------------------------------------
def cmd_select(args) -> int:
    from nerlab.dashboards.select import NoChoice, choose, register

    ref = resolve_study(args.study, args.tracking_uri)
    if args.gold and not Path(args.gold).is_file():
        raise FileNotFoundError(f"{args.gold}: no such file (--gold)")
    try:
        choice = choose(ref.client, ref.experiment_id, ref.parent_run_id, ref.name, metric=args.metric,
                        gold=args.gold, samples=args.samples, seed=args.seed)
    except NoChoice as e:
        raise _usage(str(e)) from None
    result = {"choice": choice.to_dict(), "registered": None}
    if not args.dry_run:
        version, created = register(ref.client, args.name, choice, alias=args.alias)
        result["registered"] = {"name": args.name, "version": int(version.version), "alias": args.alias,
                                "uri": f"models:/{args.name}@{args.alias}", "created": created,
                                "source": version.source, "run_id": version.run_id}
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
    if result["registered"]:
        r = result["registered"]
        verb = "registered" if r["created"] else "already registered as"
        print(f"{verb} {r['name']} version {r['version']}; alias {r['alias']!r} -> {r['uri']}")
    return 0


# ---- predict ---------------------------------------------------------------------------------------------
def _registry_uri(args) -> str:
    if args.tracking_uri:
        return _store_uri(args.tracking_uri)
    if args.study:
        return study_store(args.study)[0]
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return _store_uri(os.environ["MLFLOW_TRACKING_URI"])
    raise _usage(f"{args.model}: a registry model needs its store: give --study STUDY or --tracking-uri URI "
                 "(or set MLFLOW_TRACKING_URI)")


def _model_version(client, model: str):
    """The registry version a ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` URI names."""
    rest = model[len("models:/"):].strip("/")
    if "@" in rest.split("/")[0]:
        name, alias = rest.split("/")[0].split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    parts = rest.split("/")
    if len(parts) < 2 or not parts[1].isdigit():
        raise _usage(f"{model}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return client.get_model_version(parts[0], parts[1])


def fetch_model(model: str, uri: str | None, dst: Path) -> Path:
    """A local model folder for a folder, ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``runs:/ID/PATH``.

    The registry is asked through a client on ``uri`` (MLflow's own ``models:/`` download ignores the
    registry URI it is given and uses the process-wide one).
    """
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from nerlab.models.tagger import META_FILE
    from nerlab.platform.tracking import redact

    if not model.startswith(("models:/", "runs:/")):
        folder = Path(model)
        if not folder.is_dir():
            raise FileNotFoundError(f"{model}: no such model folder (or give models:/NAME@champion)")
        return folder
    try:
        source = model
        if model.startswith("models:/"):
            client = _client(uri)
            version = _model_version(client, model)
            source = client.get_model_version_download_uri(version.name, version.version)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst), tracking_uri=uri))
    except MlflowException as e:
        first = str(e.message if hasattr(e, "message") else e).splitlines()[0]
        raise _usage(f"{model}: not found in the registry at {redact(uri)} ({first})") from None
    if not (local / META_FILE).is_file() and (local / "model" / META_FILE).is_file():
        local = local / "model"
    return local


def read_input(path: str, fmt: str, task: str):
    """Sentences to tag: a Wojood token-per-line file (with or without tags) or raw text, one sentence a line."""
    from nerlab.models.wojood import DataError, read_file, read_raw_text

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file (--input)")
    if fmt == "raw":
        return read_raw_text(path), "raw"
    if fmt == "wojood":
        return read_file(path, task=task, require_tags=False), "wojood"
    try:  # auto: a token per line (tags optional, blank lines between sentences), else raw text
        sentences = read_file(path, task=task, require_tags=False)
    except DataError:
        return read_raw_text(path), "raw"
    text = Path(path).read_text(encoding="utf-8-sig")
    tagged = any(s.tags and any(s.tags) for s in sentences)
    if tagged or any(not line.strip() for line in text.strip().splitlines()):
        return sentences, "wojood"
    return read_raw_text(path), "raw"  # one word per line, no blank lines: raw text of one-word sentences


def cmd_predict(args) -> int:
    import torch

    from nerlab.models.predict import predict
    from nerlab.models.tagger import MultiTaskTagger
    from nerlab.models.wojood import write_file

    if not Path(args.input).is_file():
        raise FileNotFoundError(f"{args.input}: no such file (--input)")
    _quiet()
    uri = _registry_uri(args) if args.model.startswith(("models:/", "runs:/")) else None
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as d:
        folder = fetch_model(args.model, uri, Path(d))
        model, tokenizer = MultiTaskTagger.load(folder, device=device)
    task = args.task or model.schema.task
    sentences, fmt = read_input(args.input, args.format, task)
    pred = predict(model, tokenizer, sentences, task=task, batch_size=args.batch_size, device=device)
    if [s.tokens for s in pred] != [s.tokens for s in sentences]:  # never happens: windows keep every token
        raise RuntimeError("prediction lost or changed tokens")
    write_file(args.out, pred)
    summary = {"model": args.model, "input": args.input, "format": fmt, "task": task, "out": args.out,
               "sentences": len(pred), "tokens": sum(len(s) for s in pred),
               "entities_tagged": sum(t.startswith("B-") for s in pred for tags in s.tags for t in tags)}
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        print(f"wrote {args.out}: {summary['sentences']} sentences, {summary['tokens']} tokens, "
              f"{summary['entities_tagged']} entities ({task}, input read as {fmt})")
    return 0


# ---- ui --------------------------------------------------------------------------------------------------
def cmd_ui(args) -> int:
    """The MLflow UI over a study's (or any) store, on 127.0.0.1 unless --host says otherwise."""
    from nerlab.platform import mlflow_server
    from nerlab.platform.tracking import redact

    if args.store:
        uri, folder, exp_path = _store_uri(args.store), None, ""
    else:
        uri, name, experiment, folder = study_store(args.target)
        exp_path = ""
        if uri.startswith(("http://", "https://")):
            print(f"the study {name} is on the tracking server {redact(uri)}: open it in a browser")
            return 0
        if experiment:
            exp = _client(uri).get_experiment_by_name(experiment)
            exp_path = f"/#/experiments/{exp.experiment_id}" if exp is not None else ""
    if uri.startswith(("http://", "https://")):
        print(f"{redact(uri)} is already a tracking server: open it in a browser")
        return 0
    proc, url = mlflow_server.start(uri, None, host=args.host, port=args.port)
    print(f"MLflow UI on {url}{exp_path}  (Ctrl-C to stop)", flush=True)
    try:
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        mlflow_server.stop(proc)
    return 0


# ---- parsers ---------------------------------------------------------------------------------------------
def _study_args(p, what: str) -> None:
    p.add_argument("study", help=f"study output folder, or its name (under ./runs, or on --tracking-uri) {what}")
    p.add_argument("--tracking-uri", help="the MLflow store or server holding the study (default: the study's own)")


def register(sub) -> None:
    from nerlab.platform.cli import positive_int

    lb = sub.add_parser("leaderboard", help="one row per configuration: val F1 mean ± std over seeds, test F1, cost")
    _study_args(lb, "")
    lb.add_argument("--metric", default="val/micro_f1", help="rank by this metric's mean over seeds")
    fmt = lb.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    lb.set_defaults(fn=cmd_leaderboard)

    rp = sub.add_parser("report", help="HTML + PNG report (heatmaps, λ effect, per-type F1, curves), logged to MLflow")
    _study_args(rp, "")
    rp.add_argument("--out", help="folder for the report (default: STUDY/report)")
    rp.add_argument("--top", type=positive_int, default=5, help="configurations in the per-type and curve figures")
    rp.add_argument("--no-log", action="store_true", help="write files only; do not attach them to the study run")
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(fn=cmd_report)

    se = sub.add_parser("select", help="pick the champion (mean over seeds, paired bootstrap) and register it")
    _study_args(se, "")
    se.add_argument("--name", required=True, help="registered model name in the MLflow Model Registry")
    se.add_argument("--metric", default="val/micro_f1", help="choose by this metric's mean over seeds")
    se.add_argument("--alias", default="champion")
    se.add_argument("--gold", help="gold validation file (default: the file the trials were validated on)")
    se.add_argument("--samples", type=positive_int, default=2000, help="bootstrap samples")
    se.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    se.add_argument("--dry-run", action="store_true", help="choose and report, register nothing")
    se.add_argument("--json", action="store_true")
    se.set_defaults(fn=cmd_select)

    pr = sub.add_parser("predict", help="tag a file with a trained model; writes Wojood format for submission")
    pr.add_argument("--model", required=True, help="models:/NAME@champion, models:/NAME/VERSION, runs:/ID/model "
                                                   "or a model folder")
    pr.add_argument("--input", required=True, help="Wojood token-per-line file (tags optional) or raw text")
    pr.add_argument("--out", required=True)
    pr.add_argument("--task", choices=["flat", "nested"], help="default: the model's task")
    pr.add_argument("--format", choices=["auto", "wojood", "raw"], default="auto",
                    help="input format; raw: one sentence per line, whitespace tokenised")
    pr.add_argument("--study", help="the study whose registry holds --model (models:/ and runs:/ URIs)")
    pr.add_argument("--tracking-uri", help="the MLflow store or server holding --model")
    pr.add_argument("--batch-size", type=positive_int, default=32)
    pr.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(fn=cmd_predict)


def register_ui(sub) -> None:
    from nerlab.platform.cli import port_number

    u = sub.add_parser("ui", help="browse a study's runs in the MLflow UI (127.0.0.1)")
    u.add_argument("target", nargs="?", default="demo", help="study name (under ./runs) or output folder")
    u.add_argument("--store", help="an MLflow store instead: a SQLite file, a folder with mlflow.db, or a URI")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=port_number, default=5000)
    u.set_defaults(fn=cmd_ui)
