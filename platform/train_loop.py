"""The per-worker training loop that Ray Train runs on every DDP worker.

Each epoch: train on this rank's share of length-bucketed batches, score the whole validation set
(every rank predicts a shard, the shards are gathered, every rank scores the same result), checkpoint
(rank 0 writes, Ray persists), report, and log to MLflow on rank 0. A restarted worker group resumes
from the last checkpoint and fills in any epoch that reached the checkpoint but not MLflow.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file, save_model

from nerlab.models.encoding import WordPieces, encode, iter_batches, shard
from nerlab.models.predict import assemble, predict_windows
from nerlab.models.schema import LabelSchema
from nerlab.models.scoring import Report, score
from nerlab.models.tagger import MultiTaskTagger, TaggerConfig, load_tokenizer
from nerlab.models.training import loss_sum, make_optimizer, seed_everything, train_batches, train_epoch
from nerlab.models.wojood import format_sentences, read_file
from nerlab.platform import tracking as T
from nerlab.platform.run_spec import RunSpec
from nerlab.platform.typed import from_dict

STATE_FILE = "state.json"
FINAL_FILE = "final.json"  # in the last checkpoint only: the job is done, these are its final metrics
_CACHE: dict = {}  # per worker process: read + encoded corpora, keyed by file, tokenizer and length


@dataclass
class LoopState:
    """Everything besides tensors that a resumed job needs."""

    epoch: int = 0  # last finished epoch (1-based)
    best_epoch: int = 0
    best_score: float = float("-inf")
    bad_epochs: int = 0
    stopped: bool = False
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

    @classmethod
    def from_config(cls, config: dict) -> "Job":
        return cls(spec=from_dict(RunSpec, config["spec"], "job"), **{k: v for k, v in config.items() if k != "spec"})


def _corpus(path: str, task: str, tokenizer, tok_key: str, schema: LabelSchema, max_length: int):
    key = (path, task, tok_key, schema.types, max_length)
    if key not in _CACHE:
        sentences = read_file(path, task=task)
        pieces = _CACHE.setdefault(("pieces", tok_key), WordPieces(tokenizer))
        _CACHE[key] = (sentences, encode(sentences, tokenizer, schema, max_length, pieces))
    return _CACHE[key]


def _autocast_dtype(precision: str, device: torch.device):
    """Autocast dtype on a GPU (fp16 trains with a gradient scaler); CPU jobs always run fp32."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def _gather_eval(model, sentences, windows, task: str, batch_size: int, pad_id: int, device, dtype
                 ) -> tuple[Report, list]:
    """Score the whole set: every rank predicts windows[rank::world]; all ranks see all predictions."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    mine = list(range(rank, len(windows), world))
    heads, flat = predict_windows(model, [windows[i] for i in mine], batch_size, pad_id, device, dtype)
    parts = [(mine, heads, flat)]
    if world > 1:
        parts = [None] * world
        dist.all_gather_object(parts, (mine, heads, flat))
    all_heads, all_flat = [None] * len(windows), [None] * len(windows)
    for idx, h, f in parts:
        for i, hh, ff in zip(idx, h, f):
            all_heads[i], all_flat[i] = hh, ff
    pred = assemble(sentences, windows, all_heads, all_flat, model.schema, task, model.config.flat_decoding)
    return score(sentences, pred, task), pred


def _gather_loss(model, windows, cfg, loss_spec, pad_id: int, device, dtype) -> float:
    """Validation loss over the whole set: every rank sums windows[rank::world], the sums are added."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    total, n = loss_sum(model, windows[rank::world], cfg.batch_size * 2, pad_id, loss_spec, cfg, device, dtype)
    sums = torch.tensor([total, n], dtype=torch.float64, device=device)  # NCCL reduces only GPU tensors
    if world > 1:
        dist.all_reduce(sums)
    return float(sums[0] / sums[1].clamp(min=1))


def _save_checkpoint(folder: Path, model, opt, sched, scaler, state: LoopState, best: dict | None) -> None:
    save_model(model, str(folder / "model.safetensors"))
    if best is not None:
        save_file(best, str(folder / "best.safetensors"))
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict()},
               folder / "optim.pt")
    (folder / STATE_FILE).write_text(json.dumps(asdict(state)))


def _load_checkpoint(folder: Path, model, opt, sched, scaler, device) -> tuple[LoopState, dict | None]:
    model.load_state_dict(load_file(str(folder / "model.safetensors"), device=str(device)))
    optim = torch.load(folder / "optim.pt", map_location=device, weights_only=True)
    opt.load_state_dict(optim["optimizer"])
    sched.load_state_dict(optim["scheduler"])
    if optim.get("scaler"):
        scaler.load_state_dict(optim["scaler"])
    best = load_file(str(folder / "best.safetensors")) if (folder / "best.safetensors").exists() else None
    return LoopState(**json.loads((folder / STATE_FILE).read_text())), best


def _epoch_metrics(epoch: int, stats, report: Report, lr: float, tokens_per_s: float, names: list[str]) -> dict:
    m = {T.TRAIN_LOSS: stats.loss, T.TRAIN_PENALTY: stats.penalty, T.LR: lr, T.TOKENS_PER_S: tokens_per_s,
         T.EPOCH_SECONDS: stats.seconds, T.VAL_F1: report.micro.f1, T.VAL_P: report.micro.precision,
         T.VAL_R: report.micro.recall}
    m.update({T.TRAIN_TASK_LOSS.format(n): v for n, v in zip(names, stats.task_losses)})
    m.update({T.VAL_TYPE_F1.format(t): s.f1 for t, s in report.per_type.items()})
    return {"epoch": epoch, "metrics": m}


class RankZeroLog:
    """MLflow and TensorBoard writes of rank 0.

    MLflow writes are idempotent per epoch (a resumed job skips the epochs its run already holds).
    TensorBoard gets every epoch: each attempt writes a fresh events folder, and only the last attempt's
    folder becomes the run's artifact, so it must hold the epochs of earlier attempts too.
    """

    def __init__(self, job: Job, tb_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.client, self.run_id = T.MlflowClient(job.tracking_uri), job.run_id
        self.tb_dir = tb_dir
        self.tb = SummaryWriter(str(tb_dir))
        self.done = T.logged_steps(self.client, self.run_id)

    def epoch(self, entry: dict) -> None:
        for k, v in entry["metrics"].items():
            self.tb.add_scalar(k, v, entry["epoch"])
        self.tb.flush()
        if entry["epoch"] not in self.done:
            T.log_metrics(self.client, self.run_id, entry["metrics"], step=entry["epoch"])
            self.done.add(entry["epoch"])

    def artifacts(self, folder: Path, path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(folder), path)


def train_fn_per_worker(config: dict) -> None:
    job = Job.from_config(config)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            final = Path(d) / FINAL_FILE
            if final.is_file():  # the job had finished (its driver died before hearing so): report it again
                ray.train.report(json.loads(final.read_text()))
                return
    spec, cfg = job.spec, job.spec.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    dtype = _autocast_dtype(spec.precision, device)
    seed_everything(cfg.seed)  # same init on every rank; DDP also broadcasts rank 0's weights

    tokenizer = load_tokenizer(job.plm, spec.model.trust_remote_code)
    schema = LabelSchema.wojood(spec.task)
    train_s, train_w = _corpus(job.train, spec.task, tokenizer, job.plm, schema, spec.model.max_length)
    val_s, val_w = _corpus(job.val, spec.task, tokenizer, job.plm, schema, spec.model.max_length)
    tagger_cfg = TaggerConfig(plm=job.plm, dropout=spec.model.dropout, flat_head=spec.model.flat_head,
                              flat_decoding=spec.model.flat_decoding, max_length=spec.model.max_length,
                              normalisation=spec.model.normalisation)
    model = MultiTaskTagger.from_plm(job.plm, schema, tagger_cfg, spec.model.trust_remote_code).to(device)
    lengths = [len(w) for w in train_w]
    steps_per_epoch = len(shard(train_batches(lengths, cfg, cfg.seed), rank, world, even=True))
    opt, sched = make_optimizer(model, cfg, steps_per_epoch * cfg.epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    state, best = LoopState(), None
    if checkpoint:
        with checkpoint.as_directory() as d:
            state, best = _load_checkpoint(Path(d), model, opt, sched, scaler, device)
        if best is None and state.best_epoch == state.epoch:  # the checkpointed weights are the best
            best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    loss_spec = spec.loss.to_loss_spec()
    names = list(schema.types) + (["FLAT"] if spec.model.flat_head else [])
    pad = tokenizer.pad_token_id
    tb_root = Path(tempfile.mkdtemp(prefix="nerlab-tb-"))
    log = RankZeroLog(job, tb_root) if rank == 0 else None
    nodes = [ray.util.get_node_ip_address()] * world  # each rank's node, in rank order (this attempt's)
    if world > 1:
        dist.all_gather_object(nodes, nodes[0])
    if log:
        T.set_tags(log.client, log.run_id, {"nerlab.worker_nodes": ",".join(nodes),
                                            "nerlab.device": device.type,
                                            "nerlab.precision": str(dtype).removeprefix("torch.") if dtype else "fp32"})
        for entry in state.history:  # epochs that reached the checkpoint but maybe not MLflow
            log.epoch(entry)

    while not state.stopped and state.epoch < cfg.epochs:
        epoch = state.epoch + 1
        # Dropout draws depend on the epoch alone, as the batch order does, so a job resumed from a
        # checkpoint trains exactly as an uninterrupted one would.
        seed_everything(cfg.seed + epoch)
        order = shard(train_batches(lengths, cfg, cfg.seed + epoch), rank, world, even=True)
        batches = (b for _, b in iter_batches(train_w, order, pad, schema.num_heads))
        lr = sched.get_last_lr()[0]
        stats = train_epoch(ddp, batches, opt, sched, loss_spec, cfg, device, dtype, scaler=scaler)
        tokens = torch.tensor([stats.tokens], dtype=torch.float64, device=device)
        if world > 1:
            dist.all_reduce(tokens)
        report, _ = _gather_eval(model, val_s, val_w, spec.task, cfg.batch_size * 2, pad, device, dtype)
        entry = _epoch_metrics(epoch, stats, report, lr, float(tokens) / max(stats.seconds, 1e-9), names)
        if cfg.select_by == "val_loss":  # as the seed did: the loss it trains on (no variance penalty), whole set
            entry["metrics"][T.VAL_LOSS] = _gather_loss(model, val_w, cfg, loss_spec, pad, device, dtype)
        value = report.micro.f1 if cfg.select_by == "val_f1" else -entry["metrics"][T.VAL_LOSS]
        if value > state.best_score:
            state.best_score, state.best_epoch, state.bad_epochs = value, epoch, 0
            best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            state.bad_epochs += 1
        state.epoch, state.stopped = epoch, state.bad_epochs >= cfg.patience
        state.history.append(entry)
        _report_epoch(rank, entry, state, model, opt, sched, scaler, best)
        if log:
            log.epoch(entry)

    _finish(job, rank, model, tokenizer, best, state, val_s, val_w, device, dtype, log, tb_root)


def _report_epoch(rank, entry, state: LoopState, model, opt, sched, scaler, best) -> None:
    """Checkpoint (rank 0 writes) and report; every rank reports once per epoch."""
    metrics = {"epoch": entry["epoch"], "val_micro_f1": entry["metrics"][T.VAL_F1],
               "train_loss": entry["metrics"][T.TRAIN_LOSS], "final": False}
    with tempfile.TemporaryDirectory() as d:
        ckpt = None
        if rank == 0:
            _save_checkpoint(Path(d), model, opt, sched, scaler, state, None if state.best_epoch == state.epoch else best)
            ckpt = ray.train.Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=ckpt)


def _finish(job: Job, rank, model, tokenizer, best, state: LoopState, val_s, val_w, device, dtype, log, tb_root):
    """Best weights -> validation and test predictions, the model folder, artifacts, a final report."""
    spec = job.spec
    if best is not None:
        model.load_state_dict(best)
    pad, bs = tokenizer.pad_token_id, spec.train.batch_size * 2
    val_report, val_pred = _gather_eval(model, val_s, val_w, spec.task, bs, pad, device, dtype)
    test_report = test_pred = None
    if job.test:
        test_s, test_w = _corpus(job.test, spec.task, tokenizer, job.plm, model.schema, spec.model.max_length)
        test_report, test_pred = _gather_eval(model, test_s, test_w, spec.task, bs, pad, device, dtype)
    final = {"epoch": state.epoch, "best_epoch": state.best_epoch, "val_micro_f1": val_report.micro.f1,
             "test_micro_f1": test_report.micro.f1 if test_report else -1.0, "final": True}
    with tempfile.TemporaryDirectory() as d:
        ckpt = None
        if rank == 0:
            out = Path(d)
            model.save(out / "model", tokenizer)
            _write_outputs(out, spec, model.schema, val_report, val_pred, test_report, test_pred)
            metrics = {T.BEST_EPOCH: state.best_epoch, "best/" + T.VAL_F1: val_report.micro.f1}
            if test_report:
                metrics[T.TEST_F1] = test_report.micro.f1
                metrics.update({T.TEST_TYPE_F1.format(t): s.f1 for t, s in test_report.per_type.items()})
            T.log_metrics(log.client, log.run_id, metrics, step=state.epoch)
            for sub in ("config", "reports", "predictions", "model"):
                log.artifacts(out / sub, sub)
            log.tb.close()
            log.artifacts(tb_root, "tensorboard")
            (out / FINAL_FILE).write_text(json.dumps(final))
            ckpt = ray.train.Checkpoint.from_directory(d)
        ray.train.report(final, checkpoint=ckpt)


def _write_outputs(out: Path, spec: RunSpec, schema, val_report, val_pred, test_report, test_pred) -> None:
    import yaml

    (out / "config").mkdir()
    (out / "config" / "resolved_spec.yaml").write_text(yaml.safe_dump(T.spec_params(spec), allow_unicode=True))
    schema.save(out / "config" / "label_schema.json")
    (out / "reports").mkdir()
    (out / "predictions").mkdir()
    for split, report, pred in (("val", val_report, val_pred), ("test", test_report, test_pred)):
        if report is None:
            continue
        (out / "reports" / f"{split}_report.json").write_text(json.dumps(report.to_dict(), indent=2))
        (out / "reports" / f"{split}_report.txt").write_text(report.format() + "\n")
        (out / "predictions" / f"{split}.txt").write_text(format_sentences(pred), encoding="utf-8")
