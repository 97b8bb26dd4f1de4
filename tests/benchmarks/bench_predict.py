"""Benchmark: tokens/s of ``nerlab predict`` with an fp32-trained vs a bf16-trained tagger on the CPU.

A tagger over a randomly initialised 2 x 768 encoder (the tiny-PLM recipe, vocabulary from the Wojood sample's
train split) is saved twice, identical but for its recorded precision (``MultiTaskTagger.precision``), which
``nerlab predict`` predicts in: fp32 is what every CPU model predicted in before bf16 came to the CPU, bf16 is what
a model trained with ``precision: auto`` on a CPU with AMX or AVX512-BF16 now predicts in. Inputs: the sample's
test split, and a file of about 50,000 tokens made of the test split repeated. Each is tagged by a real
``nerlab predict`` process (wall time, start-up included) and in-process by ``predict`` (tagging alone), with
the CPU's token budget per prediction batch as shipped (``budget: default``) and without one
(``$NERLAB_CPU_BATCH_TOKENS=0``, as before the budget), the variants interleaved ``--repeats`` times, medians kept.

Usage: ``python tests/benchmarks/bench_predict.py [--json PATH] [--repeats 2]``; ``--smoke``: a 2 x 64 encoder,
the test split only, one repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "data" / "wojood-sample"


def build_models(tmp: Path, hidden: int) -> dict[str, Path]:
    """The tagger over a random 2 x ``hidden`` encoder saved as an fp32-trained and a bf16-trained model (same
    weights): precision -> its folder."""
    from transformers import AutoTokenizer

    from nerlab.models.schema import LabelSchema
    from nerlab.models.tagger import MultiTaskTagger, TaggerConfig
    from nerlab.models.tiny_plm import build_tiny_plm

    plm = build_tiny_plm([SAMPLE / "train.txt"], tmp / "plm", layers=2, hidden=hidden, heads=max(1, hidden // 64))
    tok = AutoTokenizer.from_pretrained(plm)
    torch.manual_seed(0)
    model = MultiTaskTagger.from_plm(str(plm), LabelSchema.wojood("nested"), TaggerConfig(plm=str(plm))).eval()
    folders = {}
    for precision in ("fp32", "bf16"):
        model.precision = precision
        folders[precision] = model.save(tmp / precision, tok)
    return folders


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--json", type=Path)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--tokens", type=int, default=50_000, help="size of the big input file")
    p.add_argument("--budgets", nargs="+", default=["default", "0"],
                   help="NERLAB_CPU_BATCH_TOKENS: default (as shipped) or sub-words (0: none)")
    args = p.parse_args(argv)
    from nerlab.models.precision import cpu_bf16_supported
    from nerlab.models.predict import CPU_BATCH_TOKENS, CPU_BATCH_TOKENS_ENV, predict
    from nerlab.models.tagger import MultiTaskTagger
    from nerlab.models.wojood import read_file, write_file

    hidden, repeats = (64, 1) if args.smoke else (768, args.repeats)
    tmp = Path(tempfile.mkdtemp(prefix="bench_predict."))
    folders = build_models(tmp, hidden)
    test = read_file(SAMPLE / "test.txt")
    n_test = sum(len(s) for s in test)
    inputs = {"test": (SAMPLE / "test.txt", test)}
    if not args.smoke:
        big = test * max(1, round(args.tokens / n_test))
        write_file(tmp / "big.txt", big)
        inputs["50k"] = (tmp / "big.txt", big)
    base = {k: v for k, v in os.environ.items() if k != CPU_BATCH_TOKENS_ENV}
    envs = {b: {**base, "PYTHONUNBUFFERED": "1", **({} if b == "default" else {CPU_BATCH_TOKENS_ENV: b})}
            for b in args.budgets}
    variants = [(pr, b) for b in args.budgets for pr in folders]
    cli: dict = {(i, *v): [] for i in inputs for v in variants}
    inproc: dict = {(i, *v): [] for i in inputs for v in variants}
    loaded = {pr: MultiTaskTagger.load(f) for pr, f in folders.items()}
    for _ in range(repeats):
        for name, (path, sentences) in inputs.items():
            for precision, budget in variants:
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "nerlab.platform.cli", "predict", "--model", str(folders[precision]),
                                "--input", str(path), "--out", str(tmp / "out.txt"), "--device", "cpu"],
                               check=True, env=envs[budget], capture_output=True)
                cli[(name, precision, budget)].append(time.perf_counter() - t)
                m, mt = loaded[precision]
                os.environ.pop(CPU_BATCH_TOKENS_ENV, None)
                os.environ.update({k: v for k, v in envs[budget].items() if k == CPU_BATCH_TOKENS_ENV})
                t = time.perf_counter()
                predict(m, mt, sentences)
                inproc[(name, precision, budget)].append(time.perf_counter() - t)
    rows = []
    for name, (_, sentences) in inputs.items():
        tokens = sum(len(s) for s in sentences)
        for precision, budget in variants:
            key = (name, precision, budget)
            rows.append({"input": name, "tokens": tokens, "precision": precision, "budget": budget,
                         "cli_tokens_per_s": tokens / statistics.median(cli[key]),
                         "predict_tokens_per_s": tokens / statistics.median(inproc[key]),
                         "cli_s": cli[key], "predict_s": inproc[key]})
            r = rows[-1]
            print(f"{name} ({tokens} tokens) {precision} budget {budget}: nerlab predict {r['cli_tokens_per_s']:.0f} "
                  f"tok/s, predict() {r['predict_tokens_per_s']:.0f} tok/s", flush=True)
    results = {"cpu_batch_tokens": CPU_BATCH_TOKENS, "encoder": f"2x{hidden}", "cpu_bf16_supported": cpu_bf16_supported(), "threads": torch.get_num_threads(),
               "repeats": repeats, "torch": torch.__version__, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
