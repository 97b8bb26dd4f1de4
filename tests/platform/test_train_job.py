"""A training job end to end on a real local Ray and a real MLflow SQLite store.

Tiny synthetic data and a tiny BERT keep every job to seconds; one Ray instance (2 CPUs)
serves the whole module. The bad-spec tests hold in any order: they check that the job never asks for Ray.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from nerlab.models.scoring import score
from nerlab.models.wojood import WOJOOD_TYPES, nested_spans, read_file
from nerlab.platform.cli import main as cli_main
from nerlab.platform.training.job import JobResult, train
from nerlab.platform.specs.run import RunSpec, load_run_spec

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 6  # enough that a worker killed after epoch 1 dies mid-run
LEARNED_F1 = 0.3  # validation micro-F1 the tiny job must reach: well clear of an all-O tagger's 0
EPOCH_METRICS = ["train/loss", "train/variance_penalty", "val/micro_f1", "train/lr", "train/tokens_per_second"]


def tiny_spec(folder: Path, name: str) -> dict:
    """A tiny job's spec (300 synthetic sentences, a 2x32 BERT, 2 workers of half a CPU).

    The large learning rate gets the random tiny encoder to a non-zero F1 within an epoch or two, so
    that comparing scores means something.
    """
    return {
        "name": name, "task": "nested",
        "data": {"synth": {"sentences": 300, "seed": 0}},
        "model": {"plm": "tiny:2x32", "max_length": 64},
        "loss": {"preset": "unified"},
        "train": {"epochs": EPOCHS, "batch_size": 8, "lr": 1.0e-2, "variance_penalty": 5.0, "seed": 3407},
        "resources": {"workers": 2, "cpus_per_worker": 0.5, "max_failures": 2},
        "output": str(folder / "out"),
    }


def history(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for f in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, f.path) if f.is_dir else {f.path}
    return out


def spec_from_dict(data: dict) -> RunSpec:
    from nerlab.platform.specs.loader import from_dict

    return from_dict(RunSpec, data, "resolved_spec.yaml")


def gold_types(path: str) -> set[str]:
    return {typ for s in read_file(path, task="nested") for typ, _, _ in nested_spans(s)}


def train_worker_pids(state: str) -> dict[str, int]:
    """Ray Train worker actors (actor id -> pid) in ``state``, read from the GCS actor table.

    Read straight from the GCS of the Ray instance this process joined, so that no other Ray instance on
    the machine (and no dashboard) is involved.
    """
    from ray._private.state import actors

    return {aid: a["Pid"] for aid, a in actors().items()
            if "RayTrainWorker" in a["ActorClassName"] and a["State"] == state}


# ---- bad specs: exit 2, one line naming file and key, nothing started --------------------------------------
BAD_SPECS = {
    "unknown key": ({"train": {"lrr": 1e-3}}, ["train.lrr", "unknown key"]),
    "wrong type": ({"train": {"epochs": "many"}}, ["train.epochs", "expected int"]),
    "missing data file": ({"data": {"synth": None, "train": "nowhere/train.txt", "val": "nowhere/val.txt"}},
                          ["data.train", "no such file"]),
    "unknown plm": ({"model": {"plm": "not a plm"}}, ["model.plm", "not a plm"]),
    "negative penalty": ({"train": {"variance_penalty": -1.0}}, ["train", "variance_penalty", ">= 0"]),
}


@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_bad_spec_exits_2_before_starting_anything(case, tmp_path, capsys, spec_file, monkeypatch) -> None:
    """Whether or not this process runs Ray already (the module's jobs may have run first): the job never
    asks for Ray (``connect_ray``, recorded and passed through) and leaves no file behind."""
    from nerlab.platform.training import job as jobs

    changes, expected = BAD_SPECS[case]
    path = spec_file(tmp_path / "bad.yaml", tiny_spec(tmp_path, "bad"), **changes)
    ray_before, asked = ray.is_initialized(), []
    real = jobs.connect_ray
    monkeypatch.setattr(jobs, "connect_ray", lambda *a, **kw: asked.append(a) or real(*a, **kw))

    code = cli_main(["train", str(path), "--output", str(tmp_path / "out")])

    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and all(e in err for e in expected), err
    assert asked == [] and ray.is_initialized() is ray_before
    assert not list(tmp_path.rglob("mlflow.db")) and not (tmp_path / "out").exists()


# ---- fixtures that start Ray and run jobs ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_job_run(tmp_path_factory, spec_file) -> tuple[RunSpec, subprocess.CompletedProcess]:
    """A 2-worker job that nothing interrupted, run as users run it: ``nerlab train`` in a process of its own
    (with its own Ray), its output captured."""
    folder = tmp_path_factory.mktemp("tiny-job")
    path = spec_file(folder / "tiny-job.yaml", tiny_spec(folder, "tiny-job"))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    p = subprocess.run([sys.executable, "-m", "nerlab.platform.cli", "train", str(path)], cwd=folder, env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    return load_run_spec(path), p


@pytest.fixture(scope="module")
def tiny_job(tiny_job_run) -> tuple[RunSpec, JobResult]:
    """That job and its result (``train`` on its finished folder reads it back; nothing is trained again)."""
    spec, _ = tiny_job_run
    result = train(spec)
    assert result.finished_before
    return spec, result


EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+)  train loss (\d+\.\d{4})  val F1 (\d\.\d{4})  \d+\.\ds$")


def test_train_prints_a_header_a_line_per_epoch_and_the_result(tiny_job_run, tiny_job) -> None:
    """The console of ``nerlab train``: a header, one line per epoch with the numbers the run logged, the result
    line; Ray's and the workers' own output only in OUTPUT/logs/train.log."""
    (spec, p), (_, result) = tiny_job_run, tiny_job
    out = Path(spec.output)
    lines = p.stdout.splitlines()
    assert len(lines) == 2 + EPOCHS + 1, p.stdout
    assert lines[0] == f"train tiny-job: nested, tiny:2x32, 2 worker(s), {EPOCHS} epochs; output {out}"
    assert lines[1] == f"Ray's and the workers' output: {out / 'logs/train.log'} (--verbose shows it here)"
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    loss, f1 = values(client, result.run_id, "train/loss"), values(client, result.run_id, "val/micro_f1")
    epochs = [EPOCH_LINE.match(line) for line in lines[2:2 + EPOCHS]]
    assert all(epochs), lines
    assert [(int(m[1]), int(m[2]), m[3], m[4]) for m in epochs] == \
        [(e + 1, EPOCHS, f"{loss[e]:.4f}", f"{f1[e]:.4f}") for e in range(EPOCHS)]
    assert lines[-1] == (f"run {result.run_id}: val micro-F1 {result.val_f1:.4f}, test micro-F1 "
                         f"{result.test_f1:.4f} (best epoch {result.best_epoch} of {EPOCHS}); model in {out / 'model'}")
    assert p.stderr == ""
    log = (out / "logs" / "train.log").read_text(errors="replace")
    assert "Started a local Ray instance" in log and "(RayTrainWorker pid=" in log  # Ray's, and the workers'
    assert "(TrainController pid=" in log and "Reporting training result" in log


def test_job_logs_params_metrics_tags_and_artifacts(tiny_job) -> None:
    spec, result = tiny_job
    out = Path(spec.output)
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name(spec.name).experiment_id])
    assert run.info.run_id == result.run_id and run.info.status == "FINISHED"
    assert result.epochs == EPOCHS and 1 <= result.best_epoch <= EPOCHS

    params = run.data.params
    assert {"name": "tiny-job", "model.plm": "tiny:2x32", "model.max_length": "64",
            "train.epochs": str(EPOCHS), "train.variance_penalty": "5.0", "resources.workers": "2",
            "data.synth.sentences": "300", "loss.preset": "unified"}.items() <= params.items()
    assert params["output"] == str(out) and params["inputs.train"].startswith(str(out / "prepared"))

    epochs = list(range(1, EPOCHS + 1))
    per_type_loss = [f"train/loss_{t}" for t in WOJOOD_TYPES]
    for key in EPOCH_METRICS + per_type_loss:
        assert history(client, run.info.run_id, key) == epochs, key
    val_file = params["inputs.val"]
    for typ in gold_types(val_file):  # a type in the gold data is scored every epoch
        assert history(client, run.info.run_id, f"val/f1_{typ}") == epochs, typ
    val_f1 = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "val/micro_f1"),
                                      key=lambda m: m.step)]
    assert result.best_epoch == 1 + val_f1.index(max(val_f1))  # the first epoch with the best F1
    assert run.data.metrics["best/val/micro_f1"] == max(val_f1) == result.val_f1
    assert result.val_f1 >= LEARNED_F1, val_f1  # it learned, and the loss it trained on fell
    train_loss = values(client, run.info.run_id, "train/loss")
    assert train_loss[-1] < train_loss[0], train_loss

    assert run.data.tags["plm"] == "tiny:2x32" and run.data.tags["loss"] == "unified"
    commit = run.data.tags["git_commit"]  # the checkout's commit; HEAD may have moved on since the job ran
    is_ancestor = subprocess.run(["git", "-C", str(ROOT), "merge-base", "--is-ancestor", commit, "HEAD"])
    assert len(commit) == 40 and is_ancestor.returncode == 0, commit

    files = artifact_paths(client, run.info.run_id)
    assert {"config/resolved_spec.yaml", "config/label_schema.json", "reports/val_report.json",
            "reports/test_report.json", "reports/test_report.txt", "predictions/val.txt",
            "predictions/test.txt"} <= files
    # the weights are stored once: in the run's MLflow Model, not also as a plain model/ artifact
    assert not [f for f in files if f.startswith("model/")]
    (output,) = run.outputs.model_outputs
    stored = Path(client.get_logged_model(output.model_id).artifact_location.removeprefix("file://"))
    assert [p.name for p in stored.rglob("model.safetensors")] == ["model.safetensors"]
    assert list(stored.rglob("nerlab_model.json"))
    assert any(f.startswith("tensorboard/events.out.tfevents") for f in files)
    resolved = yaml.safe_load(Path(client.download_artifacts(run.info.run_id, "config/resolved_spec.yaml"))
                              .read_text(encoding="utf-8"))
    assert spec_from_dict(resolved) == spec  # the spec round-trips


def test_saved_model_reproduces_logged_test_f1(tiny_job, capsys) -> None:
    from nerlab.models.predict import predict
    from nerlab.models.tagger import MultiTaskTagger

    spec, result = tiny_job
    client = MlflowClient(f"sqlite:///{Path(spec.output) / 'mlflow.db'}")
    run = client.get_run(result.run_id)
    logged = run.data.metrics["test/micro_f1"]
    test_file = run.data.params["inputs.test"]

    model, tokenizer = MultiTaskTagger.load(Path(spec.output) / "model")
    gold = read_file(test_file, task="nested")
    assert score(gold, predict(model, tokenizer, gold, "nested"), "nested").micro.f1 == logged == result.test_f1

    predictions = client.download_artifacts(result.run_id, "predictions/test.txt")
    capsys.readouterr()
    code = cli_main(["evaluate", "--gold", test_file, "--pred", predictions, "--task", "nested", "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["micro"]["f1"] == logged


def test_validation_f1_of_2_workers_equals_1_process(ray_2_cpus, tiny_job, tmp_path) -> None:
    """Sharded prediction + gather scores exactly what one process scores with the same weights."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from nerlab.models.encoding import encode
    from nerlab.models.tagger import MultiTaskTagger
    from nerlab.models.training import evaluate

    spec, result = tiny_job
    val_file = MlflowClient(f"sqlite:///{Path(spec.output) / 'mlflow.db'}").get_run(
        result.run_id).data.params["inputs.val"]

    def eval_per_worker(config: dict) -> None:  # a closure, so Ray pickles it by value
        import json
        from pathlib import Path

        import ray.train
        import ray.train.torch

        from nerlab.models.encoding import encode
        from nerlab.models.tagger import MultiTaskTagger
        from nerlab.models.wojood import read_file
        from nerlab.platform.training.worker import Worker

        model, tok = MultiTaskTagger.load(config["model"])
        sentences = read_file(config["val"], task="nested")
        windows = encode(sentences, tok, model.schema, model.config.max_length)
        ctx = ray.train.get_context()
        worker = Worker(ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device(), None, model, tok, 8)
        report, _ = worker.evaluate(sentences, windows)
        # A file per rank: Train V2's Result keeps only metrics reported with a checkpoint.
        out = Path(config["out"]) / f"rank{ctx.get_world_rank()}.json"
        out.write_text(json.dumps({"f1": report.micro.f1, "world": ctx.get_world_size()}))

    trainer = TorchTrainer(
        eval_per_worker, train_loop_config={"model": result.model_dir, "val": val_file, "out": str(tmp_path)},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(name="gather-eval", storage_path=str(tmp_path / "ray")))
    assert trainer.fit().error is None
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    model, tok = MultiTaskTagger.load(result.model_dir)
    sentences = read_file(val_file, task="nested")
    windows = encode(sentences, tok, model.schema, model.config.max_length)
    single, _ = evaluate(model, sentences, windows, "nested", 32, tok.pad_token_id)
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["f1"] == ranks[1]["f1"] == single.micro.f1 > 0


def test_killed_worker_resumes_into_the_same_mlflow_run(ray_2_cpus, tiny_job, tmp_path, spec_file,
                                                        capfd) -> None:
    """SIGKILL a worker after epoch 1: the job resumes from its checkpoint, logs every epoch once into
    its one MLflow run, and trains exactly as the same job did uninterrupted (``tiny_job``). Its console is
    verbose (``nerlab train --verbose``): the epoch lines and Ray's and the workers' output, as Ray prints it."""
    from nerlab.platform.studies.live_view import Console

    spec = load_run_spec(spec_file(tmp_path / "killed-job.yaml", tiny_spec(tmp_path, "killed-job")))
    before = set(train_worker_pids("ALIVE")) | set(train_worker_pids("DEAD"))
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = train(spec, console=Console(verbose=True))
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    checkpointed = wait_for_checkpoint(spec, thread)
    client = MlflowClient(f"sqlite:///{Path(spec.output) / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name(spec.name).experiment_id])
    run_id = run.info.run_id

    alive = {a: p for a, p in train_worker_pids("ALIVE").items() if a not in before}
    assert len(alive) == 2, alive
    victim_actor, victim = sorted(alive.items())[0]
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=600)

    assert not thread.is_alive() and "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result.epochs == EPOCHS and result.run_id == run_id
    assert victim_actor in train_worker_pids("DEAD")
    started = (set(train_worker_pids("ALIVE")) | set(train_worker_pids("DEAD"))) - before
    assert len(started) > 2, "the worker group was never restarted: the kill came too late"
    assert 1 <= checkpointed < EPOCHS  # so the new group resumed from a checkpoint, mid-run

    exp = client.get_experiment_by_name(spec.name)
    (run,) = client.search_runs([exp.experiment_id], run_view_type=3)  # 3: active and deleted runs
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    epochs = list(range(1, EPOCHS + 1))
    for key in EPOCH_METRICS:
        assert history(client, run_id, key) == epochs, key
    assert history(client, run_id, "test/micro_f1") == [EPOCHS]
    assert tensorboard_steps(client, run_id, "val/micro_f1") == epochs

    reference_spec, reference = tiny_job
    ref_client = MlflowClient(f"sqlite:///{Path(reference_spec.output) / 'mlflow.db'}")
    for key in ("train/loss", "val/micro_f1"):
        assert values(client, run_id, key) == values(ref_client, reference.run_id, key), key
    assert (result.val_f1, result.test_f1, result.best_epoch) == (reference.val_f1, reference.test_f1,
                                                                   reference.best_epoch)
    shown = capfd.readouterr()
    lines = shown.out.splitlines()
    assert any(ln.startswith("train killed-job: nested, tiny:2x32, 2 worker(s)") for ln in lines), shown.out[:500]
    assert "logs/train.log" not in shown.out  # verbose: no log file named, Ray's output is here
    epochs = {int(m[1]) for m in map(EPOCH_LINE.match, lines) if m}
    assert epochs == set(range(1, EPOCHS + 1)), shown.out[-3000:]
    assert "(RayTrainWorker pid=" in shown.out + shown.err and "(TrainController pid=" in shown.out + shown.err
    assert not (Path(spec.output) / "logs" / "train.log").exists()


def values(client: MlflowClient, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def wait_for_checkpoint(spec: RunSpec, thread: threading.Thread) -> int:
    """The epoch of the job's first checkpoint that Ray Train has registered (its snapshot lists it).

    Waiting for the registration, not just for a report or an MLflow metric, makes sure a restarted
    worker group resumes from a checkpoint instead of starting over.
    """
    while thread.is_alive():
        for snapshot in (Path(spec.output) / "ray").glob("*/checkpoint_manager_snapshot.json"):
            try:
                latest = json.loads(snapshot.read_text())["latest_checkpoint_result"]
            except (ValueError, KeyError, OSError):  # being written
                continue
            if latest and latest["metrics"].get("epoch", 0) >= 1:
                return latest["metrics"]["epoch"]
        time.sleep(0.1)
    pytest.fail("the job ended before its first checkpoint was registered")


def tensorboard_steps(client: MlflowClient, run_id: str, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = client.download_artifacts(run_id, "tensorboard")
    acc = EventAccumulator(folder)
    acc.Reload()
    return sorted(e.step for e in acc.Scalars(tag))
