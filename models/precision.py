"""The precision a job, a prediction or a served model runs under: the autocast dtype of a spec's ``precision``.

``auto`` is bf16 autocast on a CUDA GPU that supports it and on a CPU with AMX or AVX512-BF16 (native bf16
matmuls), else fp32. ``bf16`` on a CPU without them is refused, never run as fp32. ``fp16`` is a GPU setting
(with a gradient scaler); on a CPU it runs fp32, as before.
"""

from __future__ import annotations

import os

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CPU_BF16_ENV = "NERLAB_CPU_BF16"
CPU_BF16_REFUSED = (f"precision: bf16 needs a CUDA GPU or a CPU with AMX or AVX512-BF16, and this CPU has neither "
                    f"(or {CPU_BF16_ENV}=0 turned it off): use auto or fp32")


def cpu_bf16_supported() -> bool:
    """Does this CPU have native bf16 matmuls (AMX or AVX512-BF16)? The operator override ``NERLAB_CPU_BF16=0``
    (or ``1``) replaces the detection: 0 keeps ``auto`` at fp32 on this machine and refuses ``bf16``."""
    env = os.environ.get(CPU_BF16_ENV, "")
    if env:
        if env not in ("0", "1"):
            raise ValueError(f"{CPU_BF16_ENV} must be 0 or 1, not {env!r}")
        return env == "1"
    # torch has no public name for these CPU checks; torch.cpu's are the ones its own CPU kernels dispatch on.
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def autocast_dtype(precision: str, device: torch.device | str, cpu_bf16: bool | None = None) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (None: fp32). ``cpu_bf16``: the CPU's bf16 support,
    default ``cpu_bf16_supported()``. ValueError for ``bf16`` on a CPU without it."""
    device = torch.device(device)
    if precision == "fp32":
        return None
    if device.type == "cuda":
        if precision == "fp16":
            return torch.float16
        return torch.bfloat16 if precision == "bf16" or torch.cuda.is_bf16_supported() else None
    if device.type != "cpu" or precision == "fp16":
        return None
    supported = cpu_bf16_supported() if cpu_bf16 is None else cpu_bf16
    if precision == "bf16" and not supported:
        raise ValueError(CPU_BF16_REFUSED)
    return torch.bfloat16 if supported else None


def inference_dtype(model, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype to predict in with a trained tagger: the precision it trained in (``model.precision``),
    where ``device`` has it; a bf16 model on a device without bf16 predicts in fp32."""
    trained = getattr(model, "precision", "fp32")
    return autocast_dtype("auto" if trained == "bf16" else trained, device)


def precision_name(dtype: torch.dtype | None) -> str:
    """The spec's word for an autocast dtype: fp32, bf16 or fp16 (the logged param/tag, the leaderboard's column)."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
