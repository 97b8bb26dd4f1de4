"""The driver of one training job: validate, prepare, open the MLflow run, run a Ray Train TorchTrainer.

Used by ``nerlab train`` and, one per trial, by studies. The job's MLflow run and its Ray Train run are
named after the job, so running the same job again (a retried trial, a restarted driver) resumes from the
job's last checkpoint into the same MLflow run.
"""

from __future__ import annotations

import os
import shutil
from contextlib import ExitStack, suppress
from dataclasses import dataclass, replace
from pathlib import Path

import psutil
import ray
import ray.train
import yaml
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from nerlab.models import names as N
from nerlab.models.precision import CPU_BF16_REFUSED, cpu_bf16_supported
from nerlab.platform.studies import ownership
from nerlab.platform.tracking import runs as T
from nerlab.platform.tracking.server import PortLost, on_a_port
from nerlab.platform.tracking.storage import ray_storage
from nerlab.platform.specs.paths import writable_folder
from nerlab.platform.training.inputs import Inputs, check_remote_plms, check_store, prepare, validate_files
from nerlab.platform.specs.run import RunSpec
from nerlab.platform.training.timeline import mark
from nerlab.platform.training.worker import Job, train_fn_per_worker
from nerlab.platform.errors import SpecError, UsageError
from nerlab.platform.specs.loader import to_dict


@dataclass(frozen=True)
class JobResult:
    run_id: str
    val_f1: float
    test_f1: float
    best_epoch: int
    epochs: int
    model_dir: str | None
    finished_before: bool = False  # the job had finished earlier: nothing was trained


LOCAL_TRAIN_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}


def connect_ray(address: str | None = None, **kwargs) -> bool:
    """Join the named cluster (or RAY_ADDRESS); else start a local Ray with this machine's CPUs/GPUs.
    Returns whether this call connected (False: Ray was already up in this process).

    A local Ray gets its dashboard on 127.0.0.1 at a free port. The dashboard serves Ray's state API,
    which Train's placement-group cleaner asks whether a controller is still alive (a trial stopped by
    ASHA, a killed driver). RAY_API_SERVER_ADDRESS, inherited by every local Ray process, points those
    queries at this instance even when other Ray instances run on the machine. The port follows the rule
    of every server nerlab starts (``mlflow_server.on_a_port``): one taken meanwhile means another try.
    """
    if ray.is_initialized():
        return False  # a caller's Ray (tests, a notebook): theirs to stop
    address = address or os.environ.get("RAY_ADDRESS")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    env = {"RAY_TRAIN_V2_ENABLED": "1", "MLFLOW_DISABLE_TELEMETRY": os.environ.get("MLFLOW_DISABLE_TELEMETRY", "true")}
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=True, **kwargs)
        return True
    # One machine: no spot preemption to watch for (the watcher is one more actor per job), and a
    # finished worker group is noticed after 0.5 s instead of 2 s (Ray's defaults suit clusters).
    # A value the user has set wins, in this process and in every worker alike.
    for k, v in LOCAL_TRAIN_ENV.items():
        env[k] = os.environ.setdefault(k, v)
    def start(port: int) -> None:
        os.environ["RAY_API_SERVER_ADDRESS"] = env["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        before = {p.pid for p in psutil.Process().children()}
        try:
            ray.init(include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
                     runtime_env={"env_vars": env}, **kwargs)
        except Exception as e:
            # a failed ray.init leaves what it started (GCS, monitor) behind, and ray.shutdown knows none of it
            for child in psutil.Process().children():
                if child.pid not in before:
                    for proc in (*child.children(recursive=True), child):
                        with suppress(psutil.Error):
                            proc.kill()
            if str(port) in str(e):  # the dashboard's port was taken (checked by Ray, or at the bind)
                raise PortLost(f"Ray's dashboard did not get port {port}: {e}") from e
            raise

    on_a_port(start, kwargs.pop("dashboard_port", None))
    return True


def local_capacity() -> dict[str, float]:
    """What a job can be given: the running Ray's resources, else what a local Ray would start with."""
    if ray.is_initialized():
        return dict(ray.cluster_resources())
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"CPU": float(cpus), "GPU": float(torch.cuda.device_count())}


def check_fits(resources, overhead_cpus: float, address: str | None, where: str,
               have: dict[str, float] | None = None) -> None:
    """Refuse, before anything starts, a job whose workers the local machine can never hold at once.

    Ray Train would otherwise wait for the placement group and fail the job (every trial of a study) a
    minute later. On a cluster, whose autoscaler may add nodes, this is left to Ray.
    """
    if address or os.environ.get("RAY_ADDRESS"):
        return
    have = local_capacity() if have is None else have
    gpu = resources.use_gpu if resources.use_gpu is not None else have.get("GPU", 0) >= 1
    for kind, amount in resources.need(gpu, overhead_cpus).items():
        if amount > have.get(kind, 0) + 1e-9:
            each = resources.cpus_per_worker if kind == "CPU" else resources.gpus_per_worker
            parts = f"{resources.workers} worker(s) x {each:g}"
            extra = f" + {overhead_cpus:g} for the trial" if kind == "CPU" and overhead_cpus else ""
            raise UsageError(f"{where}: one job needs {amount:g} {kind} ({parts}{extra}) but this machine's "
                             f"Ray has {have.get(kind, 0):g}; lower the workers or the {kind}s per worker")


def check_start(spec, resources, overhead_cpus: float, source: str, plms) -> tuple[str, str | None]:
    """What a job and a study check before anything starts (each a one-line error naming the key): the
    resources fit, the output folder is writable, the tracking store, the data files and the PLM folders
    in object storage (``plms``: the ones the job or study trains) are sound.
    Returns the tracking store's URI and the artifact location."""
    out = Path(spec.output)
    check_fits(resources, overhead_cpus, spec.ray_address, f"{source}: resources")
    check_precision(spec.precision, resources.use_gpu, source)
    uri, artifacts = T.resolve_tracking(spec.tracking.tracking_uri, out)
    writable_folder(out, f"{source}: output")
    check_store(uri, f"{source}: tracking.tracking_uri")
    if spec.data.synth is None:  # bad data fails before the output folder exists
        validate_files(spec.task, spec.data.train, spec.data.val, spec.data.test)
    check_remote_plms(plms, source)
    return uri, artifacts


def check_precision(precision: str, gpu: bool | None, source: str) -> None:
    """``bf16`` where the job runs on this machine's CPU (``resources.use_gpu: false``, or unset and no GPU here)
    and the CPU lacks bf16: refused before anything starts, never trained as fp32."""
    import torch

    on_cpu = gpu is False or (gpu is None and not torch.cuda.is_available())
    if precision == "bf16" and on_cpu and not cpu_bf16_supported():
        raise SpecError(f"{source}: {CPU_BF16_REFUSED}")


def use_gpu(spec: RunSpec) -> bool:
    if spec.resources.use_gpu is not None:
        return spec.resources.use_gpu
    return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) >= 1


def build_trainer(job: Job, storage: str, name: str, callbacks=()) -> TorchTrainer:
    spec = job.spec
    gpu = use_gpu(spec)
    per_worker = replace(spec.resources, workers=1).need(gpu)  # one worker's CPUs (and GPUs)
    path, fs = ray_storage(storage)
    config = {"spec": to_dict(spec), **{k: v for k, v in job.__dict__.items() if k != "spec"}}
    return TorchTrainer(
        train_fn_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=spec.resources.workers, use_gpu=gpu,
                                     resources_per_worker=per_worker),
        run_config=RunConfig(
            name=name, storage_path=path, storage_filesystem=fs, callbacks=list(callbacks),
            failure_config=FailureConfig(max_failures=spec.resources.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )


def open_run(spec: RunSpec, inputs: Inputs, job_key: str, tracking_uri: str, artifact_location: str | None,
             experiment: str, parent_run_id: str | None = None, extra_tags: dict | None = None,
             reuse_finished: bool = True, run_name: str | None = None):
    """The MLflow run of this job: found by its key, or created (named ``run_name``, else the spec's name)
    with params and tags."""
    client = T.MlflowClient(tracking_uri)
    exp_id = T.ensure_experiment(client, experiment, artifact_location)
    tags = {N.PLM_TAG: spec.model.plm, N.LOSS_TAG: spec.loss.name, N.PENALTY_TAG: str(spec.train.variance_penalty),
            N.SEED_TAG: str(spec.train.seed), N.TASK_TAG: spec.task, N.GIT_COMMIT_TAG: T.git_commit(),
            **(extra_tags or {})}
    run, created = T.find_or_create_run(client, exp_id, N.JOB_TAG, job_key, run_name=run_name or spec.name, tags=tags,
                                        parent_run_id=parent_run_id, reuse_finished=reuse_finished)
    params = T.spec_params(spec)
    params["inputs"] = {"train": inputs.train, "val": inputs.val, "test": inputs.test, "plm": inputs.plm}
    T.log_params(client, run.info.run_id, params, {} if created else None)
    T.log_datasets(client, run.info.run_id, {"train": inputs.train, "val": inputs.val, "test": inputs.test})
    return client, run


def job_for(spec: RunSpec, inputs: Inputs, tracking_uri: str, run_id: str) -> Job:
    """What every worker of this job gets (a Ray Train worker, or an inline trial's own process)."""
    return Job(spec=spec, train=inputs.train, val=inputs.val, test=inputs.test, plm=inputs.plm,
               tracking_uri=tracking_uri, run_id=run_id)


def run_job(spec: RunSpec, inputs: Inputs, tracking_uri: str, run_id: str, storage: str, name: str,
            callbacks=()) -> ray.train.Result:
    trainer = build_trainer(job_for(spec, inputs, tracking_uri, run_id), storage, name, callbacks)
    mark("job.fit_start")
    return trainer.fit()


RUN_FILE = "run.yaml"  # the resolved spec of the job in its output folder


def train(spec: RunSpec, workers: int | None = None, source: str = "spec", replace_old: bool = False,
          console=None, tags: dict[str, str] | None = None) -> JobResult:
    """``nerlab train``: one job, its own MLflow run, the model folder under the output folder.

    The output folder is the job's identity: one driver at a time, a finished job is not trained again
    (its result is returned), an interrupted one resumes from its last checkpoint, and a job whose spec
    changed is refused unless ``replace_old`` archives the old folder. ``console`` (a ``progress.Console``):
    a header and one line per epoch, Ray's own output in ``OUTPUT/logs/train.log`` unless verbose; None
    leaves output to Ray. ``tags``: more tags on the job's MLflow run.
    """
    if workers is not None:
        spec = replace(spec, resources=replace(spec.resources, workers=workers))
    out = Path(spec.output)
    uri, artifacts = check_start(spec, spec.resources, 0.0, source, (spec.model.plm,))
    key, experiment = f"{spec.name}@{out}", spec.tracking.experiment or spec.name
    with ExitStack() as stack:
        what = f"training job {spec.name} ({out})"
        stack.enter_context(ownership.FolderLock(out, what))
        saved = out / RUN_FILE
        again = False
        if saved.is_file():
            refusal = (f"{source}: {out} holds a job started with another spec ({{diff}}); give another --output, "
                       f"or add --replace to archive the old job and train anew")
            old = T.flatten(yaml.safe_load(saved.read_text(encoding="utf-8")))
            again = ownership.same_or_archived(stack, out, what, old, T.flatten(T.spec_params(spec)), replace_old,
                                               refusal)
            done = None if again else _finished_job(uri, experiment, key, out)
            if done is not None:
                return done
        view = None
        if console is not None:
            from nerlab.platform.studies.live_view import showing_job

            view = stack.enter_context(showing_job(console, spec))
        inputs = prepare(spec.task, spec.data, spec.model.plm, out / "prepared")
        T.create_store(uri)  # once, under the lock, before a worker or a reader opens it
        saved.write_text(yaml.safe_dump(T.spec_params(spec), allow_unicode=True, sort_keys=False))
        client, run = open_run(spec, inputs, key, uri, artifacts, experiment, reuse_finished=not again,
                               extra_tags=tags)
        run_id = run.info.run_id
        if connect_ray(spec.ray_address):
            stack.callback(ray.shutdown)  # also on SIGTERM/Ctrl-C: no Ray process outlives the command
        callbacks = stack.enter_context(view.following()) if view is not None else []
        try:
            result = run_job(spec, inputs, uri, run_id, str(out / "ray"), f"{spec.name}-{run_id[:8]}", callbacks)
        except BaseException:
            client.set_terminated(run_id, status="FAILED")
            raise
        return finish_job(client, run_id, result, out / "model")


def _finished_job(uri: str, experiment: str, key: str, out: Path) -> JobResult | None:
    """The result of this folder's job if it finished (its run FINISHED and its model folder there)."""
    db = T.sqlite_file(uri)
    if db is not None and not db.is_file():
        return None
    client = T.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    run = None if exp is None else T.find_run(client, exp.experiment_id, N.JOB_TAG, key)
    if run is None or run.info.status != "FINISHED" or not (out / N.MODEL_DIR).is_dir():
        return None
    m = run.data.metrics
    epochs = max((x.step for x in client.get_metric_history(run.info.run_id, N.VAL_F1)), default=0)
    return JobResult(run.info.run_id, m.get(N.BEST_VAL_F1, -1.0), m.get(N.TEST_F1, -1.0),
                     int(m.get(N.BEST_EPOCH, 0)), epochs, str(out / N.MODEL_DIR), finished_before=True)


def finish_job(client, run_id: str, result: ray.train.Result, model_dest: Path | None) -> JobResult:
    """Close the MLflow run and copy the model folder out of the final checkpoint."""
    if result.error is not None:
        client.set_terminated(run_id, status="FAILED")
        raise RuntimeError(f"training failed: {result.error}")
    m = result.metrics
    model_dir = None
    if model_dest is not None and result.checkpoint is not None:
        with result.checkpoint.as_directory() as d:
            if (Path(d) / N.MODEL_DIR).is_dir():
                shutil.rmtree(model_dest, ignore_errors=True)
                shutil.copytree(Path(d) / N.MODEL_DIR, model_dest)
                model_dir = str(model_dest)
    client.set_terminated(run_id, status="FINISHED")
    return JobResult(run_id, m[N.TUNE_VAL_F1], m.get(N.TUNE_TEST_F1, -1.0), m.get(N.TUNE_BEST_EPOCH, 0),
                     m.get(N.TUNE_EPOCH, 0), model_dir)
