"""The training step, the optimiser, and a plain single-process training loop.

The distributed worker loop (platform/train_loop.py) reuses ``task_losses``, ``make_optimizer`` and
``train_epoch``; ``fit`` is the in-process loop used by tests and benchmarks.
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

from nerlab.losses import LossSpec, combined, multitask_loss
from nerlab.models.encoding import Window, bucketed_batches, eval_batches, iter_batches
from nerlab.models.predict import assemble, predict_windows
from nerlab.models.scoring import Report, score
from nerlab.models.wojood import Sentence


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the defaults are the seed system's (SEED_FACTS.md, "Training")."""

    epochs: int = 15
    batch_size: int = 16
    lr: float = 2e-5
    weight_decay: float = 0.001  # not on bias and LayerNorm weights
    warmup_ratio: float = 0.0  # linear decay without warm-up
    grad_clip: float = 1.0
    patience: int = 5  # epochs without improvement before stopping
    seed: int = 3407
    variance_penalty: float = 0.0  # λ of the multi-task loss variance penalty (the seed used 5)
    select_by: str = "val_f1"  # best epoch by validation micro-F1, or "val_loss" as the seed did
    bucket_batches: int = 50  # length-bucketing pool, in batches

    def __post_init__(self) -> None:
        if self.select_by not in ("val_f1", "val_loss"):
            raise ValueError(f"select_by must be 'val_f1' or 'val_loss', not {self.select_by!r}")
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


def task_losses(model, batch: dict, loss: LossSpec, device: torch.device) -> torch.Tensor:
    """Loss of every task on a batch: K type heads, then the flat head if the model has one. (tasks,)"""
    # non_blocking: asynchronous copies from pinned batches; a plain (pageable) batch copies as before.
    mask = batch["label_mask"].to(device, non_blocking=True)
    heads, flat = model(batch["input_ids"].to(device, non_blocking=True),
                        batch["attention_mask"].to(device, non_blocking=True), mask)
    losses = combined(heads, batch["head_targets"].to(device, non_blocking=True)[mask], None, loss)  # (K,)
    if flat is not None:
        flat_target = batch["flat_targets"].to(device, non_blocking=True)[mask]
        losses = torch.cat([losses, combined(flat.unsqueeze(1), flat_target.unsqueeze(1), None, loss)])
    return losses


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, total_steps: int, fused: bool | None = None):
    """AdamW without weight decay on biases and LayerNorm, linear schedule (``fused``: one kernel per step)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "LayerNorm" in name or "norm" in name.lower() else decay).append(p)
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


def train_epoch(model, batches: Iterable[dict], opt, sched, loss: LossSpec, cfg: TrainConfig,
                device: torch.device, autocast_dtype=None, step_hook: Callable[[int], None] | None = None,
                scaler: torch.amp.GradScaler | None = None) -> EpochStats:
    """One pass over ``batches``; returns mean loss, mean penalty and mean per-task losses.

    With fp16 autocast pass an enabled ``scaler``: the loss is scaled before backward and steps with
    inf/NaN gradients are skipped (bf16 and fp32 need none)."""
    scaled = scaler is not None and scaler.is_enabled()
    model.train()
    stats = EpochStats()
    # Sums stay on the device: reading a loss back every step would stall a GPU's queue.
    loss_sum = penalty_sum = task_sum = None
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
        task_sum = detached if task_sum is None else task_sum + detached
        loss_sum = total.detach() if loss_sum is None else loss_sum + total.detach()
        penalty_sum = penalty.detach() if penalty_sum is None else penalty_sum + penalty.detach()
        stats.steps += 1
        stats.tokens += int(batch["attention_mask"].sum())
        if step_hook:
            step_hook(stats.steps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    stats.seconds = time.perf_counter() - start
    if stats.steps:
        stats.loss = float(loss_sum) / stats.steps
        stats.penalty = float(penalty_sum) / stats.steps
        stats.task_losses = (task_sum / stats.steps).tolist()
    return stats


@torch.no_grad()
def loss_sum(model, windows: Sequence[Window], batch_size: int, pad_id: int, loss: LossSpec, cfg: TrainConfig,
             device: torch.device, autocast_dtype=None) -> tuple[float, int]:
    """Summed multi-task loss (penalty included, as trained) over the windows' batches, and the batch count.

    The validation loss is sum / count; ranks holding shards add both before dividing."""
    model.eval()
    total_sum, n = torch.zeros((), device=device), 0
    lengths = [len(w) for w in windows]
    n_heads = model.schema.num_heads
    for _, batch in iter_batches(windows, eval_batches(lengths, batch_size), pad_id, n_heads):
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            losses = task_losses(model, batch, loss, device)
        total_sum += multitask_loss(losses.float(), cfg.variance_penalty)[0]
        n += 1
    return float(total_sum), n


def evaluate(model, sentences: Sequence[Sentence], windows: Sequence[Window], task: str, batch_size: int,
             pad_id: int, device: torch.device | str = "cpu") -> tuple[Report, list[Sentence]]:
    heads, flat = predict_windows(model, windows, batch_size, pad_id, device)
    pred = assemble(sentences, windows, heads, flat, model.schema, task, model.config.flat_decoding)
    return score(sentences, pred, task), pred


def fit(model, tokenizer, train: Sequence[Window], val_sentences: Sequence[Sentence], val: Sequence[Window],
        cfg: TrainConfig, loss: LossSpec, task: str, device: str | torch.device = "cpu",
        log: Callable[[int, EpochStats, Report], None] | None = None) -> list[dict]:
    """Single-process training with early stopping on ``cfg.select_by``; restores the best epoch's weights."""
    device = torch.device(device)
    seed_everything(cfg.seed)
    model.to(device)
    pad = tokenizer.pad_token_id
    lengths = [len(w) for w in train]
    steps = sum(len(bucketed_batches(lengths, cfg.batch_size, cfg.seed + e, cfg.bucket_batches))
                for e in range(cfg.epochs))
    opt, sched = make_optimizer(model, cfg, steps)
    history, best_score, best_state, bad = [], -math.inf, None, 0
    for epoch in range(cfg.epochs):
        order = bucketed_batches(lengths, cfg.batch_size, cfg.seed + epoch, cfg.bucket_batches)
        batches = (b for _, b in iter_batches(train, order, pad, model.schema.num_heads))
        stats = train_epoch(model, batches, opt, sched, loss, cfg, device)
        report, _ = evaluate(model, val_sentences, val, task, cfg.batch_size * 2, pad, device)
        entry = {"epoch": epoch, "loss": stats.loss, "val_f1": report.micro.f1,
                 "tokens_per_second": stats.tokens_per_second}
        if cfg.select_by == "val_loss":
            total, n = loss_sum(model, val, cfg.batch_size * 2, pad, loss, cfg, device)
            entry["val_loss"] = total / max(n, 1)
        history.append(entry)
        if log:
            log(epoch, stats, report)
        value = report.micro.f1 if cfg.select_by == "val_f1" else -entry["val_loss"]
        if value > best_score:
            best_score, bad = value, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return history
