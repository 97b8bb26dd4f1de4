"""Where a study or a model is: one resolver for "a study given as its name, its output folder or a tracking
URI", and the download of a registered model.

A study is named by its output folder (or its name under ./runs): its ``study.yaml`` says where its MLflow
store is. A study on a tracking server is named by its name with ``--tracking-uri`` (or
``MLFLOW_TRACKING_URI``). A training job's folder (``nerlab train``) has a store but no ``study.yaml``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nerlab.models import names as N
from nerlab.platform.errors import UsageError, redact


@dataclass
class StudyRef:
    name: str
    uri: str
    client: object
    experiment_id: str
    parent_run_id: str
    folder: Path | None  # the study's output folder, when it is on this machine


def study_folder(study: str) -> Path:
    """The folder a study argument names: itself if it is a folder, else ``runs/<study>``."""
    path = Path(study)
    return path if path.is_dir() else Path(N.RUNS_DIR) / study


def store_uri(text: str) -> str:
    """A tracking URI from a URI, a SQLite file, or a folder holding ``mlflow.db``; checked to exist."""
    from nerlab.platform.tracking.runs import resolve_tracking, sqlite_file

    path = Path(text)
    if "://" not in text and path.is_dir():
        path = path / N.STORE_FILE
        if not path.is_file():
            raise UsageError(f"{text}: no MLflow store found (looked for {path.resolve()})")
    uri, _ = resolve_tracking(str(path) if "://" not in text else text, ".")
    sqlite = sqlite_file(uri)
    if sqlite is not None and not sqlite.is_file():
        raise UsageError(f"{text}: no MLflow store found (no SQLite file {sqlite})")
    return uri


def client(uri: str):
    """A client of a store that exists: reading never creates (or migrates) a SQLite store; only the command
    that owns it does (``tracking.create_store``). A missing one is no such study, an unreachable server or
    a database without its driver installed is bad input: a UsageError."""
    from mlflow.tracking import MlflowClient

    from nerlab.platform.tracking.runs import sqlite_file, store_problem

    sqlite = sqlite_file(uri)
    if sqlite is not None and not sqlite.is_file():
        raise UsageError(f"{sqlite}: the MLflow store does not exist (no study or job was started there)")
    problem = store_problem(uri) if sqlite is None else None
    if problem:
        raise UsageError(f"{redact(uri)}: {problem}")
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def study_store(study: str, tracking_uri: str | None = None) -> tuple[str, str, str | None, Path | None]:
    """(store URI, study name, experiment name or None, local folder or None) of a study argument."""
    import yaml

    from nerlab.platform.tracking.runs import resolve_tracking, sqlite_file

    folder = study_folder(study)
    if (folder / N.STUDY_FILE).is_file():
        folder = folder.resolve()
        spec = yaml.safe_load((folder / N.STUDY_FILE).read_text(encoding="utf-8")) or {}
        tracking = spec.get("tracking") or {}
        if tracking_uri:
            uri = store_uri(tracking_uri)
        else:
            uri, _ = resolve_tracking(tracking.get("tracking_uri"), folder)
            sqlite = sqlite_file(uri)
            if sqlite is not None and not sqlite.is_file():
                raise UsageError(f"{study}: the study's MLflow store {sqlite} does not exist")
        name = spec.get("name") or folder.name
        return uri, name, tracking.get("experiment") or name, folder
    for path in (Path(study), Path(N.RUNS_DIR) / study):  # a store folder without a study.yaml (nerlab train)
        if path.is_dir() and (path / N.STORE_FILE).is_file():
            return store_uri(str(path)), "", None, path.resolve()
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        places = dict.fromkeys(str((p / name).resolve()) for p in (Path(study), Path(N.RUNS_DIR) / study)
                               for name in (N.STUDY_FILE, N.STORE_FILE))
        raise UsageError(f"{study}: no study and no MLflow store found (looked for {', '.join(places)}); "
                         "give a study's output folder, or --tracking-uri")
    return store_uri(uri), study, None, None


def resolve_study(study: str, tracking_uri: str | None = None) -> StudyRef:
    """The study's parent run in its MLflow store; a one-line UsageError when it cannot be found."""
    uri, name, experiment, folder = study_store(study, tracking_uri)
    c = client(uri)
    exp_ids = []
    if experiment:
        exp = c.get_experiment_by_name(experiment)
        exp_ids = [exp.experiment_id] if exp is not None else []
    if not exp_ids:
        exp_ids = [e.experiment_id for e in c.search_experiments(max_results=1000)]
    tag = N.STUDY_RUN_TAG
    query = f"tags.`{tag}` = '{name}'" if name else f"tags.`{tag}` != ''"
    parents = c.search_runs(exp_ids, query, max_results=2) if exp_ids else []
    if not parents:
        raise UsageError(f"{study}: no study run {('named ' + repr(name)) if name else ''} in the MLflow store "
                         f"{redact(uri)}".replace("  ", " "))
    if not name and len(parents) > 1:
        raise UsageError(f"{study}: the store holds several studies; name one with --tracking-uri {study} NAME")
    p = parents[0]
    return StudyRef(name or p.data.tags[tag], uri, c, p.info.experiment_id, p.info.run_id, folder)


def artifacts_reachable(ref: StudyRef, verb: str) -> None:
    """A verb that reads the runs' artifacts refuses a database URI whose runs keep them behind a tracking
    server (``mlflow-artifacts:/``): MLflow resolves those only through an http(s) tracking URI, and the
    verb would otherwise run without them (no figures, no bootstrap) and say nothing."""
    if ref.uri.startswith(("http://", "https://")):
        return
    artifacts = ref.client.get_run(ref.parent_run_id).info.artifact_uri or ""
    if artifacts.startswith("mlflow-artifacts:"):
        raise UsageError(f"{verb} {ref.name}: {redact(ref.uri)} is the database; the runs' artifacts are served by "
                         f"the tracking server ({artifacts.split('/')[0]}/...): give its URL (--tracking-uri "
                         f"http://HOST:PORT)")


# ---- registered models -------------------------------------------------------------------------------------
def registry_uri(model: str, study: str | None, tracking_uri: str | None) -> str:
    """The store whose registry holds ``model`` (or that holds a run, ``runs:/ID``): --tracking-uri, else the
    study's, else MLFLOW_TRACKING_URI."""
    if tracking_uri:
        return store_uri(tracking_uri)
    if study:
        return study_store(study)[0]
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return store_uri(os.environ["MLFLOW_TRACKING_URI"])
    raise UsageError(f"{model}: which MLflow store holds it? give --study STUDY or --tracking-uri URI "
                     "(or set MLFLOW_TRACKING_URI)")


def _model_version(c, model: str):
    """The registry version a ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` URI names (None for a logged
    model's own ``models:/MODEL_ID``)."""
    rest = model[len("models:/"):].strip("/")
    if "/" not in rest and "@" not in rest:
        return None
    if "@" in rest.split("/")[0]:
        name, alias = rest.split("/")[0].split("@", 1)
        return c.get_model_version_by_alias(name, alias)
    parts = rest.split("/")
    if len(parts) < 2 or not parts[1].isdigit():
        raise UsageError(f"{model}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return c.get_model_version(parts[0], parts[1])


def fetch_model(model: str, uri: str | None, dst: Path) -> Path:
    """A local model folder for a folder, ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``runs:/ID/PATH``.

    The registry is asked through a client on ``uri`` (MLflow's own ``models:/`` download ignores the
    registry URI it is given and uses the process-wide one).
    """
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException
    from nerlab.dashboards.runs import quiet_downloads
    from nerlab.dashboards.runs import process_tracking_uri
    from nerlab.models.ensemble import is_model_folder

    if not model.startswith(("models:/", "runs:/")):
        folder = Path(model)
        if not folder.is_dir():
            raise FileNotFoundError(f"{model}: no such model folder (or give models:/NAME@champion)")
        return folder
    try:
        source = _model_dir_as_logged_model(model, uri)
        if model.startswith("models:/"):
            c = client(uri)
            version = _model_version(c, model)
            source = c.get_model_version_download_uri(version.name, version.version) if version else \
                c.get_logged_model(model[len("models:/"):].strip("/")).artifact_location
        # MLflow resolves runs:/ID/NAME of a logged model (runs:/ID/tagger) through the process-wide
        # tracking URI, whatever tracking_uri says
        with quiet_downloads(), process_tracking_uri(uri):
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst),
                                                             tracking_uri=uri))
    except MlflowException as e:
        first = str(e.message if hasattr(e, "message") else e).splitlines()[0]
        raise UsageError(f"{model}: not found in the registry at {redact(uri)} ({first})") from None
    if not is_model_folder(local) and is_model_folder(local / N.MODEL_DIR):  # a run's artifacts (older runs)
        local = local / N.MODEL_DIR
    if not is_model_folder(local) and (local / "MLmodel").is_file():  # an MLflow Model: its tagger folder
        local = local / pyfunc_folder(local)
    return local


def _model_dir_as_logged_model(model: str, uri: str | None) -> str:
    """``runs:/ID/model`` of a run whose weights are only in its MLflow Model (trials no longer log a plain
    ``model`` folder beside it, so the weights are stored once): that model, ``models:/MODEL_ID`` (its latest
    complete one: a killed attempt may have left a partial one beside it); else ``model`` itself."""
    from nerlab.dashboards.runs import logged_models

    parts = model[len("runs:/"):].strip("/").split("/") if model.startswith("runs:/") else []
    if len(parts) != 2 or parts[1] != N.MODEL_DIR:
        return model
    c = client(uri)
    if c.list_artifacts(parts[0], N.MODEL_DIR):  # an older run: its plain model folder
        return model
    ready = logged_models(c, parts[0])
    return f"models:/{ready[-1]}" if ready else f"runs:/{parts[0]}/{N.PYFUNC_MODEL}"


def pyfunc_folder(mlmodel_dir: Path) -> str:
    """Where the model folder is inside a logged MLflow Model (``artifacts/<its name>``, from ``MLmodel``)."""
    import yaml

    meta = yaml.safe_load((mlmodel_dir / "MLmodel").read_text(encoding="utf-8")) or {}
    artifacts = (meta.get("flavors", {}).get("python_function", {}) or {}).get("artifacts") or {}
    if N.PYFUNC_ARTIFACT not in artifacts:
        raise UsageError(f"{mlmodel_dir}: an MLflow Model without a nerlab tagger (no artifact "
                         f"{N.PYFUNC_ARTIFACT!r} in its MLmodel)")
    return artifacts[N.PYFUNC_ARTIFACT]["path"]
