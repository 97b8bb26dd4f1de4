"""GPU code paths checked on the CPU: precision per device, device choice, fractional-GPU arithmetic.

No GPU and no Ray here: each test calls the function the GPU path goes through with what a GPU machine
would give it (a ``cuda`` device object, a capacity with ``GPU: 1``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from nerlab.platform.cli import UsageError
from nerlab.platform.training.job import check_fits, use_gpu
from nerlab.platform.specs.run import Resources, RunSpec, load_run_spec
from nerlab.platform.specs.study import StudyResources, load_study_spec
from nerlab.models.precision import CPU_BF16_ENV, CPU_BF16_REFUSED, autocast_dtype, cpu_bf16_supported
from nerlab.platform.errors import SpecError
from nerlab.platform.training.job import check_precision
from nerlab.platform.training.worker import _grad_scaler

ROOT = Path(__file__).resolve().parents[2]
GPU_SPECS = ROOT / "scripts" / "gpu"
CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)  # a device object needs no GPU


# ---- precision ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision, dtype", [("auto", torch.bfloat16), ("bf16", torch.bfloat16), ("fp32", None),
                                              ("fp16", None)])
def test_cpu_with_bf16_runs_auto_and_bf16_in_bf16(precision, dtype) -> None:
    """A CPU with AMX or AVX512-BF16: ``auto`` and ``bf16`` autocast to bf16; fp16 (a GPU setting) runs fp32."""
    assert autocast_dtype(precision, CPU, cpu_bf16=True) is dtype


@pytest.mark.parametrize("precision", ["auto", "fp32", "fp16"])
def test_cpu_without_bf16_runs_fp32(precision) -> None:
    assert autocast_dtype(precision, CPU, cpu_bf16=False) is None


def test_cpu_without_bf16_refuses_bf16() -> None:
    with pytest.raises(ValueError, match="bf16 needs a CUDA GPU or a CPU with AMX or AVX512-BF16"):
        autocast_dtype("bf16", CPU, cpu_bf16=False)


def test_cpu_bf16_support_is_what_the_cpu_flags_say(monkeypatch, cpu_bf16_flags) -> None:
    """Without the override, the check agrees with the kernel's CPU flags (/proc/cpuinfo), read independently;
    the override NERLAB_CPU_BF16 replaces it either way, and a bad value is one line naming it."""
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    assert cpu_bf16_supported() is cpu_bf16_flags
    for value, supported in (("0", False), ("1", True)):
        monkeypatch.setenv(CPU_BF16_ENV, value)
        assert cpu_bf16_supported() is supported
        assert autocast_dtype("auto", CPU) is (torch.bfloat16 if supported else None)
    monkeypatch.setenv(CPU_BF16_ENV, "yes")
    with pytest.raises(ValueError, match=f"{CPU_BF16_ENV} must be 0 or 1, not 'yes'"):
        cpu_bf16_supported()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine may run bf16 on its GPU")
def test_driver_refuses_bf16_on_a_cpu_without_it_unless_a_gpu_is_asked_for(monkeypatch) -> None:
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    with pytest.raises(SpecError, match="^" + re.escape(f"spec.yaml: {CPU_BF16_REFUSED}") + "$"):
        check_precision("bf16", None, "spec.yaml")
    check_precision("bf16", True, "spec.yaml")  # resources.use_gpu: true: the GPU decides
    for precision in ("auto", "fp32", "fp16"):
        check_precision(precision, None, "spec.yaml")
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    check_precision("bf16", None, "spec.yaml")


@pytest.mark.parametrize("precision, dtype", [("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_gpu_precision_is_what_the_spec_says(precision, dtype) -> None:
    assert autocast_dtype(precision, CUDA) is dtype


@pytest.mark.parametrize("bf16_supported, dtype", [(True, torch.bfloat16), (False, None)])
def test_gpu_auto_is_bf16_where_the_card_has_it(monkeypatch, bf16_supported, dtype) -> None:
    """``auto`` asks the card (an H100/H200 says yes; a V100 says no and trains fp32, not fp16)."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    assert autocast_dtype("auto", CUDA) is dtype


def test_fp16_gets_a_gradient_scaler_and_bf16_none() -> None:
    """The worker's scaler (train_loop._grad_scaler) for each precision a GPU job gets. Without CUDA, torch
    turns a cuda scaler off whatever it is asked, so the scaler is built for the CPU device here; the GPU's own
    is checked too where the machine has one."""
    devices = [CPU] + ([CUDA] if torch.cuda.is_available() else [])
    for precision, enabled in (("fp16", True), ("bf16", False), ("fp32", False)):
        dtype = autocast_dtype(precision, CUDA)
        for device in devices:
            assert _grad_scaler(dtype, device).is_enabled() is enabled, (precision, device)


# ---- device choice ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag", [True, False])
def test_use_gpu_follows_the_spec_when_set(flag) -> None:
    spec = RunSpec(name="x", resources=Resources(use_gpu=flag))
    assert use_gpu(spec) is flag


def test_use_gpu_auto_without_ray_is_cpu() -> None:
    import ray

    if ray.is_initialized():
        pytest.skip("Ray runs in this process")
    assert use_gpu(RunSpec(name="x")) is False


# ---- fractional GPUs --------------------------------------------------------------------------------------
ONE_GPU = {"CPU": 16.0, "GPU": 1.0}  # the H200 machine


@pytest.mark.parametrize("gpus, workers", [(0.25, 1), (0.5, 1), (1.0, 1), (1.0, 4), (2.0, 2), (0.25, 4)])
def test_valid_gpus_per_worker(gpus, workers) -> None:
    """Accepted by both specs, kept as given, and a GPU job asks for exactly workers x gpus: it fits a
    machine with that many GPUs and not one with a quarter GPU less."""
    use = False if workers > 1 and gpus < 1 else True  # fractions with several workers only on CPUs
    r = Resources(workers=workers, gpus_per_worker=gpus, use_gpu=use)
    s = StudyResources(workers_per_trial=workers, gpus_per_worker=gpus, use_gpu=use)
    assert (r.workers, r.gpus_per_worker, s.workers_per_trial, s.gpus_per_worker) == (workers, gpus, workers, gpus)
    if use:
        check_fits(r, 0.0, None, "spec", have={"CPU": 16.0, "GPU": workers * gpus})
        with pytest.raises(UsageError, match=f"one job needs {workers * gpus:g} GPU"):
            check_fits(r, 0.0, None, "spec", have={"CPU": 16.0, "GPU": workers * gpus - 0.25})


def test_zero_gpus_only_with_use_gpu_false() -> None:
    Resources(gpus_per_worker=0.0, use_gpu=False)
    with pytest.raises(ValueError, match="gpus_per_worker must be > 0"):
        Resources(gpus_per_worker=0.0)  # auto: would ask Ray for 0 GPUs per worker on a GPU machine


@pytest.mark.parametrize("gpus, workers, message", [
    (0.0, 1, "gpus_per_worker must be > 0"),
    (-0.5, 1, "gpus_per_worker must be > 0"),
    (1.5, 1, "a fraction in (0, 1] or a whole number"),
    (0.5, 2, "NCCL refuses"),
])
def test_invalid_gpus_per_worker(gpus, workers, message) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        Resources(workers=workers, gpus_per_worker=gpus, use_gpu=True)
    with pytest.raises(ValueError, match="gpus_per_worker"):
        StudyResources(workers_per_trial=workers, gpus_per_worker=gpus, use_gpu=True)


def test_a_quarter_gpu_job_fits_one_gpu_and_a_whole_one_does_not_fit_none() -> None:
    check_fits(Resources(gpus_per_worker=0.25, use_gpu=True), 0.1, None, "spec", have=ONE_GPU)
    check_fits(Resources(workers=1, gpus_per_worker=1.0, use_gpu=True), 0.1, None, "spec", have=ONE_GPU)
    with pytest.raises(UsageError, match=r"one job needs 2 GPU \(2 worker\(s\) x 1\) but this machine's Ray has 1"):
        check_fits(Resources(workers=2, gpus_per_worker=1.0, use_gpu=True), 0.1, None, "spec", have=ONE_GPU)
    with pytest.raises(UsageError, match="one job needs 0.25 GPU"):
        check_fits(Resources(gpus_per_worker=0.25, use_gpu=True), 0.1, None, "spec", have={"CPU": 16.0})


def test_auto_gpu_counts_gpus_only_where_the_machine_has_them() -> None:
    check_fits(Resources(gpus_per_worker=4.0), 0.0, None, "spec", have={"CPU": 2.0, "GPU": 0.0})  # CPU job
    with pytest.raises(UsageError, match="4 GPU"):
        check_fits(Resources(gpus_per_worker=4.0), 0.0, None, "spec", have=ONE_GPU)


@pytest.mark.parametrize("gpus, cpus, have, fit", [
    (0.25, 1.0, ONE_GPU, 4),  # the shared-GPU study: 4 trials at once
    (0.5, 1.0, ONE_GPU, 2),
    (1.0, 1.0, ONE_GPU, 1),
    (0.1, 1.0, ONE_GPU, 10),  # 10 x 0.1 is 1.0 up to rounding: still 10
    (0.25, 1.0, {"CPU": 2.0, "GPU": 1.0}, 1),  # CPUs run out first: 1.1 CPU per trial
    (0.25, 1.0, {"CPU": 16.0}, 0),
])
def test_trials_that_fit(gpus, cpus, have, fit) -> None:
    r = StudyResources(gpus_per_worker=gpus, cpus_per_worker=cpus, trial_cpus=0.1, use_gpu=True)
    assert r.trials_that_fit(have, gpu=True) == fit


def test_trials_that_fit_on_cpus_ignores_gpus() -> None:
    assert StudyResources(cpus_per_worker=0.5, trial_cpus=0.1).trials_that_fit({"CPU": 2.0}, gpu=False) == 3


# ---- the committed GPU specs ------------------------------------------------------------------------------
def test_gpu_train_spec_asks_for_one_gpu_worker_in_bf16() -> None:
    spec = load_run_spec(GPU_SPECS / "gpu-train.yaml")
    assert spec.resources.use_gpu is True and spec.resources.workers == 1 and spec.precision == "bf16"
    assert check_fits(spec.resources, 0.0, None, "gpu-train.yaml", have=ONE_GPU) is None


def test_gpu_study_spec_shares_one_gpu_between_four_trials() -> None:
    spec = load_study_spec(GPU_SPECS / "gpu-study.yaml")
    r = spec.resources
    assert r.use_gpu is True and r.gpus_per_worker == 0.25 and r.max_concurrent == 4
    assert r.trials_that_fit(ONE_GPU, gpu=True) == 4
    trials = len(spec.search.plm) * len(spec.search.losses) * len(spec.search.variance_penalty) * len(spec.search.seeds)
    assert trials == 4


@pytest.mark.parametrize("use, gpus, want", [(True, 0.25, {"CPU": 2, "GPU": 0.25}), (True, 1.0, {"CPU": 2, "GPU": 1.0}),
                                             (False, 0.25, {"CPU": 2})])
def test_trainer_asks_ray_for_the_spec_gpu_share(use, gpus, want, tmp_path) -> None:
    """What Ray Train is asked for (the trainer is only built: nothing starts)."""
    from nerlab.platform.training.job import build_trainer
    from nerlab.platform.training.worker import Job

    spec = RunSpec(name="x", resources=Resources(use_gpu=use, gpus_per_worker=gpus, cpus_per_worker=2))
    job = Job(spec=spec, train="t", val="v", test=None, plm="p", tracking_uri="sqlite:///x.db", run_id="r")
    scaling = build_trainer(job, str(tmp_path), "n").scaling_config
    assert scaling.use_gpu is use and scaling.num_workers == 1 and scaling.resources_per_worker == want
