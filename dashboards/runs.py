"""A study's trial runs, read the cheap way: one query per table on a SQL store, pages of search_runs elsewhere.

MLflow's ``search_runs`` builds an ORM object for every tag, param and latest metric of every run it
returns; a trial logs its whole resolved spec as params, so a study of 2,000 trials means ~200,000 objects
and ~20 s before a leaderboard can start. On a SQL store (the study's own ``mlflow.db``, or a database the
client talks to directly) the same rows come back as plain tuples in four queries. Through a tracking server
(``http://...``) the REST API is all there is: ``search_runs`` in pages of 1,000, and a metric's history one
run per request, which ``metric_histories`` sends concurrently.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import RunInfo

from nerlab.models import names as N


@dataclass
class RunValues:
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # latest value of each metric, as MLflow keeps it


@dataclass
class StoredRun:
    """What the results verbs read of a run, shaped like MLflow's ``Run`` (``.info``, ``.data``)."""

    info: RunInfo
    data: RunValues
    best_val_f1_so_far: float | None = None  # max of val/micro_f1 over the epochs (from the same query)


def study_runs(client, experiment_id: str, parent_run_id: str) -> list:
    """The trial runs of a study: the active children of its parent run, newest first (as search_runs)."""
    store = _sql_store(client)
    if store is not None:
        try:
            return _sql_children(store, experiment_id, parent_run_id)
        except Exception:  # a schema this code does not know: MLflow's own search still works
            pass
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], f"tags.`{N.PARENT_RUN_TAG}` = '{parent_run_id}'",
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _sql_store(client):
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = client._tracking_client.store
    except Exception:
        return None
    return store if isinstance(store, SqlAlchemyStore) else None


_CHILDREN = ("SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid WHERE t.key = :tag "
             "AND t.value = :parent AND r.experiment_id = :exp AND r.lifecycle_stage = 'active'")


def _sql_children(store, experiment_id: str, parent_run_id: str) -> list[StoredRun]:
    from sqlalchemy import text

    # is_nan is a boolean column: compared with a bound False, so SQLite (0/1) and PostgreSQL (boolean) both match
    args = {"tag": N.PARENT_RUN_TAG, "parent": parent_run_id, "exp": int(experiment_id), "key": N.VAL_F1,
            "false": False}
    with store.engine.connect() as conn:
        infos = conn.execute(text(
            "SELECT run_uuid, name, experiment_id, user_id, status, start_time, end_time, lifecycle_stage, "
            f"artifact_uri FROM runs WHERE run_uuid IN ({_CHILDREN}) ORDER BY start_time DESC, run_uuid"), args).all()
        runs = {}
        for uuid, name, exp, user, status, start, end, stage, art in infos:
            info = RunInfo(run_id=uuid, experiment_id=str(exp), user_id=user, status=status, start_time=start,
                           end_time=end, lifecycle_stage=stage, artifact_uri=art, run_name=name)
            runs[uuid] = StoredRun(info, RunValues())
        for table, attr in (("tags", "tags"), ("params", "params")):
            for uuid, key, value in conn.execute(text(
                    f"SELECT run_uuid, key, value FROM {table} WHERE run_uuid IN ({_CHILDREN})"), args):
                getattr(runs[uuid].data, attr)[key] = value
        for uuid, key, value, is_nan in conn.execute(text(
                f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({_CHILDREN})"), args):
            runs[uuid].data.metrics[key] = math.nan if is_nan else float(value)
        for uuid, best in conn.execute(text(
                f"SELECT run_uuid, MAX(value) FROM metrics WHERE key = :key AND is_nan = :false "
                f"AND run_uuid IN ({_CHILDREN}) GROUP BY run_uuid"), args):
            runs[uuid].best_val_f1_so_far = float(best)
    return list(runs.values())


def metric_histories(client, run_ids: list[str], key: str, threads: int = 8) -> dict[str, list]:
    """Each run's logged history of metric ``key``. MLflow has one call per run; through a tracking server
    each is a request of tens of milliseconds, so they go out ``threads`` at a time (600 one after another:
    about 20 s of a verb at 2,000 runs)."""
    if len(run_ids) < 2:
        return {r: client.get_metric_history(r, key) for r in run_ids}
    with ThreadPoolExecutor(min(threads, len(run_ids))) as pool:
        return dict(zip(run_ids, pool.map(lambda r: client.get_metric_history(r, key), run_ids)))


def logged_models(client, run_id: str, name: str = N.PYFUNC_MODEL) -> list[str]:
    """Ids of the complete MLflow Models named ``name`` the run logged (its Models column), oldest first.

    A model is complete once MLflow marked it READY at the end of its upload; an attempt killed while uploading
    leaves one PENDING, with part of its files, which nothing may load, register or take as already logged."""
    from mlflow.entities import LoggedModelStatus

    outputs = client.get_run(run_id).outputs
    ids = [o.model_id for o in (outputs.model_outputs if outputs else [])]
    models = [client.get_logged_model(i) for i in ids]
    return [m.model_id for m in models if m.name == name and m.status == LoggedModelStatus.READY]


def run_file(client, run_id: str, path: str, dst: str, artifact_uri: str | None = None) -> str:
    """A local path to the run's artifact ``path``: the file itself when the run's artifacts are on this
    machine (a study's own ``mlartifacts``: read in place, no lookup of the run), else a download into ``dst``.
    Raises as ``download_artifacts`` does when the artifact is missing."""
    from urllib.parse import unquote, urlparse

    if artifact_uri:
        u = urlparse(artifact_uri)
        local = unquote(u.path) if u.scheme == "file" else artifact_uri if u.scheme == "" else None
        if local:
            f = Path(local) / path
            if f.is_file():
                return str(f)
    return client.download_artifacts(run_id, path, dst)


def gold_file(client, parent_run_id: str, run_id: str, split: str, tmp: Path) -> str | None:
    """The gold file of ``split``: the path the trial read where this machine has it, else the copy the study
    logged on its parent run (``gold/val.txt``, ``gold/test.txt``)."""
    local = client.get_run(run_id).data.params.get(f"inputs.{split}")
    if local and Path(local).is_file():
        return local
    try:
        return client.download_artifacts(parent_run_id, N.gold_file(split), str(tmp / N.GOLD_DIR))
    except Exception:  # an older study, or a split the study does not log
        return None


@contextmanager
def quiet_downloads():
    """No MLflow progress bars while artifacts are downloaded (restores the setting afterwards)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


@contextmanager
def process_tracking_uri(uri: str):
    """Point MLflow's process-wide tracking URI at ``uri`` for a call that ignores the client's (a logged
    model's ``models:/ID`` or ``runs:/ID/NAME``), then put it back. MLflow's own ``_use_tracking_uri``
    leaves ``MLFLOW_TRACKING_URI`` set in the environment when none was set before, so every process
    started afterwards (a study's driver, its workers) would track into this store."""
    from mlflow.tracking._tracking_service import utils

    old_uri, old_env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    utils.set_tracking_uri(uri)
    try:
        yield
    finally:
        utils._tracking_uri = old_uri
        if old_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_env
