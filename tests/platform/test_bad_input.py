"""The bad-input battery: malformed data files, specs and command lines through the real ``nerlab`` CLI.

Every case must end with exit code 2 and one line on stderr that names the file and line, or the key,
before anything starts:

- no Ray: ``ray.is_initialized()`` stays False (and ``ray.init`` is replaced by a tripwire, so a case
  that slipped through validation fails at once instead of training);
- no MLflow run left RUNNING: every spec points ``tracking.tracking_uri`` at a SQLite file in the test's
  folder, and that store must not even exist afterwards (``MlflowClient.create_run`` is a tripwire too);
- nothing half-written: the output folder is absent or empty. A started job or study leaves there
  ``mlflow.db``, ``mlartifacts/``, ``prepared/``, ``study.yaml``, ``tune/``, ``ray/`` or ``ray-train/``;
  none may appear.

A few cases run as ``python -m nerlab.platform.cli`` in a subprocess to check the real exit code, that
stderr is exactly one line, and that no ``raylet``/``gcs_server`` of theirs appeared (the subprocess gets
its own ``RAY_TMPDIR``, so any Ray it started would name that folder).
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from nerlab.platform.tracking import server as mlflow_server
from nerlab.platform.cli import main as cli_main

DELETE = object()  # a spec change that removes the key
# Workers of half a CPU that together want one CPU more than the machine has (a local Ray gets at most
# os.cpu_count() CPUs; fewer where the process may run on fewer)
TOO_MANY_WORKERS = 2 * (os.cpu_count() or 1) + 2

GOOD_NESTED = "قال O\nمحمد B-PERS\nفي O\nبيرزيت B-ORG\nجامعة I-ORG B-GPE\n\nذهب O\nإلى O\nرام B-GPE\nالله I-GPE\n"
GOOD_FLAT = "قال O\nمحمد B-PERS\nفي O\nبيرزيت B-ORG\nجامعة I-ORG\n\nذهب O\nإلى O\nرام B-GPE\nالله I-GPE\n"
HALF_WRITTEN = ("mlflow.db", "mlartifacts", "prepared", "study.yaml", "tune", "ray", "ray-train", "optuna.db",
                "model", "mlflow-server.log")


# ---- building the inputs -----------------------------------------------------------------------------------
def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if v is DELETE:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def write(tmp: Path, name: str, data: bytes | str) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def data_files(tmp: Path, task: str = "nested") -> dict[str, str]:
    text = GOOD_NESTED if task == "nested" else GOOD_FLAT
    return {split: str(write(tmp, f"data/{task}/{split}.txt", text)) for split in ("train", "val", "test")}


def store(tmp: Path) -> Path:
    """The SQLite MLflow store every spec names; bad input must never create it."""
    return tmp / "store" / "mlflow.db"


def base_run(tmp: Path) -> dict:
    """A valid run spec (checked by test_base_specs_are_valid): each case breaks one thing."""
    return {
        "name": "bad-input", "task": "nested", "data": data_files(tmp),
        "model": {"plm": "tiny:2x32", "max_length": 64},
        "loss": {"preset": "unified"},
        "train": {"epochs": 1, "batch_size": 8, "lr": 0.01, "variance_penalty": 5.0, "seed": 3407},
        "resources": {"workers": 1, "cpus_per_worker": 0.5},
        "tracking": {"experiment": "bad-input", "tracking_uri": f"sqlite:///{store(tmp)}"},
        "output": str(tmp / "out"),
    }


def base_study(tmp: Path) -> dict:
    return {
        "name": "bad-study", "task": "nested", "data": data_files(tmp),
        "model": {"max_length": 64},
        "train": {"epochs": 1, "batch_size": 8, "lr": 0.01},
        "search": {"mode": "grid", "plm": ["tiny:2x32"], "loss": ["ce", "unified"], "variance_penalty": [0.0, 5.0],
                   "seeds": [1]},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 0.5, "max_concurrent": 1},
        "tracking": {"experiment": "bad-study", "tracking_uri": f"sqlite:///{store(tmp)}"},
        "output": str(tmp / "out"),
    }


def spec_file(tmp: Path, base: Callable[[Path], dict], changes: dict, name: str = "spec.yaml") -> Path:
    return write(tmp, name, yaml.safe_dump(deep_merge(base(tmp), changes), allow_unicode=True))


def plm_folder(tmp: Path, kind: str) -> str:
    """``empty``: a folder without config.json; ``pickle``: config.json and only a pickled pytorch_model.bin."""
    folder = tmp / "plms" / kind
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "pickle":
        (folder / "config.json").write_text('{"model_type": "bert", "hidden_size": 32}')
        (folder / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")  # pickle.dumps(1): never to be opened
    if kind in ("truncated", "garbage"):  # a download cut short, a file that is not safetensors at all
        import torch
        from safetensors.torch import save_file

        (folder / "config.json").write_text('{"model_type": "bert", "hidden_size": 32}')
        save_file({"w": torch.zeros(64, 32)}, str(folder / "model.safetensors"))
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2] if kind == "truncated" else b"<html>")
    return str(folder)


def a_file(tmp: Path, below: str) -> str:
    """A path ``below`` a plain file: a folder there can never be created."""
    write(tmp, "a-file", "not a folder")
    return str(tmp / "a-file" / below)


# ---- the cases -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """``argv(tmp)`` -> (command line, the file the message must name or None); ``expect``: substrings."""

    argv: Callable[[Path], tuple[list[str], str | None]]
    expect: tuple[str, ...]
    forbid: tuple[str, ...] = field(default=())  # substrings that must not appear (credentials)
    names_spec: bool = True  # False: the message names a data file the spec points at (in ``expect``)
    env: dict = field(default_factory=dict)  # environment variables the command runs with


def data_check(content: bytes | str, *flags: str, name: str = "bad.txt") -> Callable:
    def argv(tmp: Path):
        path = write(tmp, name, content)
        return ["data", "check", str(path), *flags], str(path)
    return argv


def train(changes: dict, *flags: str) -> Callable:
    def argv(tmp: Path):
        path = spec_file(tmp, base_run, _materialise(changes, tmp))
        return ["train", str(path), *flags], str(path)
    return argv


def study(changes: dict, *flags: str) -> Callable:
    def argv(tmp: Path):
        path = spec_file(tmp, base_study, _materialise(changes, tmp))
        return ["study", "run", str(path), *flags], str(path)
    return argv


def raw_spec(verb: list[str], content: bytes | str | None) -> Callable:
    """A spec file written byte for byte (``None``: no file at all)."""
    def argv(tmp: Path):
        path = tmp / "spec.yaml" if content is None else write(tmp, "spec.yaml", content)
        return [*verb, str(path)], str(path)
    return argv


def _materialise(changes, tmp: Path):
    """Spec changes may hold callables of the test folder (a PLM folder, a bad data file)."""
    if callable(changes):
        return changes(tmp)
    if isinstance(changes, dict):
        return {k: _materialise(v, tmp) for k, v in changes.items()}
    if isinstance(changes, list):
        return [_materialise(v, tmp) for v in changes]
    return changes


def bad_data(content: bytes | str, name: str = "bad/train.txt") -> Callable:
    return lambda tmp: str(write(tmp, name, content))


def evaluate(gold: str | None, pred: str | None, *flags: str, names: str = "pred") -> Callable:
    def argv(tmp: Path):
        g = str(write(tmp, "gold.txt", gold)) if gold is not None else str(tmp / "gold.txt")
        p = str(write(tmp, "pred.txt", pred)) if pred is not None else str(tmp / "pred.txt")
        return ["evaluate", "--gold", g, "--pred", p, *flags], {"pred": p, "gold": g, None: None}[names]
    return argv


def plain(*args: str, names: str | None = None) -> Callable:
    """A command line; ``{tmp}`` in an argument is the test folder."""
    def argv(tmp: Path):
        out = [a.format(tmp=tmp) for a in args]
        return out, names.format(tmp=tmp) if names else None
    return argv


def with_base_spec(*args: str) -> Callable:
    """``train <a valid spec> ARGS``: only the arguments are wrong."""
    def argv(tmp: Path):
        path = spec_file(tmp, base_run, {})
        return ["train", str(path), *args], None
    return argv


NESTED_TWO_TAGS = "a B-ORG\nb I-ORG B-GPE\n"

CASES: dict[str, Case] = {
    # -- data files (nerlab data check) --
    "data: token without tag": Case(data_check("a O\nb\n"), (":2:", "expected 'token TAG")),
    "data: unknown entity type": Case(data_check("a O\n\nb B-FOO\n"), (":3:", "unknown entity type 'FOO'")),
    "data: malformed tag": Case(data_check("a O\nb X-PERS\n"), (":2:", "malformed tag 'X-PERS'")),
    "data: B- without a type": Case(data_check("a B-\n"), (":1:", "need a type")),
    "data: lower-case tag": Case(data_check("a O\nb b-pers\n"), (":2:", "malformed tag 'b-pers'")),
    "data: O mixed with entity tags": Case(data_check("a O B-PERS\n"), (":1:", "'O' mixed")),
    "data: tab-separated score column": Case(data_check("a\tO\t0.97\n"), (":1:", "malformed tag '0.97'")),
    "data: bare CR line ends": Case(data_check(b"a O\rb B-PERS\r"), (":1:", "carriage return")),
    "data: CR inside a CRLF file": Case(data_check(b"a O\r\nb\rB-PERS\r\n"), (":2:", "carriage return")),
    "data: BOM inside the file": Case(data_check("\ufeffa O\n\n\ufeffb O\n"), (":3:", "byte-order mark")),
    "data: Windows-1256 text": Case(data_check("قال O\nمحمد B-PERS\n".encode("cp1256")), (":1:", "not UTF-8")),
    "data: UTF-16 text": Case(data_check("a O\n".encode("utf-16")), (":1:", "not UTF-8")),
    "data: gzip file": Case(data_check(gzip.compress(b"a O\n"), name="bad.txt.gz"), ("not UTF-8",)),
    "data: empty file": Case(data_check(b""), ("empty file",)),
    "data: blank lines only": Case(data_check("\n \n\t\n"), ("empty file",)),
    "data: nested file given as flat": Case(data_check(NESTED_TWO_TAGS, "--task", "flat"),
                                            (":2:", "flat file has 2 tags", "nested file?")),
    "data: missing file": Case(plain("data", "check", "{tmp}/nowhere.txt", names="{tmp}/nowhere.txt"),
                               ("no such file",)),
    "data: a folder": Case(plain("data", "check", "{tmp}", names="{tmp}"), ("a folder, not a data file",)),

    # -- run specs (nerlab train) --
    "run: unknown top-level key": Case(train({"epochz": 3}), ("epochz: unknown key",)),
    "run: unknown nested key": Case(train({"train": {"lrr": 1e-3}}), ("train.lrr: unknown key",)),
    "run: wrong type": Case(train({"train": {"epochs": "many"}}), ("train.epochs: expected int", "'many'")),
    "run: bool for int": Case(train({"train": {"batch_size": True}}), ("train.batch_size: expected int",)),
    "run: list for mapping": Case(train({"model": ["tiny:2x32"]}), ("model: expected a mapping",)),
    "run: NaN learning rate": Case(train({"train": {"lr": float("nan")}}), ("train.lr: expected a finite number",)),
    "run: zero learning rate": Case(train({"train": {"lr": 0.0}}), ("train.lr must be > 0",)),
    "run: negative loss weight": Case(train({"loss": {"preset": None, "weights": {"ce": -1.0, "dice": 1.0}}}),
                                      ("loss.weights: loss weights must be finite and >= 0", "'ce': -1.0")),
    "run: all-zero loss weights": Case(train({"loss": {"preset": None, "weights": {"ce": 0.0, "dice": 0.0}}}),
                                       ("loss.weights: at least one loss weight must be > 0",)),
    "run: unknown loss name": Case(train({"loss": {"preset": None, "weights": {"cee": 1.0}}}),
                                   ("loss.weights: unknown loss name", "cee")),
    "run: unknown loss preset": Case(train({"loss": {"preset": "fancy"}}), ("loss.preset: unknown loss preset 'fancy'",)),
    "run: negative focal gamma": Case(train({"loss": {"focal_gamma": -2.0}}), ("loss.focal_gamma must be finite and >= 0",)),
    "run: λ < 0": Case(train({"train": {"variance_penalty": -1.0}}), ("train.variance_penalty must be >= 0",)),
    "run: λ infinite": Case(train({"train": {"variance_penalty": float("inf")}}),
                            ("train.variance_penalty: expected a finite number",)),
    "run: IRM weight < 0": Case(train({"loss": {"preset": None, "weights": {"ce": 0.4, "irm": -1.0}}}),
                                ("loss.weights: loss weights must be finite and >= 0", "'irm': -1.0")),
    "run: IRM weight alone": Case(train({"loss": {"preset": None, "weights": {"irm": 2.0}}}),
                                  ("loss.weights:", "besides the irm penalty")),
    "run: unknown normalisation": Case(train({"model": {"normalisation": "padded"}}),
                                       ("model.normalisation must be one of masked, reference",)),
    "run: unknown batch order": Case(train({"train": {"batch_order": "sorted"}}),
                                     ("train.batch_order must be one of bucketed, random",)),
    "run: reference normalisation with bucketed batches": Case(
        train({"model": {"normalisation": "reference"}}),
        ("train.batch_order: the reference normalisation needs random-order batches", "'bucketed'")),
    "run: reference normalisation with a flat head": Case(
        train({"model": {"normalisation": "reference", "flat_head": True}, "train": {"batch_order": "random"}}),
        ("model.flat_head: the reference normalisation has per-type heads only",)),
    "run: missing name": Case(train({"name": DELETE}), ("name: required key is missing",)),
    "run: bad name": Case(train({"name": "my run/1"}), ("name", "letters, digits")),
    "run: unknown task": Case(train({"task": "both"}), ("task must be one of flat, nested",)),
    "run: bad precision": Case(train({"precision": "fp8"}), ("precision must be auto, fp32, bf16 or fp16",)),
    "run: bf16 on a CPU without it": Case(train({"precision": "bf16", "resources": {"use_gpu": False}}),
                                          ("precision: bf16 needs a CUDA GPU or a CPU with AMX or AVX512-BF16",),
                                          env={"NERLAB_CPU_BF16": "0"}),
    "run: dropout out of range": Case(train({"model": {"dropout": 1.5}}), ("model.dropout must be in [0, 1)",)),
    "run: zero workers": Case(train({"resources": {"workers": 0}}), ("resources.workers must be >= 1",)),
    "run: more workers than cores": Case(train({"resources": {"workers": TOO_MANY_WORKERS}}),
                                         (f"resources: one job needs {TOO_MANY_WORKERS * 0.5:g} CPU",
                                          "this machine's Ray has")),
    "run: more GPUs than the machine has": Case(train({"resources": {"use_gpu": True, "gpus_per_worker": 1000}}),
                                                ("resources: one job needs 1000 GPU",)),
    "run: zero GPUs per worker": Case(train({"resources": {"use_gpu": True, "gpus_per_worker": 0}}),
                                      ("resources.gpus_per_worker must be > 0",)),
    "run: 1.5 GPUs per worker": Case(train({"resources": {"gpus_per_worker": 1.5}}),
                                     ("resources.gpus_per_worker must be a fraction in (0, 1] or a whole number",)),
    "run: a GPU fraction for 2 DDP workers": Case(train({"resources": {"workers": 2, "gpus_per_worker": 0.5}}),
                                                  ("resources.gpus_per_worker 0.5 with 2 workers", "NCCL refuses")),
    "run: missing data file": Case(train({"data": {"train": "nowhere/train.txt"}}), ("data.train:", "no such file")),
    "run: data files and synth": Case(train({"data": {"synth": {"sentences": 100}}}), ("data:", "not both")),
    "run: unknown PLM folder": Case(train({"model": {"plm": "./plms/nothing"}}),
                                    ("model.plm:", "no such model folder")),
    "run: PLM folder without config.json": Case(train({"model": {"plm": lambda t: plm_folder(t, "empty")}}),
                                                ("model.plm:", "no config.json")),
    "run: PLM folder with only a pickle": Case(train({"model": {"plm": lambda t: plm_folder(t, "pickle")}}),
                                               ("model.plm:", "no safetensors weights", "pytorch_model.bin")),
    "run: PLM with truncated safetensors": Case(train({"model": {"plm": lambda t: plm_folder(t, "truncated")}}),
                                                ("model.plm:", "model.safetensors: unreadable safetensors weights",
                                                 "corrupt or truncated")),
    "run: output below a file": Case(train({"output": lambda t: a_file(t, "out")}),
                                     ("output:", "a-file is a file, not a folder")),
    "run: SQLite store below a file": Case(
        train({"tracking": {"tracking_uri": lambda t: f"sqlite:///{a_file(t, 'mlflow.db')}"}}),
        ("tracking.tracking_uri:", "a-file is a file, not a folder")),
    "run: unknown PLM name": Case(train({"model": {"plm": "not a plm"}}), ("model.plm:", "unknown PLM 'not a plm'")),
    "run: credentials in a wrong-typed URI": Case(
        train({"tracking": {"tracking_uri": ["http://alice:s3cret@mlflow.example:5000"]}}),
        ("tracking.tracking_uri: expected", "***@mlflow.example"), forbid=("s3cret", "alice")),
    "run: file-store tracking URI": Case(train({"tracking": {"tracking_uri": lambda t: (t / "mlruns").as_uri()}}),
                                         ("tracking.tracking_uri: MLflow 3's file store is refused",)),
    "run: unknown tracking URI scheme": Case(train({"tracking": {"tracking_uri": "mongodb://db:27017/mlflow"}}),
                                             ("tracking.tracking_uri: unknown scheme 'mongodb://'",)),
    "run: malformed data line": Case(
        train({"data": {"train": bad_data("a O\nb B-FOO\n")}}), ("bad/train.txt:2:", "unknown entity type 'FOO'"),
        names_spec=False),
    "run: nested data for a flat task": Case(
        train({"task": "flat", "data": lambda t: {**data_files(t, "flat"), "val": bad_data(NESTED_TWO_TAGS, "bad/val.txt")(t)}}),
        ("bad/val.txt:2:", "flat file has 2 tags"), names_spec=False),
    "run: invalid YAML": Case(raw_spec(["train"], "name: x\ntrain: {epochs: 1\nmodel: {}\n"),
                              ("not valid YAML",)),
    "run: YAML python tag (safe loader)": Case(
        raw_spec(["train"], "name: !!python/object/apply:os.system ['touch pwned']\n"),
        (":1:", "not valid YAML", "constructor")),
    "run: duplicate key": Case(raw_spec(["train"], "name: x\ntrain:\n  lr: 0.01\n  epochs: 2\n  lr: 0.1\n"),
                               (":5: train.lr: duplicate key",)),
    "run: spec not UTF-8": Case(raw_spec(["train"], "name: قال\n".encode("cp1256")), ("not UTF-8",)),
    "run: empty spec": Case(raw_spec(["train"], ""), ("empty spec",)),
    "run: spec is a list": Case(raw_spec(["train"], "- a\n- b\n"), ("expected a mapping", "got list")),
    "run: missing spec": Case(raw_spec(["train"], None), ("no such spec file",)),
    "run: spec is a folder": Case(plain("train", "{tmp}", names="{tmp}"), ("a folder, not a spec file",)),

    # -- study specs (nerlab study run) --
    "study: bf16 on a CPU without it": Case(study({"precision": "bf16", "resources": {"use_gpu": False}}),
                                            ("precision: bf16 needs a CUDA GPU or a CPU with AMX or AVX512-BF16",),
                                            env={"NERLAB_CPU_BF16": "0"}),
    "study: empty PLM list": Case(study({"search": {"plm": []}}), ("search.plm: empty search space",)),
    "study: empty loss list": Case(study({"search": {"loss": []}}), ("search.loss: empty search space",)),
    "study: empty loss mapping": Case(study({"search": {"loss": {}}}), ("search.loss: empty search space",)),
    "study: empty penalty list": Case(study({"search": {"variance_penalty": []}}),
                                      ("search.variance_penalty: empty list",)),
    "study: empty seeds": Case(study({"search": {"seeds": []}}), ("search.seeds",)),
    "study: λ < 0 in a grid": Case(study({"search": {"variance_penalty": [0.0, -5.0]}}),
                                   ("search.variance_penalty: λ must be >= 0",)),
    "study: λ < 0 in a range": Case(study({"search": {"mode": "optuna", "variance_penalty": {"uniform": [-1, 5]}}}),
                                    ("search.variance_penalty: bad range", "0 <= lo")),
    "study: λ < 0 in shared train": Case(study({"train": {"variance_penalty": -1.0}}),
                                         ("train.variance_penalty must be >= 0",)),
    "study: negative loss weight": Case(study({"search": {"loss": {"mine": {"ce": -0.5, "dice": 1.0}}}}),
                                        ("search.loss.mine:", ">= 0")),
    "study: all-zero loss weights": Case(study({"search": {"loss": {"mine": {"ce": 0.0, "dice": 0.0}}}}),
                                         ("search.loss.mine:", "at least one loss weight must be > 0")),
    "study: all-zero loss weight ranges": Case(
        study({"search": {"mode": "optuna", "loss_weights": {"ce": {"uniform": [0, 0]}, "dice": {"uniform": [0, 0]}}}}),
        ("search.loss_weights:", "all loss weights are zero")),
    "study: unknown loss in loss_weights": Case(
        study({"search": {"mode": "optuna", "loss_weights": {"cee": {"uniform": [0, 1]}}}}),
        ("search.loss_weights.cee: unknown loss",)),
    "study: IRM weight < 0 in a grid": Case(study({"search": {"loss": {"mine": {"ce": 1.0, "irm": -2.0}}}}),
                                            ("search.loss.mine:", "'irm': -2.0")),
    "study: IRM weight range below 0": Case(
        study({"search": {"mode": "optuna", "loss_weights": {"ce": {"uniform": [0.1, 1]}, "irm": {"uniform": [-1, 5]}}}}),
        ("search.loss_weights.irm: bad range", "0 <= lo")),
    "study: only the IRM weight can be > 0": Case(
        study({"search": {"mode": "optuna", "loss_weights": {"ce": {"uniform": [0, 0]}, "irm": {"uniform": [0, 5]}}}}),
        ("search.loss_weights: only the irm penalty can be > 0",)),
    "study: reference normalisation with bucketed batches": Case(
        study({"model": {"normalisation": "reference"}}),
        ("train.batch_order: the reference normalisation needs random-order batches",)),
    "study: unknown loss preset": Case(study({"search": {"loss": ["ce", "fancy"]}}),
                                       ("search.loss: unknown loss 'fancy'",)),
    "study: unknown PLM folder": Case(study({"search": {"plm": ["tiny:2x32", "./plms/nothing"]}}),
                                      ("search.plm[1]:", "no such model folder")),
    "study: PLM folder with only a pickle": Case(study({"search": {"plm": [lambda t: plm_folder(t, "pickle")]}}),
                                                 ("search.plm[0]:", "no safetensors weights")),
    "study: PLM that is not safetensors": Case(study({"search": {"plm": [lambda t: plm_folder(t, "garbage")]}}),
                                               ("search.plm[0]:", "unreadable safetensors weights")),
    "study: output below a file": Case(study({"output": lambda t: a_file(t, "out")}),
                                       ("output:", "a-file is a file, not a folder")),
    "study: SQLite store is a folder": Case(study({"tracking": {"tracking_uri": lambda t: f"sqlite:///{t}"}}),
                                            ("tracking.tracking_uri:", "is a folder, not a SQLite file")),
    "study: unknown search key": Case(study({"search": {"plms": ["tiny:2x32"]}}), ("search.plms: unknown key",)),
    "study: unknown mode": Case(study({"search": {"mode": "random"}}), ("search.mode must be 'grid' or 'optuna'",)),
    "study: range in a grid": Case(study({"search": {"lr": {"uniform": [1e-5, 1e-3]}}}),
                                   ("search.lr: ranges need mode: optuna",)),
    "study: reversed range": Case(study({"search": {"mode": "optuna", "lr": {"log_uniform": [1e-3, 1e-5]}}}),
                                  ("search.lr: bad range",)),
    "study: trial larger than the machine": Case(study({"resources": {"workers_per_trial": TOO_MANY_WORKERS}}),
                                                 (f"resources: one job needs {TOO_MANY_WORKERS * 0.5 + 0.1:g} CPU",
                                                  "+ 0.1 for the trial")),
    "study: negative GPUs per worker": Case(study({"resources": {"gpus_per_worker": -0.25}}),
                                            ("resources.gpus_per_worker must be > 0",)),
    "study: a GPU fraction for 2 workers per trial": Case(
        study({"resources": {"workers_per_trial": 2, "gpus_per_worker": 0.25, "use_gpu": True}}),
        ("resources.gpus_per_worker 0.25 with 2 workers", "NCCL refuses")),
    "study: zero samples": Case(study({"search": {"mode": "optuna", "num_samples": 0}}),
                                ("search.num_samples must be >= 1",)),
    "study: ASHA grace 0": Case(study({"scheduler": {"asha": {"grace_period": 0}}}), ("scheduler.asha: grace_period >= 1",)),
    "study: malformed data line": Case(study({"data": {"val": bad_data("a O\nb I-\n", "bad/val.txt")}}),
                                       ("bad/val.txt:2:", "need a type"), names_spec=False),
    "study: missing spec": Case(raw_spec(["study", "run"], None), ("no such spec file",)),

    # -- command lines --
    "cli: no verb": Case(plain(), ("required: VERB",)),
    "cli: unknown verb": Case(plain("frobnicate"), ("invalid choice: 'frobnicate'",)),
    "cli: data without action": Case(plain("data"), ("required: ACTION",)),
    "cli: train without spec": Case(plain("train"), ("a run spec (RUN.yaml) or --from-run", "nerlab train --help")),
    "cli: train with a spec and --from-run": Case(with_base_spec("--from-run", "abc"), ("one of the two",)),
    "cli: --from-run without a store": Case(plain("train", "--from-run", "abc"),
                                            ("abc: which MLflow store holds it? give --study STUDY",)),
    "cli: --from-run runs:/ID/PATH": Case(plain("train", "--from-run", "runs:/abc/model"),
                                          ("--from-run runs:/abc/model: give a run id, or runs:/RUN_ID",)),
    "cli: --from-run --smoke": Case(plain("train", "--from-run", "abc", "--smoke"), ("--smoke: not with --from-run",)),
    "cli: --study without --from-run": Case(with_base_spec("--study", "x"), ("--study: only with --from-run",)),
    "cli: --workers 0": Case(with_base_spec("--workers", "0"), ("--workers: must be >= 1, not 0",)),
    "cli: --workers -2": Case(with_base_spec("--workers", "-2"), ("--workers: must be >= 1",)),
    "cli: --workers two": Case(with_base_spec("--workers", "two"), ("--workers: invalid int value: 'two'",)),
    "cli: --epochs 0": Case(with_base_spec("--epochs", "0"), ("--epochs: must be >= 1, not 0",)),
    "cli: unknown option": Case(with_base_spec("--frobnicate"), ("unrecognized arguments: --frobnicate",)),
    "cli: data check --task both": Case(lambda tmp: (data_check(GOOD_NESTED, "--task", "both")(tmp)[0], None),
                                        ("argument --task: invalid choice: 'both'",)),
    "cli: data synth too few sentences": Case(plain("data", "synth", "--out", "{tmp}/out", "--sentences", "5"),
                                              ("--sentences must be at least 10",)),
    "cli: plm tiny missing corpus": Case(plain("plm", "tiny", "--corpus", "{tmp}/nowhere.txt", "--out", "{tmp}/out",
                                               names="{tmp}/nowhere.txt"), ("no such file (--corpus)",)),
    "cli: plm tiny hidden not a multiple of heads": Case(
        lambda tmp: (["plm", "tiny", "--corpus", str(write(tmp, "c.txt", GOOD_NESTED)), "--out", str(tmp / "out"),
                      "--hidden", "10", "--heads", "3"], None), ("--hidden 10 must be a multiple of --heads 3",)),
    "cli: plm tiny --layers 0": Case(plain("plm", "tiny", "--corpus", "x", "--out", "{tmp}/out", "--layers", "0"),
                                     ("--layers: must be >= 1",)),
    "cli: select --ensemble 0": Case(plain("select", "{tmp}", "--name", "m", "--ensemble", "0"),
                                     ("--ensemble: must be >= 1",)),
    "cli: select --ensemble missing --gold-test": Case(
        plain("select", "{tmp}", "--name", "m", "--ensemble", "2", "--gold-test", "{tmp}/nowhere.txt",
              names="{tmp}/nowhere.txt"), ("no such file (--gold-test)",)),
    "cli: evaluate without --task": Case(evaluate(GOOD_NESTED, GOOD_NESTED, names=None), ("required: --task",)),
    "cli: evaluate missing gold": Case(evaluate(None, GOOD_NESTED, "--task", "nested", names="gold"),
                                       ("no such file",)),
    "cli: evaluate nested predictions as flat": Case(evaluate(GOOD_FLAT, NESTED_TWO_TAGS, "--task", "flat"),
                                                     (":2:", "flat file has 2 tags")),
    "cli: evaluate sentence count differs": Case(evaluate(GOOD_NESTED, GOOD_NESTED.split("\n\n")[0] + "\n", "--task", "nested"),
                                                 ("pred.txt: 1 sentences, but", "gold.txt has 2")),
    "cli: evaluate tokens differ": Case(evaluate(GOOD_NESTED, GOOD_NESTED.replace("ذهب", "جاء"), "--task", "nested"),
                                        ("pred.txt:7: sentence 2 has other tokens than", "gold.txt:7")),
    "cli: study status of nothing": Case(plain("study", "status", "{tmp}/nowhere"), ("no study found",)),
    "cli: study resume of nothing": Case(plain("study", "resume", "{tmp}/nowhere"), ("no study found",)),
    "cli: ui without a store": Case(plain("ui", "{tmp}/nowhere"), ("no MLflow store found",)),
    "cli: ui --port out of range": Case(plain("ui", "x", "--port", "70000"), ("--port: must be a port",)),
}


# ---- running a case in-process ------------------------------------------------------------------------------
@pytest.fixture
def tripwires(monkeypatch, tmp_path):
    """No Ray, no MLflow server, no MLflow run: any of them means validation let bad input through."""
    if ray.is_initialized():
        pytest.skip("Ray already runs in this process; these cases check that nothing starts it")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # a default output folder (runs/<name>) would land here

    def refuse(what):
        def tripwire(*args, **kwargs):
            raise AssertionError(f"bad input reached {what}")
        return tripwire

    monkeypatch.setattr(ray, "init", refuse("ray.init"))
    monkeypatch.setattr(mlflow_server, "start", refuse("mlflow_server.start"))
    monkeypatch.setattr(mlflow_server, "Server", refuse("mlflow_server.Server"))
    monkeypatch.setattr(MlflowClient, "create_run", refuse("MlflowClient.create_run"))
    monkeypatch.setattr(MlflowClient, "create_experiment", refuse("MlflowClient.create_experiment"))


def assert_nothing_started(tmp: Path) -> None:
    assert not ray.is_initialized()
    assert not store(tmp).exists() and not store(tmp).parent.exists(), "the spec's MLflow store was created"
    assert not list(tmp.rglob("*.db")), "an MLflow or Optuna store was created"
    out = tmp / "out"
    if out.exists():
        left = sorted(p.name for p in out.iterdir())
        assert not left, f"half-written output: {left}"
    assert not [p for p in tmp.rglob("*") if p.name in HALF_WRITTEN]
    assert not (tmp / "runs").exists()
    assert not (tmp / "pwned").exists()


def check_message(err: str, names: str | None, case: Case) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    line = lines[0]
    assert line.startswith("nerlab: error: "), line
    if names:
        assert names in line, f"the message does not name {names}: {line}"
    missing = [e for e in case.expect if e not in line]
    assert not missing, f"{missing} not in: {line}"
    leaked = [f for f in case.forbid if f in line]
    assert not leaked, f"{leaked} leaked into: {line}"
    return line


@pytest.mark.parametrize("case_id", list(CASES))
def test_bad_input_exits_2_with_one_line_and_starts_nothing(case_id, tmp_path, tripwires, capsys, monkeypatch) -> None:
    case = CASES[case_id]
    argv, names = case.argv(tmp_path)
    names = names if case.names_spec else None
    for k, v in case.env.items():
        monkeypatch.setenv(k, v)
    capsys.readouterr()

    code = cli_main(argv)

    captured = capsys.readouterr()
    assert code == 2, f"exit code {code}; stderr: {captured.err}"
    assert captured.out == ""
    check_message(captured.err, names, case)
    assert_nothing_started(tmp_path)


def test_every_verb_refuses_an_unknown_option(cli_verbs, tmp_path, tripwires, capsys) -> None:
    """Beyond the cases above: every verb of the command line refuses a bad argument the same way."""
    for verb, _ in cli_verbs:
        capsys.readouterr()
        assert cli_main([*verb, "--frobnicate"]) == 2, verb
        captured = capsys.readouterr()
        assert captured.out == ""
        line = check_message(captured.err, None, Case(lambda tmp: ([], None), ()))
        # the unknown option, or first a missing required argument with the verb's own help
        assert "unrecognized arguments: --frobnicate" in line or f"see 'nerlab {' '.join(verb)} --help'" in line
    assert_nothing_started(tmp_path)


def test_base_specs_are_valid(tmp_path, tripwires) -> None:
    """Each case breaks one thing in these specs, so they must themselves pass validation."""
    from nerlab.models.wojood import WOJOOD_TYPES, read_file
    from nerlab.platform.specs.run import load_run_spec
    from nerlab.platform.specs.study import load_study_spec

    run = load_run_spec(spec_file(tmp_path, base_run, {}))
    assert run.model.plm == "tiny:2x32" and run.output == str(tmp_path / "out")
    st = load_study_spec(spec_file(tmp_path, base_study, {}, "study-spec.yaml"))
    assert st.search.plm == ("tiny:2x32",)
    for task in ("nested", "flat"):
        for f in data_files(tmp_path, task).values():
            assert read_file(f, task=task, types=WOJOOD_TYPES)
    assert_nothing_started(tmp_path)


def test_crlf_bom_and_tab_separated_files_are_good_input(tmp_path, capsys) -> None:
    """CRLF line ends, a leading BOM and tabs between columns are Wojood files like any other."""
    path = write(tmp_path, "ok.txt", "\ufeffقال\tO\r\nمحمد B-PERS\r\n\r\nذهب O\r\n".encode("utf-8"))
    assert cli_main(["data", "check", str(path)]) == 0
    assert "2 sentences, 3 tokens, 1 mentions" in capsys.readouterr().out


# ---- the real process: exit code, one line on stderr, no Ray processes ------------------------------------------
SUBPROCESS_CASES = ["cli: unknown verb", "cli: --workers 0", "data: nested file given as flat",
                    "run: negative loss weight", "run: malformed data line", "study: empty PLM list",
                    "run: IRM weight < 0", "run: reference normalisation with a flat head",
                    "run: bf16 on a CPU without it"]


def ray_processes() -> dict[int, str]:
    """pid -> command line of every raylet and gcs_server on the machine."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            comm = (proc / "comm").read_text().strip()
            if comm in ("raylet", "gcs_server"):
                found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return found


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_input_in_a_real_process(case_id, tmp_path) -> None:
    case = CASES[case_id]
    argv, names = case.argv(tmp_path)
    names = names if case.names_spec else None
    ray_tmp = tmp_path / "raytmp"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(RAY_TMPDIR=str(ray_tmp), **case.env)
    before = set(ray_processes())

    proc = subprocess.run([sys.executable, "-m", "nerlab.platform.cli", *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)

    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    check_message(proc.stderr, names, case)
    ours = {pid: cmd for pid, cmd in ray_processes().items() if pid not in before and str(ray_tmp) in cmd}
    assert not ours, f"Ray processes started: {ours}"
    assert not ray_tmp.exists(), "a Ray session folder was created"
    assert_nothing_started(tmp_path)


@pytest.mark.parametrize("verb", ["train", "study"])
def test_an_output_folder_nobody_can_write_is_bad_input(verb, tmp_path, tripwires, capsys) -> None:
    """Even root cannot write in an immutable folder (chattr +i): the check writes, it does not guess."""
    locked = tmp_path / "locked"
    locked.mkdir()
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        if os.geteuid() == 0:
            pytest.skip("chattr +i is not available here, and root may write anywhere else")
        locked.chmod(0o555)
    try:
        build = train if verb == "train" else study
        argv, _ = build({"output": str(locked / "out")})(tmp_path)
        capsys.readouterr()
        assert cli_main(argv) == 2
        err = capsys.readouterr().err
        assert "output:" in err and f"cannot write in {locked}" in err and len(err.splitlines()) == 1
        assert not (locked / "out").exists()
        assert_nothing_started(tmp_path)
    finally:
        subprocess.run(["chattr", "-i", str(locked)], capture_output=True)
        locked.chmod(0o755)


# ---- every verb that writes checks where, before it starts --------------------------------------------------
WRITING_VERBS = ("data synth", "plm tiny", "predict", "report", "train", "study run")


def _writing_verbs(t: Path) -> dict[str, tuple[list[str], str]]:
    """verb -> (its argv up to the output option, 'folder' or 'file'): each verb that writes a folder or a file."""
    corpus = t / "corpus.txt"
    corpus.write_text("ذهب O\nأحمد B-PERS\n\n", encoding="utf-8")
    return {
        "data synth": (["data", "synth", "--sentences", "20", "--out"], "folder"),
        "plm tiny": (["plm", "tiny", "--corpus", str(corpus), "--out"], "folder"),
        "predict": (["predict", "--model", str(t / "model"), "--input", str(corpus), "--out"], "file"),
        "report": (["report", str(t / "study"), "--out"], "folder"),
        "train": (["train", str(t / "run.yaml"), "--output"], "folder"),
        "study run": (["study", "run", str(t / "study.yaml"), "--output"], "folder"),
    }


def test_every_output_option_is_a_checked_place() -> None:
    """Each --out/--output of the command line is one of the two checked types, so a new verb cannot skip it."""
    from nerlab.platform.cli import build_parser
    from nerlab.platform.commands import output_file, output_folder

    def options(parser, prefix=()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from options(sub, (*prefix, name))
            elif {"--out", "--output"} & set(action.option_strings):
                yield " ".join(prefix), action.type

    found = dict(options(build_parser()))
    assert set(found) == set(WRITING_VERBS)
    assert all(t in (output_folder, output_file) for t in found.values()), found


@pytest.mark.parametrize("place", ["under a file", "the wrong kind", "nobody can write"])
@pytest.mark.parametrize("verb", WRITING_VERBS)
def test_every_verb_that_writes_refuses_a_bad_place(verb, place, tmp_path, tripwires, capsys) -> None:
    argv, kind = _writing_verbs(tmp_path)[verb]
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    locked = tmp_path / "locked"
    locked.mkdir()
    if place == "under a file":
        target, expect = a_file / "out", "a-file is a file, not a folder"
    elif place == "the wrong kind":  # a folder where a file goes, a file where a folder goes
        target, expect = (tmp_path, "is a folder; give a file name") if kind == "file" else \
            (a_file, "a-file is a file, not a folder")
    else:
        if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
            if os.geteuid() == 0:
                pytest.skip("chattr +i is not available here, and root may write anywhere else")
            locked.chmod(0o555)
        target, expect = locked / "out", f"cannot write in {locked}"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    try:
        capsys.readouterr()
        code = cli_main([*argv, str(target)])
        out, err = capsys.readouterr()
    finally:
        subprocess.run(["chattr", "-i", str(locked)], capture_output=True)
        locked.chmod(0o755)
    assert code == 2 and out == "", (code, out, err)
    assert len(err.splitlines()) == 1 and err.startswith("nerlab: error: argument --out"), err
    assert str(target) in err and expect in err, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
