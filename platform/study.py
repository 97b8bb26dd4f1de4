"""Studies: Ray Tune runs trials (a grid, or Optuna TPE), ASHA stops weak ones, MLflow records them all.

Each trial's driver (``trial_driver``) runs one Ray Train job from jobs.py and relays rank 0's epoch
reports to Tune. Identity is what makes resuming safe: the study's parent run is found by its name,
a trial's MLflow run by its Tune trial id, and a trial's Ray Train run is named after that id, so a
resumed or retried trial continues its checkpoints in its one MLflow run.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import ray
import yaml
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from nerlab.models import names as N
from nerlab.platform import mlflow_server, ownership
from nerlab.platform import tracking as T
from nerlab.platform.jobs import check_fits, connect_ray, finish_job, open_run, run_job
from nerlab.platform.prepare import (Inputs, check_store, check_writable, prepare_data, prepare_plm,
                                     validate_files)
from nerlab.platform.run_spec import LossConfig, RunSpec
from nerlab.platform.study_spec import AXES_NUMERIC, StudySpec, load_study_spec
from nerlab.platform.typed import SpecError, UsageError, from_dict

METRIC = N.TUNE_VAL_F1
SERVER_URL_FILE = "mlflow-server.url"  # where trials find the study's local MLflow server
STUDY_FILE = N.STUDY_FILE
GOLD_DIR = N.GOLD_DIR  # the parent run's copy of the gold validation file (for the bootstrap in select)
STUDY_TAG, TRIAL_TAG, PARENT_TAG = N.STUDY_TAG, N.TRIAL_TAG, N.STUDY_RUN_TAG


# ---- the search space ----------------------------------------------------------------------------------
def _axis(values, mode: str):
    """A list becomes a grid axis (grid) or a categorical choice (optuna); a range becomes a distribution."""
    if isinstance(values, dict):
        kind, (lo, hi) = next(iter(values.items()))
        return tune.loguniform(lo, hi) if kind == "log_uniform" else tune.uniform(lo, hi)
    values = list(values)
    return tune.grid_search(values) if mode == "grid" else tune.choice(values)


def param_space(spec: StudySpec) -> dict:
    s = spec.search
    space = {"plm": _axis(s.plm, s.mode), "variance_penalty": _axis(s.variance_penalty, s.mode)}
    if s.loss_weights:
        space.update({f"loss_w_{k}": _axis(r, s.mode) for k, r in s.loss_weights.items()})
    else:
        space["loss"] = _axis(list(s.losses), s.mode)
    space["seed"] = _axis(s.seeds, s.mode) if s.mode == "grid" else s.seeds[0]
    for key in (*AXES_NUMERIC, "batch_size"):
        if getattr(s, key) is not None:
            space[key] = _axis(getattr(s, key), s.mode)
    return space


def grid_size(spec: StudySpec) -> int:
    s = spec.search
    if s.mode == "optuna":
        return s.num_samples
    axes = [s.plm, s.losses, s.variance_penalty, s.seeds] + [getattr(s, k) for k in (*AXES_NUMERIC, "batch_size")]
    return math.prod(len(a) for a in axes if a is not None)


def trial_run_spec(spec: StudySpec, point: dict, trial_id: str) -> tuple[RunSpec, str]:
    """The run spec of one trial (the study's shared settings plus its point) and its loss name."""
    base = spec.base_run()
    if "loss" in point:
        loss = LossConfig(preset=None, weights=spec.search.losses[point["loss"]])
        loss_name = point["loss"]
    else:
        weights = {k[len("loss_w_"):]: float(v) for k, v in point.items() if k.startswith("loss_w_")}
        loss, loss_name = LossConfig(preset=None, weights=weights), "+".join(f"{w:.2f}{k}" for k, w in weights.items())
    loss = replace(loss, **{k: float(point[k]) for k in ("focal_gamma", "tversky_alpha", "tversky_beta") if k in point})
    train = replace(base.train, variance_penalty=float(point["variance_penalty"]), seed=int(point["seed"]),
                    **{k: point[k] for k in ("lr", "batch_size") if k in point})
    model = replace(base.model, plm=point["plm"], **({"dropout": float(point["dropout"])} if "dropout" in point else {}))
    return replace(base, name=f"{spec.name}-{trial_id}", loss=loss, train=train, model=model), loss_name


# ---- the trial driver (runs inside Tune) ---------------------------------------------------------------
def trial_driver(config: dict, ctx: dict) -> None:
    spec = from_dict(StudySpec, ctx["spec"], "study")
    trial_id = tune.get_context().get_trial_id()
    point = dict(config)
    run, loss_name = trial_run_spec(spec, point, trial_id)
    inputs = Inputs(**{**ctx["data"], "plm": ctx["plms"][point["plm"]]})
    tags = {"study": spec.name, "trial": trial_id, "loss": loss_name, "plm": point["plm"]}
    uri = _tracking_uri(ctx)
    client = T.MlflowClient(uri)
    done = T.find_run(client, T.ensure_experiment(client, ctx["experiment"], None), TRIAL_TAG, trial_id)
    if done is not None and done.info.status == "FINISHED" and N.BEST_VAL_F1 in done.data.metrics:
        # Finished before the driver died, but Tune had not recorded it: report it, do not train again.
        m = done.data.metrics
        tune.report({N.TUNE_EPOCH: int(m.get(N.BEST_EPOCH, 0)), N.TUNE_BEST_EPOCH: int(m.get(N.BEST_EPOCH, 0)),
                     METRIC: m[N.BEST_VAL_F1], N.TUNE_TEST_F1: m.get(N.TEST_F1, -1.0), N.TUNE_FINAL: True})
        return
    client, mlrun = open_run(run, inputs, f"{spec.name}/{trial_id}", uri, None,
                             ctx["experiment"], parent_run_id=ctx["parent_run_id"],
                             extra_tags={TRIAL_TAG: trial_id, STUDY_TAG: spec.name, **tags})
    T.log_params(client, mlrun.info.run_id, {"trial": point})
    result = run_job(run, inputs, uri, mlrun.info.run_id, ctx["storage"],
                     name=f"{spec.name}-{trial_id}", callbacks=[TuneReportCallback()])
    finish_job(client, mlrun.info.run_id, result, model_dest=None)


def _tracking_uri(ctx: dict) -> str:
    """The study's tracking URI as of now. A local server gets a new port each time the driver starts, and
    a restored Tune experiment may hand trials the context of the first start: the URL file is current."""
    url_file = Path(ctx["output"]) / SERVER_URL_FILE
    return url_file.read_text().strip() if ctx["local_server"] else ctx["tracking_uri"]


class CloseTrialRuns(tune.Callback):
    """Tune stops weak trials from outside (ASHA): close their MLflow runs, marked as stopped early.

    A restored Tune experiment brings back this callback as pickled at the first start: the tracking URI
    is looked up at each call, like the trials do."""

    def __init__(self, ctx: dict, experiment_id: str):
        self.where = {k: ctx[k] for k in ("output", "local_server", "tracking_uri")}
        self.experiment_id = experiment_id

    def _close(self, trial, status: str) -> None:
        client = T.MlflowClient(_tracking_uri(self.where))
        run = T.find_run(client, self.experiment_id, TRIAL_TAG, trial.trial_id)
        if run is None or run.info.status != "RUNNING":
            return
        last = trial.last_result or {}
        if status == "FINISHED" and not last.get(N.TUNE_FINAL, False):
            client.set_tag(run.info.run_id, N.STOPPED_EARLY_TAG, "true")
        client.set_terminated(run.info.run_id, status=status)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial, "FAILED")


# ---- the study driver ----------------------------------------------------------------------------------
def _prepare_inputs(spec: StudySpec) -> dict:
    """Data and PLMs for all trials, built and validated before Ray starts."""
    cache = Path(spec.output) / "prepared"
    train, val, test = prepare_data(spec.data, cache, spec.task)  # files were validated by run_study
    plms = {p: prepare_plm(p, train, cache) for p in spec.search.plm}
    return {"data": {"train": train, "val": val, "test": test}, "plms": plms}


def _asha(spec: StudySpec):
    """ASHA with every rung strictly before the last epoch, or None when no such rung exists.

    A trial that reached its last epoch always finishes (test scores, model): a rung at the last epoch
    or at the final report would cut it at the end of its training and call it stopped early. ASHA puts
    rungs at grace x factor^k up to and including max_t, so max_t = epochs - 1; stop_last_trials=False
    lets trials run past max_t.
    """
    asha, last = spec.scheduler.asha, spec.train.epochs - 1
    if asha is None or asha.grace_period > last:
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", max_t=last, grace_period=asha.grace_period,
                         reduction_factor=asha.reduction_factor, stop_last_trials=False)


def _searcher(spec: StudySpec, out: Path):
    if spec.search.mode != "optuna":
        return None
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'optuna.db'}")
    searcher = OptunaSearch(metric=METRIC, mode="max", sampler=optuna.samplers.TPESampler(seed=spec.search.sampler_seed),
                            study_name=spec.name, storage=storage)
    return ConcurrencyLimiter(searcher, max_concurrent=spec.resources.max_concurrent)


def _tuner(spec: StudySpec, ctx: dict, out: Path, callbacks: list, restore: bool) -> tune.Tuner:
    r = spec.resources
    # The study's context (paths, tracking URI, parent run) travels beside the search space, not in it:
    # Tune shows and records only the trial's own point.
    trainable = tune.with_resources(tune.with_parameters(trial_driver, ctx=ctx), {"CPU": r.trial_cpus})
    space = param_space(spec)
    path = out / "tune" / spec.name
    if restore:
        return tune.Tuner.restore(str(path), trainable=trainable, param_space=space, resume_errored=True)
    scheduler = _asha(spec)
    searcher = _searcher(spec, out)
    return tune.Tuner(
        trainable, param_space=space,
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", search_alg=searcher, scheduler=scheduler,
                                    num_samples=spec.search.num_samples if searcher else 1,
                                    max_concurrent_trials=None if searcher else r.max_concurrent),
        run_config=tune.RunConfig(name=spec.name, storage_path=str(out / "tune"), callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=r.trial_retries), verbose=1),
    )


def _log_as(client, run_id: str, path: str, artifact: str) -> None:
    """Log file ``path`` as ``artifact`` (a path in the run's artifacts), whatever the file's own name."""
    import shutil
    import tempfile

    folder, name = artifact.rsplit("/", 1)
    with tempfile.TemporaryDirectory() as d:
        shutil.copyfile(path, Path(d) / name)
        client.log_artifact(run_id, str(Path(d) / name), folder)


def run_study(spec: StudySpec, source: str = "spec", replace_old: bool = False) -> dict:
    """Run a study to the end: a new one, or the one already there with the same spec (resumed, or left
    as it is if it finished). A study whose spec changed is refused unless ``replace_old`` archives it."""
    out = Path(spec.output)
    check_fits(spec.base_run().resources, spec.resources.trial_cpus, spec.ray_address, f"{source}: resources")
    store_uri, artifacts = T.resolve_tracking(spec.tracking.tracking_uri, out)
    check_writable(out, f"{source}: output")
    check_store(store_uri, f"{source}: tracking.tracking_uri")
    if spec.data.synth is None:  # bad data fails here, before the output folder exists
        validate_files(spec.task, spec.data.train, spec.data.val, spec.data.test)
    with ExitStack() as stack:
        done = _claim(stack, spec, store_uri, source, replace_old)
        if done is not None:
            return done
        ctx = _prepare_inputs(spec)
        (out / STUDY_FILE).write_text(yaml.safe_dump(spec.to_dict(), allow_unicode=True, sort_keys=False))
        uri = store_uri
        if store_uri.startswith("sqlite:"):  # one writer: a local server in front of the SQLite store
            uri = stack.enter_context(mlflow_server.serving(store_uri, None, out / "mlflow-server.log"))
            (out / SERVER_URL_FILE).write_text(uri + "\n")
        client = T.MlflowClient(uri)
        exp_id = T.ensure_experiment(client, spec.tracking.experiment or spec.name, artifacts)
        parent, created = T.find_or_create_run(client, exp_id, PARENT_TAG, spec.name, run_name=spec.name,
                                               tags={N.KIND_TAG: "study", "git_commit": T.git_commit(),
                                                     ownership.DIGEST_TAG: _digest(spec)})
        if not _local_store(store_uri, out):  # drivers on other machines see the study through the server
            stack.enter_context(ownership.ServerLease(client, parent.info.run_id, f"study {spec.name}"))
        if created:
            T.log_params(client, parent.info.run_id, T.spec_params(spec), {})
            client.log_artifact(parent.info.run_id, str(out / STUDY_FILE), N.CONFIG_DIR)
            # The gold validation file travels with the study, so `nerlab select` can bootstrap anywhere.
            _log_as(client, parent.info.run_id, ctx["data"]["val"], f"{GOLD_DIR}/val.txt")
        ctx.update(spec=spec.to_dict(), tracking_uri=uri, output=str(out), local_server=uri != store_uri,
                   experiment=spec.tracking.experiment or spec.name,
                   parent_run_id=parent.info.run_id, storage=str(out / "ray-train"))
        if connect_ray(spec.ray_address):
            stack.callback(ray.shutdown)  # also on SIGTERM/Ctrl-C: no Ray process outlives the command
        callbacks = [CloseTrialRuns(ctx, exp_id)]
        restore = tune.Tuner.can_restore(str(out / "tune" / spec.name))
        try:
            results = _tuner(spec, ctx, out, callbacks, restore).fit()
        except BaseException:  # interrupted (Ctrl-C, SIGTERM) or broken: the study and its open trials
            for run in _children(client, parent):
                if run.info.status == "RUNNING":
                    client.set_terminated(run.info.run_id, status="KILLED")
            client.set_terminated(parent.info.run_id, status="KILLED")
            raise
        summary = _finish_study(client, spec, parent.info.run_id, exp_id, out, results)
    return summary


def _local_store(store_uri: str, out: Path) -> bool:
    """A SQLite store in the study's own folder: the folder's lock guards it (no lease needed)."""
    return store_uri.startswith("sqlite:///") and Path(store_uri[len("sqlite:///"):]).parent == out.resolve()


def _digest(spec: StudySpec) -> str:
    return ownership.digest(T.flatten(T.spec_params(spec)))


def _parent_run(store_uri: str, spec: StudySpec):
    """The study's parent run in its store, or None (a store that does not exist yet is not created)."""
    if store_uri.startswith("sqlite:///") and not Path(store_uri[len("sqlite:///"):]).is_file():
        return None
    client = T.MlflowClient(store_uri)
    exp = client.get_experiment_by_name(spec.tracking.experiment or spec.name)
    return None if exp is None else T.find_run(client, exp.experiment_id, PARENT_TAG, spec.name)


def _children(client, parent) -> list:
    """The trial runs of a study: the children of its parent run."""
    return client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                              max_results=50000)


def _claim(stack: ExitStack, spec: StudySpec, store_uri: str, source: str, replace_old: bool) -> dict | None:
    """Make this driver the study's only one and check that an existing study is this spec's.

    Returns None to go on (a new study, or one to continue), or the summary of a study that already
    finished (nothing to run). A study started with another spec is refused, or archived with
    ``replace_old``: its output folder moves aside, and on a tracking server its parent run is renamed.
    """
    out = Path(spec.output)
    what = f"study {spec.name} ({out})"
    stack.enter_context(ownership.FolderLock(out, what))
    parent = _parent_run(store_uri, spec)
    saved = out / STUDY_FILE
    if saved.is_file():
        old = T.flatten(T.spec_params(load_saved_study(str(out))))
    elif parent is not None:
        old = dict(parent.data.params)
    else:
        return None
    new = T.flatten(T.spec_params(spec))
    diff = ownership.changes(old, new)
    if diff and not replace_old:
        raise UsageError(f"{source}: study {spec.name} at {out} was started with another spec ({diff}); "
                         f"give the study another name or --output, or add --replace to archive the old "
                         f"one and start anew")
    if diff:
        if parent is not None and not _local_store(store_uri, out):
            stamp = f"{spec.name}~archived-{parent.info.run_id[:8]}"
            client = T.MlflowClient(store_uri)
            T.set_tags(client, parent.info.run_id, {PARENT_TAG: stamp, "mlflow.runName": stamp})  # MLflow's name tag
        moved = ownership.archive(out)
        stack.enter_context(ownership.FolderLock(out, what))
        print(f"archived the old study {spec.name} to {moved}", flush=True)
        return None
    if parent is not None and parent.info.status == "FINISHED":
        status = study_status(spec)
        return {"study": spec.name, "trials": status["done"], "errors": status["failed"], "output": str(out),
                "finished_before": True, **({"best_config": status["best"]["config"],
                                             "best_val_f1": status["best"]["val_f1"]} if status["best"] else {})}
    return None


def _finish_study(client, spec: StudySpec, parent_id: str, exp_id: str, out: Path, results) -> dict:
    import logging

    from nerlab.dashboards.leaderboard import format_board, leaderboard_frame

    board = leaderboard_frame(client, exp_id, parent_id)
    board_dir = out / "leaderboard"
    board_dir.mkdir(exist_ok=True)
    board.to_csv(board_dir / "leaderboard.csv", index=False)
    (board_dir / "leaderboard.txt").write_text(format_board(board) + "\n")
    client.log_artifacts(parent_id, str(board_dir), N.LEADERBOARD_DIR)
    errors = sum(1 for r in results if r.error is not None)
    summary = {"study": spec.name, "trials": len(results), "errors": errors, "output": str(out)}
    if len(board):
        best = board.iloc[0]
        summary.update(best_config=best["config"], best_val_f1=float(best["val_f1_mean"]))
        T.log_metrics(client, parent_id, {N.BEST_VAL_F1: float(best["val_f1_mean"])}, step=0)
    try:  # the report (figures + HTML on the parent run); a failed figure must not fail the study
        from nerlab.dashboards.report import build_report

        summary["report"] = build_report(client, exp_id, parent_id, out / "report")["html"]
    except Exception as e:  # noqa: BLE001
        logging.getLogger("nerlab").warning("study %s: the report failed (%s: %s); retry with: nerlab report %s",
                                            spec.name, type(e).__name__, e, out)
    client.set_terminated(parent_id, status="FINISHED" if not errors else "FAILED")
    return summary


def load_saved_study(name_or_path: str) -> StudySpec:
    """A study by output folder, or by name under ./runs; its spec as saved when it started."""
    path = Path(name_or_path)
    folder = path if path.is_dir() else Path("runs") / name_or_path
    saved = folder / STUDY_FILE
    if not saved.is_file():
        raise SpecError(f"{name_or_path}: no study found (looked for {saved.resolve()})")
    return from_dict(StudySpec, yaml.safe_load(saved.read_text(encoding="utf-8")), str(saved))


def study_status(spec: StudySpec) -> dict:
    """Trials done, running, pending and failed, and the best so far, read from MLflow: one run per trial
    (the children of the study's parent run), so no count exceeds the study's trials."""
    out = Path(spec.output)
    uri, _ = T.resolve_tracking(spec.tracking.tracking_uri, out)
    parent = _parent_run(uri, spec)
    runs = {}
    if parent is not None:
        for r in sorted(_children(T.MlflowClient(uri), parent), key=lambda r: r.info.start_time):
            runs[r.data.tags.get(TRIAL_TAG, r.info.run_id)] = r  # a trial's latest run speaks for it
    counts = {"FINISHED": 0, "RUNNING": 0, "FAILED": 0, "KILLED": 0}
    best = None
    for r in runs.values():
        counts[r.info.status] = counts.get(r.info.status, 0) + 1
        f1 = r.data.metrics.get(N.BEST_VAL_F1, r.data.metrics.get(N.VAL_F1))
        if f1 is not None and (best is None or f1 > best[0]):
            t = r.data.tags
            best = (f1, t.get(TRIAL_TAG), t.get("plm"), t.get("loss"), t.get("penalty"),
                    f"{t.get('plm')} | {t.get('loss')} | λ={t.get('penalty')}")
    total = grid_size(spec)
    return {"study": spec.name, "total": total, "done": counts["FINISHED"], "running": counts["RUNNING"],
            "interrupted": counts["KILLED"], "failed": counts["FAILED"], "pending": max(0, total - len(runs)),
            "best": None if best is None else dict(zip(("val_f1", "trial", "plm", "loss", "penalty", "config"), best))}
