"""The per-worker training loop: run by Ray Train on every DDP worker, or in a Tune trial's own process.

Each epoch: train on this rank's share of length-bucketed batches, score the whole validation set
(every rank predicts a shard, the shards are gathered, every rank scores the same result), checkpoint
(rank 0 writes, Ray persists), report, and log to MLflow on rank 0. A restarted worker group resumes
from the last checkpoint and fills in any epoch that reached the checkpoint but not MLflow.

Where the loop runs is a session (``sessions.py``: a Ray Train worker group, or a Tune trial's own process);
what rank 0 writes (MLflow, TensorBoard, output folders) is in ``rank0.py``; the epoch body and the evaluation
are the task's own (``models/training.py``).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file, save_model

from nerlab.dashboards.runs import logged_models
from nerlab.losses import LossConfig
from nerlab.models import names as N
from nerlab.models.encoding import WordPieces, encode
from nerlab.models.precision import autocast_dtype, precision_name
from nerlab.models.schema import LabelSchema
from nerlab.models.scoring import Report
from nerlab.models.tagger import MultiTaskTagger, load_tokenizer
from nerlab.models.training import (BestEpoch, epoch_batches, eval_batch_size, evaluate, loss_sum, make_optimizer,
                                    run_epoch, seed_everything, weights)
from nerlab.models.wojood import read_file
from nerlab.platform.tracking import runs as T
from nerlab.platform.tracking.storage import local
from nerlab.platform.specs.run import RunSpec
from nerlab.platform.training.rank0 import RankZeroLog, epoch_metrics, write_outputs
from nerlab.platform.training.sessions import TrainSession, TuneSession
from nerlab.platform.training.timeline import mark
from nerlab.platform.specs.loader import from_dict

mark("train_loop.imported")  # in a Train worker: its process is up and torch, transformers, Ray Train imported

STATE_FILE = "state.json"
FINAL_FILE = "final.json"  # in the last checkpoint only: the job is done, these are its final metrics
_CACHE: dict = {}  # per worker process: read + encoded corpora, keyed by file, tokenizer and length


@dataclass
class LoopState(BestEpoch):
    """Everything besides tensors that a resumed job needs: the best-epoch tracker and the epochs' entries."""

    history: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Job:
    """What the driver hands to every worker (plain data; paths absolute)."""

    spec: RunSpec
    train: str
    val: str
    test: str | None
    plm: str
    tracking_uri: str
    run_id: str

    def on_this_node(self) -> "Job":
        """This job with its inputs as paths on this node (``s3://`` ones fetched into the node's cache)."""
        return replace(self, train=local(self.train), val=local(self.val), test=local(self.test), plm=local(self.plm))

    @classmethod
    def from_config(cls, config: dict) -> "Job":
        return cls(spec=from_dict(RunSpec, config["spec"], "job"), **{k: v for k, v in config.items() if k != "spec"})


@dataclass
class Worker:
    """One DDP worker: where it runs, its model and what trains it; every helper below takes this."""

    rank: int
    world: int
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype, None for fp32
    model: MultiTaskTagger  # unwrapped (DDP shares its parameters)
    tokenizer: Any
    eval_batch_size: int
    job: Job | None = None
    opt: torch.optim.Optimizer | None = None
    sched: Any = None
    scaler: torch.amp.GradScaler | None = None
    loss: LossConfig | None = None
    log: "RankZeroLog | None" = None  # rank 0 only
    session: "TrainSession | TuneSession | None" = None

    @property
    def pad(self) -> int:
        return self.tokenizer.pad_token_id

    def evaluate(self, sentences, windows) -> tuple[Report, list]:
        """Score the whole set: every rank predicts its evaluation batches; all ranks see all predictions."""
        return evaluate(self.model, sentences, windows, self.model.schema.task, self.eval_batch_size, self.pad,
                        self.device, self.dtype, self.rank, self.world, gather=_all_gather)

    def val_loss(self, windows) -> float:
        """Validation loss over the whole set: every rank sums its evaluation batches, the sums are added."""
        total, n = loss_sum(self.model, windows, self.eval_batch_size, self.pad, self.loss, self.job.spec.train,
                            self.device, self.dtype, self.rank, self.world)
        sums = torch.tensor([total, n], dtype=torch.float64, device=self.device)  # NCCL reduces only GPU tensors
        if self.world > 1:
            dist.all_reduce(sums)
        return float(sums[0] / sums[1].clamp(min=1))

    def save_checkpoint(self, folder: Path, state: LoopState, best: dict | None) -> None:
        save_model(self.model, str(folder / "model.safetensors"))
        if best is not None:
            save_file(best, str(folder / "best.safetensors"))
        torch.save({"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                    "scaler": self.scaler.state_dict()}, folder / "optim.pt")
        (folder / STATE_FILE).write_text(json.dumps(asdict(state)))

    def load_checkpoint(self, folder: Path) -> tuple[LoopState, dict | None]:
        self.model.load_state_dict(load_file(str(folder / "model.safetensors"), device=str(self.device)))
        optim = torch.load(folder / "optim.pt", map_location=self.device, weights_only=True)
        self.opt.load_state_dict(optim["optimizer"])
        self.sched.load_state_dict(optim["scheduler"])
        if optim.get("scaler"):
            self.scaler.load_state_dict(optim["scaler"])
        best = load_file(str(folder / "best.safetensors")) if (folder / "best.safetensors").exists() else None
        return LoopState(**json.loads((folder / STATE_FILE).read_text())), best


def _all_gather(part) -> list:
    """Every rank's ``part``, in rank order."""
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, part)
    return parts


def _corpus(path: str, task: str, tokenizer, tok_key: str, schema: LabelSchema, max_length: int):
    key = (path, task, tok_key, schema.types, max_length)
    if key not in _CACHE:
        sentences = read_file(path, task=task)
        pieces = _CACHE.setdefault(("pieces", tok_key), WordPieces(tokenizer))
        _CACHE[key] = (sentences, encode(sentences, tokenizer, schema, max_length, pieces))
    return _CACHE[key]


def _grad_scaler(dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler:
    """fp16 autocast trains through a gradient scaler (small gradients would underflow); bf16 and fp32 need
    none (a disabled scaler passes the loss and the steps through unchanged)."""
    return torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)


def train_fn_per_worker(config: dict) -> None:
    """Ray Train's entry point on every worker."""
    run_worker(Job.from_config(config), TrainSession())


def run_worker(job: Job, session: TrainSession | TuneSession) -> None:
    mark("worker.start")
    job = job.on_this_node()
    checkpoint = session.checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            final = Path(d) / FINAL_FILE
            if final.is_file():  # the job had finished (its driver died before hearing so): report it again
                session.report(json.loads(final.read_text()))
                return
    spec, cfg = job.spec, job.spec.train
    rank, world, device = session.rank, session.world, session.device
    seed_everything(cfg.seed)  # same init on every rank; DDP also broadcasts rank 0's weights

    tokenizer = load_tokenizer(job.plm, spec.model.trust_remote_code)
    mark("worker.tokenizer_loaded")
    schema = LabelSchema.wojood(spec.task)
    train_s, train_w = _corpus(job.train, spec.task, tokenizer, job.plm, schema, spec.model.max_length)
    val_s, val_w = _corpus(job.val, spec.task, tokenizer, job.plm, schema, spec.model.max_length)
    mark("worker.data_encoded")
    model = MultiTaskTagger.from_plm(job.plm, schema, spec.model.tagger(job.plm), spec.model.trust_remote_code)
    dtype = autocast_dtype(spec.precision, device)
    model.precision = precision_name(dtype)  # saved with the model, which predicts in it
    w = Worker(rank, world, device, dtype, model.to(device), tokenizer,
               eval_batch_size(cfg, spec.model.reference), job, loss=spec.loss.to_loss_config(),
               log=RankZeroLog(job) if rank == 0 else None,
               session=session)
    try:
        steps_per_epoch = len(epoch_batches([len(x) for x in train_w], cfg, 0, rank, world))
        w.opt, w.sched = make_optimizer(model, cfg, steps_per_epoch * cfg.epochs)
        w.scaler = _grad_scaler(w.dtype, device)
        mark("worker.model_built")
        state, best = LoopState(), None
        if checkpoint:
            with checkpoint.as_directory() as d:
                state, best = w.load_checkpoint(Path(d))
            if best is None and state.best_epoch == state.epoch:  # the checkpointed weights are the best
                best = weights(model, "cpu")
        ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
        names = list(schema.types) + (["FLAT"] if spec.model.flat_head else [])
        nodes = [ray.util.get_node_ip_address()] * world  # each rank's node, in rank order (this attempt's)
        if world > 1:
            dist.all_gather_object(nodes, nodes[0])
        if w.log:
            T.set_tags(w.log.client, w.log.run_id, {
                N.WORKER_NODES_TAG: ",".join(nodes), N.DEVICE_TAG: device.type,
                N.PRECISION_TAG: precision_name(w.dtype)})
            for entry in state.history:  # epochs that reached the checkpoint but maybe not MLflow
                w.log.epoch(entry)
        mark("worker.setup_done")

        while not state.stopped and state.epoch < cfg.epochs:
            epoch = state.epoch + 1
            lr = w.sched.get_last_lr()[0]
            started = time.perf_counter()
            mark("worker.epoch_start", epoch=epoch)
            stats = run_epoch(ddp, train_w, epoch, w.opt, w.sched, w.loss, cfg, device, w.pad, w.dtype, w.scaler,
                              rank, world)
            mark("worker.epoch_trained", epoch=epoch)
            tokens = torch.tensor([stats.tokens], dtype=torch.float64, device=device)
            if world > 1:
                dist.all_reduce(tokens)
            report, _ = w.evaluate(val_s, val_w)
            entry = epoch_metrics(epoch, stats, report, lr, float(tokens) / max(stats.seconds, 1e-9), names)
            if cfg.select_by == "val_loss":  # as the reference system did: the loss it trains on without the penalty
                entry["metrics"][N.VAL_LOSS] = w.val_loss(val_w)
            if state.update(cfg, epoch, report.micro.f1, entry["metrics"].get(N.VAL_LOSS)):
                best = weights(model, "cpu")
            state.history.append(entry)
            mark("worker.epoch_scored", epoch=epoch)
            if w.log:  # MLflow before Tune: a trial that ASHA stops at this report keeps this epoch's metrics
                w.log.epoch(entry)
            mark("worker.epoch_logged", epoch=epoch)
            _report_epoch(w, entry, state, best, started)
            mark("worker.epoch_reported", epoch=epoch)

        _finish(w, state, best, val_s, val_w)
    finally:  # stopped by Tune (SystemExit at a report), failed, or done
        if w.log:
            w.log.close()


def _report_epoch(w: Worker, entry: dict, state: LoopState, best: dict | None, started: float) -> None:
    """Checkpoint (rank 0 writes) and report; every rank reports once per epoch (``started``: the epoch's start,
    ``time.perf_counter``)."""
    metrics = {N.TUNE_EPOCH: entry["epoch"], N.TUNE_VAL_F1: entry["metrics"][N.VAL_F1],
               N.TUNE_TRAIN_LOSS: entry["metrics"][N.TRAIN_LOSS], N.TUNE_FINAL: False}
    with tempfile.TemporaryDirectory() as d:
        folder = None
        if w.rank == 0:
            folder = Path(d)
            w.save_checkpoint(folder, state, None if state.best_epoch == state.epoch else best)
        metrics[N.TUNE_EPOCH_SECONDS] = time.perf_counter() - started
        w.session.report(metrics, folder)


def _finish(w: Worker, state: LoopState, best: dict | None, val_s, val_w) -> None:
    """Best weights -> validation and test predictions, the model folder, artifacts, a final report."""
    job = w.job
    if best is not None:
        w.model.load_state_dict(best)
    val_report, val_pred = w.evaluate(val_s, val_w)
    mark("worker.final_val_scored")
    test_report = test_pred = None
    if job.test:
        spec = job.spec
        test_report, test_pred = w.evaluate(*_corpus(job.test, spec.task, w.tokenizer, job.plm, w.model.schema,
                                                     spec.model.max_length))
    final = {N.TUNE_EPOCH: state.epoch, N.TUNE_BEST_EPOCH: state.best_epoch, N.TUNE_VAL_F1: val_report.micro.f1,
             N.TUNE_TEST_F1: test_report.micro.f1 if test_report else -1.0, N.TUNE_FINAL: True}
    mark("worker.final_test_scored")
    with tempfile.TemporaryDirectory() as d:
        folder = None
        if w.rank == 0:
            folder = out = Path(d)
            log = w.log
            w.model.save(out / N.MODEL_DIR, w.tokenizer)
            write_outputs(out, job.spec, w.model.schema, val_report, val_pred, test_report, test_pred)
            metrics = {N.BEST_EPOCH: state.best_epoch, N.BEST_VAL_F1: val_report.micro.f1}
            if test_report:
                metrics[N.TEST_F1] = test_report.micro.f1
                metrics.update({N.TEST_TYPE_F1.format(t): s.f1 for t, s in test_report.per_type.items()})
            mark("worker.outputs_written")
            log.system.stop()
            T.log_metrics(log.client, log.run_id, metrics, step=state.epoch)
            # the weights go to MLflow once, as the run's MLflow Model below (no plain model/ artifact beside it);
            # the model folder stays in the checkpoint, for `nerlab train --output DIR`'s DIR/model
            for sub in (N.CONFIG_DIR, N.REPORTS_DIR, N.PREDICTIONS_DIR):
                log.artifacts(out / sub, sub)
            log.tb.close()
            log.artifacts(log.tb_dir, N.TENSORBOARD_DIR)
            if not logged_models(log.client, log.run_id, N.PYFUNC_MODEL):  # a resumed job logged it already
                from nerlab.platform.tracking.logged_model import log_tagger

                log_tagger(out / N.MODEL_DIR, log.run_id, job.tracking_uri, val_s[0].tokens[:16] if val_s else ["."],
                           step=state.epoch)
            (out / FINAL_FILE).write_text(json.dumps(final))
            mark("worker.artifacts_logged")
        w.session.report(final, folder)
        mark("worker.final_reported")
