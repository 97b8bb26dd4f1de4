"""The training step, the optimiser, best-epoch selection, and a plain single-process training loop.

The distributed worker loop (platform/training/worker.py) reuses ``make_optimizer``, ``train_epoch`` and
``BestEpoch``; ``fit`` is the in-process loop used by tests and benchmarks.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from nerlab.losses import LossConfig, combined, multitask_loss
from nerlab.models.encoding import Window, bucketed_batches, eval_batches, iter_batches, random_batches, shard
from nerlab.models.predict import predict_sentences
from nerlab.models.schema import PAD_CLASS
from nerlab.models.scoring import Report, score
from nerlab.models.wojood import Sentence


BATCH_ORDERS = ("bucketed", "random")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the defaults are the reference (UM6P) system's training settings."""

    epochs: int = 15
    batch_size: int = 16
    lr: float = 2e-5
    weight_decay: float = 0.001  # not on bias and LayerNorm weights
    warmup_ratio: float = 0.0  # linear decay without warm-up
    grad_clip: float = 1.0
    patience: int = 5  # epochs without improvement before stopping
    seed: int = 3407
    variance_penalty: float = 0.0  # λ of the multi-task loss variance penalty (the reference system used 5)
    select_by: str = "val_f1"  # best epoch by validation micro-F1, or "val_loss" (penalty excluded) as the reference did
    batch_order: str = "bucketed"  # length-bucketed batches (3x less padding), or "random" order as the reference drew them
    bucket_batches: int = 50  # length-bucketing pool, in batches

    def __post_init__(self) -> None:
        if self.select_by not in ("val_f1", "val_loss"):
            raise ValueError(f"select_by must be 'val_f1' or 'val_loss', not {self.select_by!r}")
        if self.batch_order not in BATCH_ORDERS:
            raise ValueError(f"batch_order must be one of {', '.join(BATCH_ORDERS)}, not {self.batch_order!r}")
        if self.variance_penalty < 0:
            raise ValueError(f"variance_penalty must be >= 0, not {self.variance_penalty}")
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, not {self.lr}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class BestEpoch:
    """Best-epoch selection and early stopping by ``TrainConfig.select_by`` and ``patience``, for both
    training loops. Plain fields, so the worker loop's checkpoints carry it."""

    epoch: int = 0  # last finished epoch
    best_epoch: int = 0
    best_score: float = -math.inf  # validation F1, or minus the validation loss
    bad_epochs: int = 0  # epochs since the best one
    stopped: bool = False  # patience ran out

    def update(self, cfg: TrainConfig, epoch: int, val_f1: float, val_loss: float | None = None) -> bool:
        """Record a finished epoch; True when it is the best so far (keep its weights)."""
        score = val_f1 if cfg.select_by == "val_f1" else -val_loss
        improved = score > self.best_score
        if improved:
            self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
        else:
            self.bad_epochs += 1
        self.epoch, self.stopped = epoch, self.bad_epochs >= cfg.patience
        return improved


def weights(model: torch.nn.Module, device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
    """A copy of the model's weights (the best epoch's, to restore at the end)."""
    return {k: (v.detach() if device is None else v.detach().to(device)).clone() for k, v in model.state_dict().items()}


def train_batches(lengths: Sequence[int], cfg: TrainConfig, seed: int) -> list[list[int]]:
    """One epoch's training batches (window indices) in ``cfg.batch_order``."""
    if cfg.batch_order == "random":
        return random_batches(len(lengths), cfg.batch_size, seed)
    return bucketed_batches(lengths, cfg.batch_size, seed, cfg.bucket_batches)


def eval_batch_size(cfg: TrainConfig, reference: bool) -> int:
    """The evaluation batch size while training: twice the training batch (no gradients to hold), or under the
    reference normalisation the training batch size, as the reference system validated and predicted (its
    outputs depend on their batch: ``encoding.eval_batches``)."""
    return cfg.batch_size if reference else 2 * cfg.batch_size


def task_losses(model, batch: dict, loss: LossConfig, device: torch.device) -> torch.Tensor:
    """Loss of every task on a batch: K type heads, then the flat head if the model has one. (tasks,)"""
    if getattr(model, "module", model).config.reference:  # DDP wraps the tagger in .module
        return reference_task_losses(model, batch, loss, device)
    # non_blocking: asynchronous copies from pinned batches; a plain (pageable) batch copies as before.
    mask = batch["label_mask"].to(device, non_blocking=True)
    heads, flat = model(batch["input_ids"].to(device, non_blocking=True),
                        batch["attention_mask"].to(device, non_blocking=True), mask)
    losses = combined(heads, batch["head_targets"].to(device, non_blocking=True)[mask], None, loss)  # (K,)
    if flat is not None:
        flat_target = batch["flat_targets"].to(device, non_blocking=True)[mask]
        losses = torch.cat([losses, combined(flat.unsqueeze(1), flat_target.unsqueeze(1), None, loss)])
    return losses


def reference_task_losses(model, batch: dict, loss: LossConfig, device: torch.device) -> torch.Tensor:
    """The reference system's normalisation (reproduction only): every position of the padded batch is in every head's
    loss; a word's first sub-word has the word's class, later sub-words, [CLS], [SEP] (and a long sentence's
    context words) are O, padding is <pad>. The model ignores the attention mask in this mode. (K,)"""
    attention = batch["attention_mask"].to(device)  # (B, T); the model drops it, the targets use it
    heads, _ = model(batch["input_ids"].to(device), attention, None)  # (B, T, K, 4)
    target = batch["head_targets"].to(device)  # (B, T, K): 0 (O) wherever no word is labelled
    target = torch.where(attention.bool()[..., None], target, PAD_CLASS)
    return combined(heads.flatten(0, 1), target.flatten(0, 1), None, loss)  # (B*T, K, 4): the reference's view


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, total_steps: int, fused: bool | None = None):
    """AdamW without weight decay on biases and LayerNorm, linear schedule.

    ``fused`` (one kernel per step over every parameter) is on by default wherever torch has it, on the CPU
    and on CUDA: on the CPU it makes a bert-base bf16 training step 1.06-1.19x faster than the per-tensor
    loop (bench_cpu.py, three interleaved rounds, 2 threads)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "LayerNorm" in name or "norm" in name.lower() else decay).append(p)
    if fused is None:
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in decay + no_decay)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, fused=fused)
    sched = get_linear_schedule_with_warmup(opt, math.ceil(cfg.warmup_ratio * total_steps), max(total_steps, 1))
    return opt, sched


@dataclass
class EpochStats:
    loss: float = 0.0
    penalty: float = 0.0
    task_losses: list[float] = field(default_factory=list)
    steps: int = 0
    tokens: int = 0  # real (non-padding) sub-words seen
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def train_epoch(model, batches: Iterable[dict], opt, sched, loss: LossConfig, cfg: TrainConfig,
                device: torch.device, autocast_dtype=None, step_hook: Callable[[int], None] | None = None,
                scaler: torch.amp.GradScaler | None = None) -> EpochStats:
    """One pass over ``batches``; returns mean loss, mean penalty and mean per-task losses.

    With fp16 autocast pass an enabled ``scaler``: the loss is scaled before backward and steps with
    inf/NaN gradients are skipped (bf16 and fp32 need none)."""
    scaled = scaler is not None and scaler.is_enabled()
    model.train()
    stats = EpochStats()
    # Sums stay on the device: reading a loss back every step would stall a GPU's queue.
    sum_loss = sum_penalty = sum_tasks = None
    start = time.perf_counter()
    for batch in batches:
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            losses = task_losses(model, batch, loss, device)
        total, penalty = multitask_loss(losses, cfg.variance_penalty)
        opt.zero_grad(set_to_none=True)
        if scaled:
            scaler.scale(total).backward()
            scaler.unscale_(opt)  # clip the true gradients
        else:
            total.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        if scaled:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        sched.step()
        detached = losses.detach()
        sum_tasks = detached if sum_tasks is None else sum_tasks + detached
        sum_loss = total.detach() if sum_loss is None else sum_loss + total.detach()
        sum_penalty = penalty.detach() if sum_penalty is None else sum_penalty + penalty.detach()
        stats.steps += 1
        stats.tokens += int(batch["attention_mask"].sum())
        if step_hook:
            step_hook(stats.steps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    stats.seconds = time.perf_counter() - start
    if stats.steps:
        stats.loss = float(sum_loss) / stats.steps
        stats.penalty = float(sum_penalty) / stats.steps
        stats.task_losses = (sum_tasks / stats.steps).tolist()
    return stats


@torch.inference_mode()
def loss_sum(model, windows: Sequence[Window], batch_size: int, pad_id: int, loss: LossConfig, cfg: TrainConfig,
             device: torch.device, autocast_dtype=None, rank: int = 0, world: int = 1) -> tuple[float, int]:
    """Summed multi-task loss over rank ``rank``'s batches of the windows (``eval_batches``), and their count.

    The loss is the sum of the task losses as trained (an IRM term included) without the variance penalty,
    as the reference system selected on it. The validation loss is sum / count, both added over the ranks."""
    model.eval()
    total_sum, n = torch.zeros((), device=device), 0
    batches = eval_batches([len(w) for w in windows], batch_size, model.config.reference, rank, world)
    for _, batch in iter_batches(windows, batches, pad_id, model.schema.num_heads):
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            losses = task_losses(model, batch, loss, device)
        total_sum += losses.float().sum()
        n += 1
    return float(total_sum), n


def evaluate(model, sentences: Sequence[Sentence], windows: Sequence[Window], task: str, batch_size: int,
             pad_id: int, device: torch.device | str = "cpu", autocast_dtype=None, rank: int = 0, world: int = 1,
             gather=None) -> tuple[Report, list[Sentence]]:
    """The whole set scored: the predictions of every rank (``predict.predict_sentences``), then seqeval's."""
    pred = predict_sentences(model, sentences, windows, batch_size, pad_id, device, autocast_dtype, task, rank, world,
                             gather)
    return score(sentences, pred, task), pred


def epoch_batches(lengths: Sequence[int], cfg: TrainConfig, epoch: int, rank: int = 0, world: int = 1
                  ) -> list[list[int]]:
    """Rank ``rank``'s training batches of ``epoch``: the same in every loop, on every resume."""
    return shard(train_batches(lengths, cfg, cfg.seed + epoch), rank, world, even=True)


def run_epoch(model, windows: Sequence[Window], epoch: int, opt, sched, loss: LossConfig, cfg: TrainConfig,
              device: torch.device, pad_id: int, autocast_dtype=None, scaler: torch.amp.GradScaler | None = None,
              rank: int = 0, world: int = 1) -> EpochStats:
    """The epoch body of every training loop (a Ray Train worker, an inline trial, ``fit``). Dropout draws depend
    on the epoch alone, as the batch order does, so a job resumed from a checkpoint trains exactly as an
    uninterrupted one would."""
    seed_everything(cfg.seed + epoch)
    order = epoch_batches([len(w) for w in windows], cfg, epoch, rank, world)
    heads = getattr(model, "module", model).schema.num_heads  # DDP wraps the tagger in .module
    batches = (b for _, b in iter_batches(windows, order, pad_id, heads))
    return train_epoch(model, batches, opt, sched, loss, cfg, device, autocast_dtype, scaler=scaler)


def fit(model, tokenizer, train: Sequence[Window], val_sentences: Sequence[Sentence], val: Sequence[Window],
        cfg: TrainConfig, loss: LossConfig, task: str, device: str | torch.device = "cpu",
        log: Callable[[int, EpochStats, Report], None] | None = None) -> list[dict]:
    """Single-process training with early stopping on ``cfg.select_by``; restores the best epoch's weights."""
    device = torch.device(device)
    seed_everything(cfg.seed)
    model.to(device)
    pad = tokenizer.pad_token_id
    lengths = [len(w) for w in train]
    opt, sched = make_optimizer(model, cfg, len(epoch_batches(lengths, cfg, 0)) * cfg.epochs)
    eval_size = eval_batch_size(cfg, model.config.reference)
    history, best, state = [], BestEpoch(), None
    for epoch in range(1, cfg.epochs + 1):
        stats = run_epoch(model, train, epoch, opt, sched, loss, cfg, device, pad)
        report, _ = evaluate(model, val_sentences, val, task, eval_size, pad, device)
        entry = {"epoch": epoch, "loss": stats.loss, "val_f1": report.micro.f1,
                 "tokens_per_second": stats.tokens_per_second}
        if cfg.select_by == "val_loss":
            total, n = loss_sum(model, val, eval_size, pad, loss, cfg, device)
            entry["val_loss"] = total / max(n, 1)
        history.append(entry)
        if log:
            log(epoch, stats, report)
        if best.update(cfg, epoch, report.micro.f1, entry.get("val_loss")):
            state = weights(model)
        if best.stopped:
            break
    if state is not None:
        model.load_state_dict(state)
    return history
