"""Preflight on the GPU machine, seconds long: does everything nerlab needs import, at versions it accepts?

Checks, after ``install_wheels.sh``: the interpreter, torch and its GPU, ``nvidia-smi``; that ray (train,
tune, the Optuna searcher), mlflow, optuna, seqeval and nerlab's platform import; that every package of the
image that a carried wheel needs is at a version in the range it asks for (the manifest's
``image_requirements``: a conflict is printed, not fatal, since nothing can be installed there anyway).
``--boot`` also starts a local Ray with its dashboard and a local ``mlflow server`` over SQLite, and stops
both (what ``nerlab train``/``study run`` do first). Writes ``$OUT/preflight.json`` when OUT is set.
Exit 1 if an import fails or the boot fails; 0 otherwise.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

MODULES = ("ray", "ray.train", "ray.tune", "ray.tune.search.optuna", "mlflow", "optuna", "seqeval.metrics",
           "nerlab.platform.cli",
           "nerlab.platform.tracking.server")
NEEDS_TORCH = ("ray.train.torch", "nerlab.platform.specs.run", "nerlab.platform.training.job", "nerlab.platform.studies.driver")
MANIFEST = Path(os.environ.get("NERLAB_WHEEL_STORE", "/tmp/nerlab-wheels")) / "parts" / "MANIFEST.json"


def version_conflicts(manifest: Path) -> list[str]:
    from packaging.requirements import Requirement

    if not manifest.is_file():
        return [f"{manifest}: no manifest (were the wheels installed?)"]
    out = []
    for name, reqs in json.loads(manifest.read_text())["image_requirements"].items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            out.append(f"{name}: not installed; needed as {reqs}")
            continue
        for r in reqs:
            spec = Requirement(r.split(" (from ")[0]).specifier
            if not spec.contains(have, prereleases=True):
                out.append(f"{name} {have} is outside {r}")
    return out


def boot() -> dict:
    import ray

    from nerlab.platform.tracking import server as mlflow_server

    t = time.perf_counter()
    ray.init(num_cpus=1, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False)
    res = {"ray_resources": ray.cluster_resources(), "ray_init_s": time.perf_counter() - t}
    ray.shutdown()
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        with mlflow_server.serving(f"sqlite:///{d}/mlflow.db", None, Path(d) / "server.log") as url:
            res["mlflow_server"] = url
        res["mlflow_server_s"] = time.perf_counter() - t
    return res


def main(argv: list[str]) -> int:
    report: dict = {"python": sys.version.split()[0], "executable": sys.executable,
                    "nvidia_smi": shutil.which("nvidia-smi")}
    try:
        import torch

        report.update(torch=torch.__version__, cuda=torch.cuda.is_available(),
                      device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                      bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        modules = (*MODULES, *NEEDS_TORCH)
    except ImportError:
        report["torch"] = None
        modules = MODULES
    failed = {}
    for m in modules:
        try:
            importlib.import_module(m)
        except Exception as e:  # noqa: BLE001
            failed[m] = f"{type(e).__name__}: {e}"
    report["versions"] = {n: metadata.version(n) for n in ("ray", "mlflow", "optuna", "seqeval", "transformers",
                                                         "numpy", "pandas", "pyarrow", "protobuf")
                          if _installed(n)}
    report["import_failures"] = failed
    report["version_conflicts"] = version_conflicts(MANIFEST)
    if "--boot" in argv and not failed:
        try:
            report["boot"] = boot()
        except Exception as e:  # noqa: BLE001
            failed["boot"] = f"{type(e).__name__}: {e}"
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "preflight.json").write_text(json.dumps(report, indent=2, default=str))
    print("preflight:", json.dumps({k: v for k, v in report.items() if k != "version_conflicts"}, default=str))
    for c in report["version_conflicts"]:
        print(f"preflight: version conflict (not fatal): {c}")
    for m, e in failed.items():
        print(f"preflight: FAILED {m}: {e}", file=sys.stderr)
    return 1 if failed else 0


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
