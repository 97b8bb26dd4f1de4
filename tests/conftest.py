"""Shared fixtures: the real Wojood sample (shipped in tests/data), synthetic data, tiny PLMs, a local Ray
with 2 CPUs, and spec files written from a base spec plus changes."""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "wojood-sample"
SAMPLE_FLAT = ROOT / "tests" / "data" / "wojood-sample-flat"

# Tests that press Ctrl-C on a command (SIGINT) expect what a terminal gives it. A suite started in the background
# by a non-interactive shell (a CI script, `nohup ... &`) inherits SIGINT ignored, and so would every command it
# starts: Python then installs no KeyboardInterrupt and Ctrl-C does nothing. The suite takes the default handler,
# so the commands it starts begin with SIGINT's default disposition, as under a terminal.
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def cpu_bf16_flags() -> bool:
    """Does the kernel list AMX or AVX512-BF16 among this CPU's flags (/proc/cpuinfo)? Read independently of torch."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return bool({"amx_bf16", "amx_tile", "avx512_bf16"} & set(line.split(":", 1)[1].split()))
    return False


def _sample(folder: Path) -> Path:
    """A sample folder shipped with the tests: missing is a broken checkout, a failure, never a skip."""
    missing = [f.name for f in (folder / f"{s}.txt" for s in ("train", "val", "test")) if not f.is_file()]
    if missing:
        pytest.fail(f"{folder}: {', '.join(missing)} missing (the sample ships with the repository, see tests/data/README.md)")
    return folder


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return _sample(SAMPLE)


@pytest.fixture(scope="session")
def sample_flat_dir() -> Path:
    return _sample(SAMPLE_FLAT)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A synthetic nested corpus (train/val/test) shared by the whole test session."""
    from nerlab.models.synth import write_corpus

    out = tmp_path_factory.mktemp("synth")
    write_corpus(out, 1500, seed=7)
    return out


@pytest.fixture(scope="session")
def tiny_plm(synth_dir, tmp_path_factory) -> Path:
    """A tiny BERT whose WordPiece vocabulary is learned from the synthetic corpus."""
    from nerlab.models.tiny_plm import build_tiny_plm

    out = tmp_path_factory.mktemp("tiny-plm")
    return build_tiny_plm([synth_dir / "train.txt"], out, layers=2, hidden=64, heads=2, seed=0)


@pytest.fixture(scope="session")
def sample_plm(sample_dir, tmp_path_factory) -> Path:
    """A tiny BERT whose vocabulary is learned from the real sample's training split."""
    from nerlab.models.tiny_plm import build_tiny_plm

    out = tmp_path_factory.mktemp("sample-plm")
    return build_tiny_plm([sample_dir / "train.txt"], out, layers=2, hidden=64, heads=2, seed=0)


@contextmanager
def _local_ray(**kwargs):
    """A local Ray for the block (``connect_ray(**kwargs)``), shut down after it if this block started it; no
    RAY_ADDRESS or MLflow URI leaks in, and the Ray settings connect_ray writes into os.environ (for the
    processes it starts) leave with it instead of reaching later tests."""
    import ray

    from nerlab.platform.training.job import connect_ray

    before = dict(os.environ)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_ADDRESS", raising=False)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        started = connect_ray(**kwargs)
        try:
            yield
        finally:
            if started:
                ray.shutdown()
            for key in set(os.environ) - set(before):
                del os.environ[key]
            os.environ.update(before)


@pytest.fixture(scope="session")
def local_ray():
    """``with local_ray(num_cpus=2): ...``: see ``_local_ray``."""
    return _local_ray


@pytest.fixture(scope="module")
def ray_2_cpus():
    """One local Ray (2 CPUs) for a module, shut down after it; nothing of it stays in os.environ."""
    with _local_ray(num_cpus=2):
        yield


@pytest.fixture(scope="session")
def listening():
    """``listening(processes)``: the (address, port) pairs on which those psutil processes accept TCP
    connections, read from the kernel's socket table (processes that are gone count for nothing)."""
    import psutil

    def addresses(processes) -> set[tuple[str, int]]:
        out = set()
        for proc in processes:
            try:
                out |= {(c.laddr.ip, c.laddr.port) for c in proc.net_connections("inet")
                        if c.status == psutil.CONN_LISTEN}
            except psutil.NoSuchProcess:
                pass
        return out
    return addresses


@pytest.fixture(scope="session")
def outside_address() -> str:
    """An IPv4 address of this machine that is not loopback: where a server bound to 127.0.0.1 must refuse."""
    import ipaddress
    import socket

    import psutil

    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not ipaddress.ip_address(a.address).is_loopback:
                return a.address
    pytest.skip("this machine has no IPv4 address besides loopback: no other interface to be refused on")


def deep_merge(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` merged in, mapping by mapping (a change of ``train.lr`` keeps ``train.epochs``)."""
    out = dict(base)
    for k, v in changes.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture(scope="session")
def spec_file():
    """``spec_file(path, base, **changes)``: write ``base`` deep-merged with ``changes`` as a YAML spec."""
    def write(path: Path, base: dict, **changes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(deep_merge(base, changes), allow_unicode=True), encoding="utf-8")
        return path
    return write


@pytest.fixture(scope="session")
def cli_verbs() -> list:
    """Every full verb of the command line (``("study", "run")``, ``("train",)``, ...) with its parser."""
    import argparse

    from nerlab.platform.cli import build_parser

    def leaves(parser, prefix=()):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield prefix, parser
        for action in subs:
            for name, sub in action.choices.items():
                yield from leaves(sub, prefix + (name,))
    return list(leaves(build_parser()))


@pytest.fixture(autouse=True)
def no_tracking_uri_leak():
    """A test must leave MLFLOW_TRACKING_URI as it found it: MLflow's set_tracking_uri writes it into the
    environment, and every study or job started later in this process's children would track into it."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    after = os.environ.get("MLFLOW_TRACKING_URI")
    if after != before:
        os.environ.pop("MLFLOW_TRACKING_URI", None) if before is None else os.environ.update(MLFLOW_TRACKING_URI=before)
        pytest.fail(f"the test left MLFLOW_TRACKING_URI={after!r} (was {before!r})")
