"""Studies: Ray Tune runs trials (a grid, or Optuna TPE), ASHA stops weak ones, MLflow records them all.

Each trial's driver (``trial_driver``) trains one job: a one-worker trial in its own process (the Tune
trial is the worker, and Tune reuses it for the next trial, so torch, tokenizers and encoded data stay
loaded), a trial of several workers as a Ray Train job from training/job.py whose rank 0 reports are relayed to
Tune. Identity is what makes resuming and growing safe: the study's parent run is found by its name, a
trial's MLflow run by its key (a grid trial's point, an Optuna trial's Tune id), so whatever command runs a
point again (a resume, a restart after Tune saved nothing, a grown grid) continues that point's one run.
Each command runs only the points without a finished run. A trial's checkpoints are its Tune trial's
(inline) or its Ray Train run's, named after its key, so a resumed or retried trial continues from them.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import ray
import yaml
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from nerlab.models import names as N
from nerlab.platform.errors import UsageError
from nerlab.platform.studies import growth, ownership
from nerlab.platform.tracking import server as mlflow_server
from nerlab.platform.tracking import runs as T
from nerlab.platform.tracking import storage
from nerlab.platform.training.job import check_start, connect_ray, finish_job, job_for, open_run, run_job, use_gpu
from nerlab.platform.training.inputs import Inputs, prepare_data, prepare_plm
from nerlab.platform.studies.live_view import Console, TrialProgress, showing
from nerlab.platform.specs.search import grid_points, param_space, trial_key, trial_run_name, trial_run_spec
from nerlab.platform.specs.run import TINY_PLM
from nerlab.platform.specs.study import StudySpec
from nerlab.platform.studies.state import parent_run, saved_spec, study_status, trial_runs
from nerlab.platform.training.timeline import mark
from nerlab.platform.training.sessions import TuneSession
from nerlab.platform.training.worker import run_worker

SERVER_URL_FILE = "mlflow-server.url"  # where trials find the study's local MLflow server


# ---- the trial driver (runs inside Tune) ---------------------------------------------------------------
@dataclass(frozen=True)
class StudyContext:
    """What every trial of a study shares, handed to each trial driver beside its point (plain data)."""

    spec: StudySpec
    data: dict[str, str | None]  # train, val, test: absolute paths
    plms: dict[str, str]  # the search's PLM -> its folder (tiny PLMs built) or hub name
    output: str
    experiment: str
    parent_run_id: str
    storage: str  # Ray Train checkpoints
    tracking_uri: str
    local_server: bool  # a local MLflow server in front of a SQLite store: its URL changes per driver start
    round: int  # the study's round this command runs (1, then one more per growth)

    @property
    def tune_name(self) -> str:
        """Tune's experiment of this round: a resumed round restores it, a grown study starts the next one."""
        return self.spec.name if self.round == 1 else f"{self.spec.name}-round{self.round}"

    def current_tracking_uri(self) -> str:
        """The study's tracking URI as of now. A local server gets a new port each time the driver starts,
        and a restored Tune experiment hands trials the context of the first start: the URL file is current."""
        if not self.local_server:
            return self.tracking_uri
        return (Path(self.output) / SERVER_URL_FILE).read_text().strip()


def trial_driver(config: dict, ctx: StudyContext) -> None:
    spec = ctx.spec
    tune_id = tune.get_context().get_trial_id()
    mark("trial.start", trial=tune_id)
    point = dict(config)
    trial_id = trial_key(spec, point, tune_id)
    run, loss_name = trial_run_spec(spec, point, trial_id)
    inputs = Inputs(**ctx.data, plm=ctx.plms[point["plm"]])
    tags = {"study": spec.name, "trial": trial_id, "loss": loss_name, "plm": point["plm"]}
    uri = ctx.current_tracking_uri()
    client = T.MlflowClient(uri)
    done = T.find_run(client, T.ensure_experiment(client, ctx.experiment, None), N.TRIAL_TAG, trial_id)
    if done is not None and done.info.status == "FINISHED" and N.BEST_VAL_F1 in done.data.metrics:
        # Finished before the driver died, but Tune had not recorded it: report it, do not train again.
        m = done.data.metrics
        tune.report({N.TUNE_EPOCH: int(m.get(N.BEST_EPOCH, 0)), N.TUNE_BEST_EPOCH: int(m.get(N.BEST_EPOCH, 0)),
                     N.TUNE_VAL_F1: m[N.BEST_VAL_F1], N.TUNE_TEST_F1: m.get(N.TEST_F1, -1.0), N.TUNE_FINAL: True})
        return
    client, mlrun = open_run(run, inputs, f"{spec.name}/{trial_id}", uri, None, ctx.experiment,
                             parent_run_id=ctx.parent_run_id,
                             extra_tags={N.TRIAL_TAG: trial_id, N.TUNE_TRIAL_TAG: tune_id, N.ROUND_TAG: str(ctx.round),
                                         N.STUDY_TAG: spec.name, **tags},
                             run_name=trial_run_name(point, loss_name))
    T.log_params(client, mlrun.info.run_id, {"trial": point})
    mark("trial.run_opened", trial=tune_id)
    if spec.resources.inline:
        # This process is the job's one worker: checkpoints, reports and restores go through Tune. A stop
        # from ASHA ends the loop at its next report; CloseTrialRuns closes the run, as for a Train job.
        run_worker(job_for(run, inputs, uri, mlrun.info.run_id), TuneSession(use_gpu(run)))
        client.set_terminated(mlrun.info.run_id, status="FINISHED")
        mark("trial.end", trial=tune_id)
        return
    result = run_job(run, inputs, uri, mlrun.info.run_id, ctx.storage,
                     name=f"{spec.name}-{trial_id}", callbacks=[TuneReportCallback()])
    mark("trial.fit_returned", trial=tune_id)
    finish_job(client, mlrun.info.run_id, result, model_dest=None)
    mark("trial.end", trial=tune_id)


class CloseTrialRuns(tune.Callback):
    """Tune stops weak trials from outside (ASHA): close their MLflow runs, marked as stopped early.

    A restored Tune experiment brings back this callback as pickled at the first start: the tracking URI
    is looked up at each call, like the trials do."""

    def __init__(self, ctx: StudyContext, experiment_id: str):
        self.ctx, self.experiment_id = ctx, experiment_id

    def _close(self, trial, status: str) -> None:
        client = T.MlflowClient(self.ctx.current_tracking_uri())
        key = trial_key(self.ctx.spec, dict(trial.config), trial.trial_id)
        run = T.find_run(client, self.experiment_id, N.TRIAL_TAG, key)
        if run is None or run.info.status != "RUNNING":
            return
        last = trial.last_result or {}
        if status == "FINISHED" and not last.get(N.TUNE_FINAL, False):
            client.set_tag(run.info.run_id, N.STOPPED_EARLY_TAG, "true")
        client.set_terminated(run.info.run_id, status=status)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(N.TUNE_FINAL):
            mark("tune.final_result", trial=trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial, "FAILED")


# ---- the study driver ----------------------------------------------------------------------------------
def _prepare_inputs(spec: StudySpec, root: str) -> tuple[dict[str, str | None], dict[str, str]]:
    """Data and PLMs for all trials, built once before Ray starts (a synthetic corpus, tiny PLMs) under the
    study's storage ``root``: in ``prepared/`` of a folder; in object storage, built in the output folder and
    published to ``ROOT/prepared/``, so that no node reads the driver's disk."""
    remote = storage.is_uri(root)
    cache = Path(spec.output if remote else root) / "prepared"
    train, val, test = prepare_data(spec.data, cache, spec.task)  # files were validated by run_study
    data = {"train": train, "val": val, "test": test}
    plms = {p: prepare_plm(p, train, cache) for p in spec.search.plm}
    if remote:
        def published(folder: Path) -> str:
            return storage.publish(str(folder), storage.join(root, "prepared", folder.name))
        if spec.data.synth is not None:
            corpus = published(Path(train).parent)
            data = {split: storage.join(corpus, Path(path).name) for split, path in data.items()}
        plms = {p: published(Path(path)) if TINY_PLM.match(p) else path for p, path in plms.items()}
    return data, plms


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


def _searcher(spec: StudySpec, out: Path, todo: list[dict]):
    """A grid's points still to run, in order; or Optuna's TPE over the search space. Its history is kept in
    ``optuna.db`` beside the store, so a grown search proposes its next points knowing every earlier result."""
    if spec.search.mode != "optuna":
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(points_to_evaluate=todo, max_concurrent=spec.resources.max_concurrent)
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    db = optuna.storages.RDBStorage(f"sqlite:///{out / 'optuna.db'}")
    searcher = OptunaSearch(metric=N.TUNE_VAL_F1, mode="max", sampler=tpe_sampler(spec.name, spec.search, db),
                            study_name=spec.name, storage=db)
    return ConcurrencyLimiter(searcher, max_concurrent=spec.resources.max_concurrent)


def tpe_sampler(name: str, search, db):
    """TPE seeded by ``search.sampler_seed`` plus the number of trials the search already holds in ``db``, its
    first ``search.startup_trials`` points random. A sampler's random stream restarts with its seed, so a grown
    search seeded as its first round would propose that round's random points again."""
    import optuna

    try:
        held = len(optuna.load_study(study_name=name, storage=db).trials)
    except KeyError:  # a new search
        held = 0
    return optuna.samplers.TPESampler(seed=search.sampler_seed + held, n_startup_trials=search.startup_trials)


def surviving_checkpoint(result):
    """The checkpoint to restore a trial from: the one Tune's saved state names, or, when that one is gone,
    the oldest of the trial's later checkpoints (None when there is none: the trial starts afresh).

    Tune deletes a trial's oldest checkpoint when it registers a newer one, and only then snapshots its own
    state, which it uploads in the background. A driver killed before that upload ends leaves a state that
    names a deleted checkpoint, and Tune's restore of that trial fails on every retry and every resume.
    The checkpoints registered after it are whole (a checkpoint is registered once uploaded); only the
    newest one can be an upload cut short, so the oldest later one is taken. Epochs already in MLflow are
    not logged again (rank0.RankZeroLog), so the run's history stays one entry per epoch."""
    import pyarrow.fs as pafs
    from ray.train import Checkpoint
    from ray.train._internal.session import _TrainingResult

    checkpoint = getattr(result, "checkpoint", None)
    if checkpoint is None:  # not a saved training result: Tune's own handling
        return result
    fs, path = checkpoint.filesystem, checkpoint.path
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        return result
    trial_dir, name = path.rstrip("/").rsplit("/", 1)
    later = sorted(f.path for f in fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
                   if f.type == pafs.FileType.Directory and f.base_name.startswith("checkpoint_") and f.base_name > name)
    return _TrainingResult(Checkpoint(later[0], filesystem=fs), result.metrics) if later else None


def _restorable(fn):
    """The trial function ``fn`` as Tune's trainable class, restored from ``surviving_checkpoint``."""
    from ray.tune.trainable.function_trainable import wrap_function

    trainable = wrap_function(fn)

    class Trial(trainable):
        def restore(self, checkpoint_path, *args, **kwargs):
            found = surviving_checkpoint(checkpoint_path)
            if found is not None:
                return super().restore(found, *args, **kwargs)

    Trial.__name__ = Trial.__qualname__ = trainable.__name__  # Tune names trials and their folders by it
    return Trial


def _tuner(spec: StudySpec, ctx: StudyContext, out: Path, callbacks: list, restore: bool, root: str,
           todo: list[dict], samples: int) -> tune.Tuner:
    """Tune's run of this command: the grid's points ``todo``, or ``samples`` more Optuna trials."""
    r = spec.resources
    # The study's context (paths, tracking URI, parent run) travels beside the search space, not in it:
    # Tune shows and records only the trial's own point.
    need = {"CPU": r.trial_cpus}
    retries = r.trial_retries
    if r.inline:  # the trial is its job's (one) worker: it holds the job's resources and retries its failures
        need = r.job.need(use_gpu(spec.base_run()), r.trial_cpus)
        retries += r.max_failures
    trainable = tune.with_resources(_restorable(tune.with_parameters(trial_driver, ctx=ctx)), need)
    space = param_space(spec)
    if restore:
        path, fs = storage.ray_storage(storage.join(root, "tune", ctx.tune_name))
        return tune.Tuner.restore(path, trainable=trainable, param_space=space, resume_errored=True,
                                  storage_filesystem=fs)
    scheduler = _asha(spec)
    path, fs = storage.ray_storage(storage.join(root, "tune"))
    return tune.Tuner(
        trainable, param_space=space,
        tune_config=tune.TuneConfig(metric=N.TUNE_VAL_F1, mode="max", search_alg=_searcher(spec, out, todo),
                                    scheduler=scheduler, num_samples=samples,
                                    reuse_actors=r.inline),  # torch, the tokenizer and encoded data stay loaded
        run_config=tune.RunConfig(name=ctx.tune_name, storage_path=path, storage_filesystem=fs, callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=retries), verbose=1,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
    )


def _log_as(client, run_id: str, path: str, artifact: str) -> None:
    """Log file ``path`` as ``artifact`` (a path in the run's artifacts), whatever the file's own name."""
    import shutil
    import tempfile

    folder, name = artifact.rsplit("/", 1)
    with tempfile.TemporaryDirectory() as d:
        shutil.copyfile(path, Path(d) / name)
        client.log_artifact(run_id, str(Path(d) / name), folder)


def run_study(spec: StudySpec, source: str = "spec", replace_old: bool = False,
              console: Console | None = None) -> dict:
    """Run a study to the end: a new one, or the one already there with the same spec (resumed, or left
    as it is if it finished). A study whose spec changed is refused unless ``replace_old`` archives it.
    ``console``: the live view (Ray's own output to a log file unless verbose); None leaves output to Ray."""
    out = Path(spec.output)
    store_uri, artifacts = check_start(spec, spec.resources.job, spec.resources.trial_cpus, source, spec.search.plm)
    storage.check(spec.storage, f"{source}: storage")
    root = storage.study_root(spec.storage, spec.output, spec.name, _digest(spec))  # tune/ and ray-train/
    mark("study.start")
    with ExitStack() as stack:
        done, grows = _claim(stack, spec, store_uri, source, replace_old)
        if done is not None:
            return done
        T.create_store(store_uri)  # once, under the lock, before the server or any reader opens it
        view = stack.enter_context(showing(console, spec)) if console is not None else None
        data, plms = _prepare_inputs(spec, root)
        mark("study.prepared")
        uri = store_uri
        if store_uri.startswith("sqlite:"):  # one writer: a local server in front of the SQLite store
            # Up (its port bound) before Ray starts: Ray's processes bind ports of their own, and one took the
            # port picked for a server that was still booting.
            uri = stack.enter_context(mlflow_server.serving(store_uri, None, out / "mlflow-server.log"))
            (out / SERVER_URL_FILE).write_text(uri + "\n")
        client = T.MlflowClient(uri)
        experiment = spec.tracking.experiment or spec.name
        if not _local_store(store_uri, out):  # drivers on other machines see the study through the server
            stack.enter_context(ownership.ServerLease(client, f"{experiment}/{spec.name}", f"study {spec.name}"))
        exp_id = T.ensure_experiment(client, experiment, artifacts)
        parent, created = T.find_or_create_run(client, exp_id, N.STUDY_RUN_TAG, spec.name, run_name=spec.name,
                                               tags={N.KIND_TAG: "study", N.GIT_COMMIT_TAG: T.git_commit(),
                                                     N.DIGEST_TAG: _digest(spec), N.ROUNDS_TAG: "1"})
        round_no = int(parent.data.tags.get(N.ROUNDS_TAG, "1"))
        if grows and parent.data.tags.get(N.DIGEST_TAG) != _digest(spec):  # a new round (a growth interrupted
            round_no += 1  # before its spec was saved has its digest on the parent already: the same round)
            T.set_tags(client, parent.info.run_id, {N.ROUNDS_TAG: str(round_no), N.DIGEST_TAG: _digest(spec),
                                                    N.ROUND_NOTE_TAG.format(round_no): grows})
        # The spec the study runs now, in its folder and on its parent run (whose params stay the first
        # round's: MLflow never changes a param).
        (out / N.STUDY_FILE).write_text(yaml.safe_dump(spec.to_dict(), allow_unicode=True, sort_keys=False))
        client.log_artifact(parent.info.run_id, str(out / N.STUDY_FILE), N.CONFIG_DIR)
        if created:
            T.log_params(client, parent.info.run_id, T.spec_params(spec), {})
            # The gold files travel with the study, so `nerlab select` can bootstrap (val) and score an
            # ensemble (val, test) on any machine.
            for split in ("val", "test"):
                if data[split]:
                    _log_as(client, parent.info.run_id, storage.local(data[split]), N.gold_file(split))
        ctx = StudyContext(spec=spec, data=data, plms=plms, output=str(out),
                           experiment=experiment, parent_run_id=parent.info.run_id,
                           storage=storage.join(root, "ray-train"), tracking_uri=uri, local_server=uri != store_uri,
                           round=round_no)
        finished = {r.data.tags.get(N.TRIAL_TAG) for r in trial_runs(client, parent) if r.info.status == "FINISHED"}
        todo = [p for p in grid_points(spec) if trial_key(spec, p, "") not in finished] \
            if spec.search.mode == "grid" else []
        samples = len(todo) if spec.search.mode == "grid" else max(0, spec.search.num_samples - len(finished))
        if view is not None:
            view.plan(kept=finished, grows=grows)
        mark("study.server_and_parent_run")
        if connect_ray(spec.ray_address):
            stack.callback(ray.shutdown)  # also on SIGTERM/Ctrl-C: no Ray process outlives the command
        mark("study.ray_started")
        # Tune snapshots its state whenever a trial has saved num_to_keep checkpoints since the last snapshot
        # (every other epoch here) and warns about it; the snapshot takes milliseconds.
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        callbacks = [CloseTrialRuns(ctx, exp_id), TrialProgress()]
        restore = tune.Tuner.can_restore(*storage.ray_storage(storage.join(root, "tune", ctx.tune_name)))
        try:
            results = _tuner(spec, ctx, out, callbacks, restore, root, todo, samples).fit() \
                if restore or samples else []
        except BaseException:  # interrupted (Ctrl-C, SIGTERM) or broken: the study and its open trials
            for run in trial_runs(client, parent):
                if run.info.status == "RUNNING":
                    client.set_terminated(run.info.run_id, status="KILLED")
            client.set_terminated(parent.info.run_id, status="KILLED")
            raise
        mark("study.tune_done")
        summary = _finish_study(client, spec, parent, exp_id, out, results)
        mark("study.finished")
    return summary


def _local_store(store_uri: str, out: Path) -> bool:
    """A SQLite store in the study's own folder: the folder's lock guards it (no lease needed)."""
    db = T.sqlite_file(store_uri)
    return db is not None and db.parent == out.resolve()


def _digest(spec: StudySpec) -> str:
    return ownership.digest(T.flatten(T.spec_params(spec)))


def _claim(stack: ExitStack, spec: StudySpec, store_uri: str, source: str,
           replace_old: bool) -> tuple[dict | None, str | None]:
    """Make this driver the study's only one and check that an existing study is this spec's, or grows to it.

    Returns (the summary of a study that already finished: nothing to run, else None to go on; what this
    command adds to a study whose spec grew, else None). A study started with a spec this one does not
    grow is refused naming the keys, or archived with ``replace_old``: its output folder moves aside, and
    on a tracking server its parent run is renamed.
    """
    out = Path(spec.output)
    what = f"study {spec.name} ({out})"
    stack.enter_context(ownership.FolderLock(out, what))
    parent = parent_run(store_uri, spec)
    old = saved_spec(out, parent, store_uri)
    if old is None:
        return None, None
    added, blocked = growth.compare(old, spec)
    if blocked and not replace_old:
        raise UsageError(f"{source}: study {spec.name} at {out} was started with another spec, which this one does "
                         f"not grow ({'; '.join(blocked)}); only values added to the search's axes (or a higher "
                         f"num_samples) grow a study: give the study another name or --output, or add --replace to "
                         f"archive the old one and start anew")
    if blocked:
        ownership.archive_and_relock(stack, out, what)
        if parent is not None and not _local_store(store_uri, out):  # the old study's run, renamed
            stamp = f"{spec.name}~archived-{parent.info.run_id[:8]}"
            T.set_tags(T.MlflowClient(store_uri), parent.info.run_id, {N.STUDY_RUN_TAG: stamp, "mlflow.runName": stamp})
        return None, None
    if added:
        return None, growth.describe(old, spec, added)
    if parent is not None and parent.info.status == "FINISHED":
        status = study_status(spec)
        return {"study": spec.name, "trials": status["done"], "errors": status["failed"], "output": str(out),
                "finished_before": True, **({"best_config": status["best"]["config"],
                                             "best_val_f1": status["best"]["val_f1"]} if status["best"] else {})}, None
    return None, None


def _finish_study(client, spec: StudySpec, parent, exp_id: str, out: Path, results) -> dict:
    """The study's leaderboard over all its trials (every round), its best, and its parent run closed.
    ``trials`` counts the study's trials, ``ran`` those this command ran."""
    from nerlab.dashboards.leaderboard import format_board, leaderboard_frame

    parent_id = parent.info.run_id
    board = leaderboard_frame(client, exp_id, parent_id)
    board_dir = out / "leaderboard"
    board_dir.mkdir(exist_ok=True)
    board.to_csv(board_dir / "leaderboard.csv", index=False)
    (board_dir / "leaderboard.txt").write_text(format_board(board) + "\n")
    client.log_artifacts(parent_id, str(board_dir), N.LEADERBOARD_DIR)
    errors = sum(1 for r in results if r.error is not None)
    summary = {"study": spec.name, "trials": len(trial_runs(client, parent)), "ran": len(results), "errors": errors,
               "output": str(out)}
    if len(board):
        best = board.iloc[0]
        summary.update(best_config=best["config"], best_val_f1=float(best["val_f1_mean"]))
        T.log_metrics(client, parent_id, {N.BEST_VAL_F1: float(best["val_f1_mean"])}, step=0)
    client.set_terminated(parent_id, status="FINISHED" if not errors else "FAILED")
    return summary
