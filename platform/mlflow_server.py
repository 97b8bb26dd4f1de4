"""A local ``mlflow server`` over a study's SQLite store: the one writer while trials run in parallel,
and the UI people browse. Always bound to 127.0.0.1 unless asked otherwise."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start(store_uri: str, artifacts_uri: str | None, host: str = "127.0.0.1", port: int | None = None,
          log_file: Path | None = None, timeout: float = 90.0) -> tuple[subprocess.Popen, str]:
    """Start ``mlflow server`` and wait until /health answers; returns (process, url)."""
    port = port or free_port(host)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store_uri,
           "--host", host, "--port", str(port), "--workers", "1"]
    if artifacts_uri:
        cmd += ["--artifacts-destination", artifacts_uri]
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL
    # MLflow's job runner (GenAI evaluation jobs, four huey consumer processes) is of no use here.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {proc.returncode} (log: {log_file})")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.3)
    stop(proc)
    raise RuntimeError(f"mlflow server did not answer on {url} within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def serving(store_uri: str, artifacts_uri: str | None, log_file: Path | None = None) -> Iterator[str]:
    proc, url = start(store_uri, artifacts_uri, log_file=log_file)
    try:
        yield url
    finally:
        stop(proc)
