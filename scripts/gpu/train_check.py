"""Step 2 of the GPU proof: ``nerlab train`` on one GPU worker (Ray Train, nccl, bf16), then its checks.

1. Builds a bert-base-shaped encoder (12 x 768, 12 heads of 64; vocabulary learned from the synthetic
   corpus) and runs ``python -m nerlab.platform.cli train gpu-train.yaml --json`` in a subprocess: the
   real command, its own Ray, its own SQLite MLflow store.
2. The MLflow run is complete: FINISHED; every epoch's train/val metrics and tokens/s; best and test
   metrics; the artifacts (model, reports, predictions, config, tensorboard); tags naming the device
   (``cuda``) and the precision (``bfloat16``).
3. The model folder predicts the logged test F1: loaded from ``OUTPUT/model``, run on the same device and
   autocast as the job's final evaluation, it must score exactly the logged ``test/micro_f1``; the CPU fp32
   score is reported beside it.
4. Tokens/s of the Ray loop (MLflow's ``train/tokens_per_second``, median after epoch 1) over the plain
   loop (``bench_train_loop.plain_loop``: the same spec, data, PLM, batches and autocast in this process,
   no Ray). Goal >= 0.95.

Writes ``OUT/gpu_train.json`` (OUT: ``--out`` or $OUT). ``--smoke``: the same on the CPU in a minute (tiny
PLM, 600 sentences, 3 epochs, fp32). Exit 1 if a check fails; the tokens/s ratio is reported, not checked.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from nerlab.models import names as N

ROOT = Path(__file__).resolve().parents[2]
SPEC = Path(__file__).resolve().parent / "gpu-train.yaml"
ARTIFACTS = (N.REPORTS_DIR, N.PREDICTIONS_DIR, N.CONFIG_DIR, N.TENSORBOARD_DIR)  # the weights: in the MLflow Model


def load_bench(name: str):
    """A benchmark script as a module (tests/benchmarks is no package)."""
    path = ROOT / "tests" / "benchmarks" / f"{name}.py"
    mod_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[name] = module  # dataclasses look their module up
    mod_spec.loader.exec_module(module)
    return module


def write_spec(work: Path, smoke: bool) -> tuple[Path, dict]:
    """The run spec with its data prepared and the PLM folder built here (bert-base's 12 heads of 64)."""
    from nerlab.models.tiny_plm import build_tiny_plm
    from nerlab.platform.training.inputs import prepare_data
    from nerlab.platform.specs.run import load_run_spec

    raw = yaml.safe_load(SPEC.read_text())
    if smoke:
        raw = {**raw, "data": {"synth": {"sentences": 600, "seed": 0}}, "precision": "fp32",
               "model": {**raw["model"], "plm": "tiny:2x64", "max_length": 128},
               "train": {**raw["train"], "epochs": 3, "lr": 3.0e-3, "warmup_ratio": 0.0},
               "resources": {**raw["resources"], "use_gpu": False, "cpus_per_worker": 1}}
    layers, hidden = map(int, raw["model"]["plm"].removeprefix("tiny:").split("x"))
    spec = load_run_spec(_dump(work / "spec-draft.yaml", {**raw, "output": str(work / "job")}))
    train, _, _ = prepare_data(spec.data, work / "job" / "prepared", spec.task)
    plm = work / f"plm-{layers}x{hidden}"
    if not (plm / "config.json").is_file():
        build_tiny_plm([Path(train)], plm, layers=layers, hidden=hidden, heads=max(1, hidden // 64))
    raw = {**raw, "model": {**raw["model"], "plm": str(plm)}, "output": str(work / "job")}
    return _dump(work / "gpu-train.yaml", raw), {"train": train, "plm": str(plm), "layers": layers, "hidden": hidden}


def last_json(text: str) -> dict:
    """The JSON object a ``--json`` command printed last (log lines may come before it)."""
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("{"):
            try:  # raw_decode: log lines may follow the object too
                return json.JSONDecoder().raw_decode("\n".join(lines[i:]))[0]
            except json.JSONDecodeError:
                continue
    raise ValueError(f"no JSON object in: {text[-500:]!r}")


def _dump(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def check_run(client, run_id: str, epochs: int, device: str, precision: str) -> dict:
    run = client.get_run(run_id)
    m, tags = run.data.metrics, run.data.tags
    history = {k: len(client.get_metric_history(run_id, k))
               for k in (N.TRAIN_LOSS, N.VAL_F1, N.TOKENS_PER_S, N.EPOCH_SECONDS)}
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    problems = [f"status {run.info.status}"] if run.info.status != "FINISHED" else []
    problems += [f"{k}: {n} epochs logged, want {epochs}" for k, n in history.items() if n != epochs]
    problems += [f"metric {k} missing" for k in (N.BEST_VAL_F1, N.TEST_F1, N.BEST_EPOCH) if k not in m]
    problems += [f"artifact {a}/ missing" for a in ARTIFACTS if a not in artifacts]
    problems += ["no MLflow Model logged"] * (not (run.outputs and run.outputs.model_outputs))
    problems += [f"tag {tag} is {tags.get(tag)!r}, want {want!r}"
                 for tag, want in ((N.DEVICE_TAG, device), (N.PRECISION_TAG, precision)) if tags.get(tag) != want]
    return {"status": run.info.status, "epochs_logged": history, "artifacts": sorted(artifacts),
            "tags": {k: v for k, v in tags.items() if k.startswith("nerlab.")}, "problems": problems}


def check_model(output: Path, test_file: str, spec, device: str) -> dict:
    """Score the saved model as the job's final evaluation did (same device, autocast, batch size)."""
    import torch

    from nerlab.models.encoding import encode
    from nerlab.models.tagger import MultiTaskTagger
    from nerlab.models.training import eval_batch_size, evaluate
    from nerlab.models.wojood import read_file
    from nerlab.platform.training.worker import _autocast_dtype

    gold = read_file(test_file, task=spec.task)
    out = {}
    for where in dict.fromkeys((device, "cpu")):
        dev = torch.device(where)
        dtype = _autocast_dtype(spec.precision, dev)
        model, tokenizer = MultiTaskTagger.load(output / "model", device=dev)
        windows = encode(gold, tokenizer, model.schema, model.config.max_length)
        report, _ = evaluate(model, gold, windows, spec.task, eval_batch_size(spec.train, model.config.reference),
                             tokenizer.pad_token_id, dev, dtype)
        out[f"{where}_{str(dtype).removeprefix('torch.') if dtype else 'fp32'}"] = report.micro.f1
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="CPU rehearsal: tiny PLM, 600 sentences, 3 epochs")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/gpu-proof")))
    p.add_argument("--work", type=Path, default=Path("/tmp/nerlab-step2"), help="job, data, PLM, MLflow store")
    p.add_argument("--train-timeout-s", type=float, default=150.0, help="stop `nerlab train` after this long")
    args = p.parse_args(argv)
    import torch
    from mlflow.tracking import MlflowClient

    from nerlab.platform.specs.run import load_run_spec

    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("train_check: no CUDA device (use --smoke on a CPU)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    spec_path, built = write_spec(args.work.resolve(), args.smoke)
    spec = load_run_spec(spec_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    log = args.out / "step2-train.log"  # streamed: a job stopped at its time limit leaves its output
    start = time.perf_counter()
    with log.open("w") as f:
        try:
            code = subprocess.run([sys.executable, "-m", "nerlab.platform.cli", "train", str(spec_path), "--json"],
                                  stdout=f, stderr=subprocess.STDOUT, env=env, timeout=args.train_timeout_s).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    wall = time.perf_counter() - start
    report = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "spec": str(spec_path),
              "plm": built, "train_exit": code, "train_wall_s": wall}
    if code != 0:
        report["problems"] = [f"nerlab train exited {code} after {wall:.0f} s: {log.read_text()[-300:]!r}"]
        return finish(args.out, report)
    result = last_json(log.read_text())
    client = MlflowClient(f"sqlite:///{Path(spec.output) / 'mlflow.db'}")
    precision = "bfloat16" if (device == "cuda" and spec.precision == "bf16") else "fp32"
    report["result"] = result
    report["mlflow"] = check_run(client, result["run_id"], spec.train.epochs, device, precision)
    run = client.get_run(result["run_id"])
    logged = run.data.metrics.get(N.TEST_F1)
    scores = check_model(Path(spec.output), run.data.params["inputs.test"], spec, device)
    same = next(iter(scores.values()))
    report["model"] = {"logged_test_f1": logged, "rescored": scores, "reproduces_logged": same == logged}
    ray_tps = [m.value for m in sorted(client.get_metric_history(result["run_id"], N.TOKENS_PER_S),
                                       key=lambda m: m.step)]
    bench = load_bench("bench_train_loop")
    plain_tps = bench.plain_loop(spec_path, threads=int(spec.resources.cpus_per_worker), device=device,
                                 train_file=built["train"], plm=built["plm"])
    report["tokens_per_s"] = {"ray": ray_tps, "plain": plain_tps, "ray_steady": bench.steady(ray_tps),
                              "plain_steady": bench.steady(plain_tps)}
    report["ray_vs_plain"] = bench.steady(ray_tps) / bench.steady(plain_tps)
    report["problems"] = report["mlflow"]["problems"] + (
        [] if report["model"]["reproduces_logged"] else [f"saved model scores {same}, run logged {logged}"])
    return finish(args.out, report)


def finish(out: Path, report: dict) -> int:
    (out / "gpu_train.json").write_text(json.dumps(report, indent=2, default=str))
    if "ray_vs_plain" in report:
        t = report["tokens_per_s"]
        print(f"step 2 on {report['device']}: nerlab train {report['train_wall_s']:.0f} s; test F1 logged "
              f"{report['model']['logged_test_f1']:.4f}, rescored {report['model']['rescored']}; tokens/s Ray "
              f"{t['ray_steady']:.0f} vs plain {t['plain_steady']:.0f}: {report['ray_vs_plain']:.3f}x (goal >= 0.95)")
    for problem in report["problems"]:
        print(f"step 2 FAILED: {problem}", file=sys.stderr)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
