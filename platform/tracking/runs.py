"""MLflow: where runs go, finding-or-creating runs idempotently, and safe logging.

Embedded default: an absolute ``sqlite:///`` store and an artifact folder under the output directory
(Ray moves working directories, so nothing may be relative). A run is identified by a tag
(``names.JOB_TAG``, the job's key; a study's trials also carry ``names.TRIAL_TAG``) so a restarted job or trial
finds and continues its run instead of opening a second one.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from nerlab.models import names as N
from nerlab.platform.errors import redact
from nerlab.platform.specs.loader import to_dict

def default_store(output: str | Path) -> tuple[str, str]:
    """(tracking URI, artifact location) of the embedded SQLite store under ``output``."""
    out = Path(output).resolve()  # created by the job or study that writes there, after validation
    return f"sqlite:///{out / 'mlflow.db'}", (out / "mlartifacts").as_uri()


def sqlite_file(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` store; None for any other store (a tracking server, a database)."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def create_store(uri: str) -> None:
    """Create and migrate a SQLite store once, by the command that owns it (under its folder lock), before a
    server or a client opens it.

    MLflow migrates a new store in whichever process opens it first; two at once (a study's server booting,
    ``nerlab leaderboard`` in another shell) run the migration twice and one dies (``table _alembic_tmp_...
    already exists``). So the store is built under a temporary name and renamed into place: every other
    opener finds no file, or a complete one. Other stores belong to their server, which migrates them."""
    db = sqlite_file(uri)
    if db is None or db.is_file():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db.parent.mkdir(parents=True, exist_ok=True)
    tmp = db.with_name(f".{db.name}.{os.getpid()}.creating")
    tmp.unlink(missing_ok=True)  # left by a creator that died (this pid's, long ago)
    log = logging.getLogger("mlflow.store.db.utils")  # "Creating initial MLflow database tables...": not news
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        store = SqlAlchemyStore(f"sqlite:///{tmp}", (db.parent / "mlartifacts").as_uri())
        store.engine.dispose()
        os.replace(tmp, db)
    finally:
        log.setLevel(level)
        tmp.unlink(missing_ok=True)


def store_problem(uri: str) -> str | None:
    """Why a tracking store cannot be used, found before anything starts (None: no problem seen).

    A tracking server (``http(s)://``) must answer ``/health`` now: MLflow's client would otherwise retry
    for minutes before the first trial fails. A database URI (``postgresql://``, ``mysql://``, ...) needs its
    driver in this environment; plain ``postgresql://`` means psycopg 3 to SQLAlchemy 2.1 (``nerlab[lab]``
    installs it). SQLite stores are checked by their callers (the file must exist, or its folder be writable)."""
    import http.client
    import urllib.error
    import urllib.request

    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10) as r:
                if r.status == 200:
                    return None
                return f"the tracking server answered /health with HTTP {r.status}"
        except urllib.error.HTTPError as e:
            return f"the tracking server answered /health with HTTP {e.code}"
        except (OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", None) or e
            return f"the tracking server is unreachable ({reason})"
    if scheme and scheme not in ("sqlite", "file", "databricks", "databricks-uc", "uc"):
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        try:
            url = make_url(uri)
            url.get_dialect().import_dbapi()
        except (ArgumentError, NoSuchModuleError) as e:
            return f"not a tracking store URI SQLAlchemy knows ({e})"
        except ImportError as e:
            return (f"no database driver for {url.drivername} in this environment ({e}); "
                    "pip install 'nerlab[lab]' (psycopg 3 for postgresql://)")
    return None


def resolve_tracking(spec_uri: str | None, output: str | Path) -> tuple[str, str | None]:
    """Spec's URI, else MLFLOW_TRACKING_URI, else the embedded store. Returns (uri, artifact location)."""
    uri = spec_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return default_store(output)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    elif "://" not in uri:  # a bare path means a SQLite file there
        uri = f"sqlite:///{Path(uri).resolve()}"
    return uri, None


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # another process created it in between
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def find_run(client: MlflowClient, experiment_id: str, tag: str, value: str):
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{value}'", max_results=2)
    return runs[0] if runs else None


def find_or_create_run(client: MlflowClient, experiment_id: str, tag: str, value: str, run_name: str,
                       tags: dict[str, str] | None = None, parent_run_id: str | None = None,
                       reuse_finished: bool = True):
    """The run tagged ``tag=value``, created on first use; (run, created).

    ``reuse_finished=False`` retags a finished run (``tag=value#<run id>``) and opens a new one: the job
    is being run again on purpose.
    """
    run = find_run(client, experiment_id, tag, value)
    if run is not None and not reuse_finished and run.info.status == "FINISHED":
        client.set_tag(run.info.run_id, tag, f"{value}#{run.info.run_id}")
        run = None
    if run is not None:
        if run.info.status != "RUNNING":
            client.update_run(run.info.run_id, status="RUNNING")
        return run, False
    all_tags = {tag: value, **(tags or {})}
    if parent_run_id:
        all_tags[N.PARENT_RUN_TAG] = parent_run_id
    return client.create_run(experiment_id, run_name=run_name, tags=all_tags), True


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)[:6000]
    return out


def log_params(client: MlflowClient, run_id: str, params: dict, logged: dict[str, str] | None = None) -> None:
    """Log params once; a resumed run skips those already there (MLflow refuses to change a param)."""
    logged = logged if logged is not None else client.get_run(run_id).data.params
    new = [Param(k, v) for k, v in flatten(params).items() if k not in logged]
    for i in range(0, len(new), 100):
        client.log_batch(run_id, params=new[i:i + 100])


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int) -> None:
    ts = int(time.time() * 1000)
    batch = [Metric(k, float(v), ts, step) for k, v in metrics.items()]
    for i in range(0, len(batch), 200):
        client.log_batch(run_id, metrics=batch[i:i + 200])


def logged_steps(client: MlflowClient, run_id: str, key: str = N.VAL_F1) -> set[int]:
    return {m.step for m in client.get_metric_history(run_id, key)}


DATASET_CONTEXT = {"train": "training", "val": "validation", "test": "test"}


def file_digest(path: str | Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]  # MLflow keeps at most 36 characters


def log_datasets(client: MlflowClient, run_id: str, files: dict[str, str | None]) -> None:
    """The data files a run reads as MLflow datasets (name, digest, path; the split as the context tag), once:
    a run that already has inputs (a resumed job) is left as it is."""
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    run = client.get_run(run_id)
    if run.inputs and run.inputs.dataset_inputs:
        return
    from nerlab.platform.tracking.storage import is_uri, local

    inputs = []
    for split, path in files.items():
        copy = local(path)  # an s3:// file: its digest from this node's copy
        if not copy or not Path(copy).is_file():
            continue
        uri = path if is_uri(path) else str(Path(path).resolve())
        parts = uri.rstrip("/").split("/")
        ds = Dataset(name=f"{parts[-2]}/{parts[-1]}", digest=file_digest(copy), source_type="s3" if is_uri(path)
                     else "local", source=json.dumps({"uri": uri}))
        inputs.append(DatasetInput(ds, [InputTag(MLFLOW_DATASET_CONTEXT, DATASET_CONTEXT.get(split, split))]))
    if inputs:
        client.log_inputs(run_id, datasets=inputs)


def logged_datasets(run) -> dict[str, tuple[str, str]]:
    """The data files a run logged (``log_datasets``): split (train, val, test) -> (path, digest)."""
    import json

    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    splits = {context: split for split, context in DATASET_CONTEXT.items()}
    files = {}
    for given in (run.inputs.dataset_inputs if run.inputs else []):
        context = next((t.value for t in given.tags if t.key == MLFLOW_DATASET_CONTEXT), None)
        files[splits.get(context, context)] = (json.loads(given.dataset.source)["uri"], given.dataset.digest)
    return files


def set_tags(client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def spec_params(spec) -> dict:
    """The resolved spec as params, with any credentials in URIs removed."""
    d = to_dict(spec)
    if d.get("tracking", {}).get("tracking_uri"):
        d["tracking"]["tracking_uri"] = redact(d["tracking"]["tracking_uri"])
    if d.get("ray_address"):
        d["ray_address"] = redact(d["ray_address"])
    return d
