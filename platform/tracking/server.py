"""A local ``mlflow server`` over a study's SQLite store: the one writer while trials run in parallel,
and the UI people browse. Always bound to 127.0.0.1 unless asked otherwise.

The server (``mlflow server`` and its uvicorn child) runs in a process group of its own under a small
supervisor, this module run as a program: it ends the whole group when the command that started it is
gone, however that command ended (SIGKILL included), so no server outlives its command.
"""

from __future__ import annotations

import http.client
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


class ServerExited(RuntimeError):
    """The server process ended before it answered (a bad store, or its port taken meanwhile)."""


class Server:
    """A launched ``mlflow server``: ``ready()`` waits until /health answers and returns its URL."""

    def __init__(self, store_uri: str, artifacts_uri: str | None, host: str = "127.0.0.1", port: int | None = None,
                 log_file: Path | None = None):
        port = port or free_port(host)
        cmd = [sys.executable, "-m", "nerlab.platform.tracking.server", str(os.getpid()),
               sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store_uri,
               "--host", host, "--port", str(port), "--workers", "1"]
        if artifacts_uri:
            cmd += ["--artifacts-destination", artifacts_uri]
        out = open(log_file, "ab") if log_file else subprocess.DEVNULL
        # MLflow's job runner (GenAI evaluation jobs, four huey consumer processes) is of no use here.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        self.url, self.log_file = f"http://{host}:{port}", log_file

    def ready(self, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerExited(f"mlflow server exited with code {self.proc.returncode} (log: {self.log_file})")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self.url
            except (OSError, http.client.HTTPException):  # not up yet, or another program's port (see serving)
                time.sleep(0.3)
        stop(self.proc)
        raise RuntimeError(f"mlflow server did not answer on {self.url} within {timeout:.0f} s")


def start(store_uri: str, artifacts_uri: str | None, host: str = "127.0.0.1", port: int | None = None,
          log_file: Path | None = None, timeout: float = 90.0) -> tuple[subprocess.Popen, str]:
    """Start ``mlflow server`` and wait until /health answers; returns (process, url).

    A port picked free may be bound by another process (a Ray worker starting) before the server binds it;
    the server then exits and is started again on another port (three tries in all). A port the caller
    gave is tried once."""
    tries = 1 if port else 3
    for attempt in range(tries):
        server = Server(store_uri, artifacts_uri, host, port, log_file)
        try:
            return server.proc, server.ready(timeout)
        except ServerExited:
            stop(server.proc)
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def stop(proc: subprocess.Popen) -> None:
    """End the server's whole process group (supervisor, mlflow, uvicorn) and wait for it."""
    if proc.poll() is not None:  # the supervisor ended, and took its group with it
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # the group outlives the supervisor by the time uvicorn takes to stop
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def serving(store_uri: str, artifacts_uri: str | None, log_file: Path | None = None) -> Iterator[str]:
    """A server, up, for the ``with`` block (its URL); stopped on exit."""
    proc, url = start(store_uri, artifacts_uri, log_file=log_file)
    try:
        yield url
    finally:
        stop(proc)


def _supervise(parent: int, cmd: list[str]) -> int:
    """Run ``cmd`` in this process group; end the group when ``parent`` is no longer this one's parent."""
    child = subprocess.Popen(cmd)

    def end(*_):
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(0, signal.SIGKILL)
        sys.exit(0)

    signal.signal(signal.SIGTERM, end)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the command, which stops the server
    while child.poll() is None:
        if os.getppid() != parent:  # the command is gone: take the server down with it
            os.killpg(0, signal.SIGTERM)
        time.sleep(0.5)
    return child.returncode


if __name__ == "__main__":
    sys.exit(_supervise(int(sys.argv[1]), sys.argv[2:]))
