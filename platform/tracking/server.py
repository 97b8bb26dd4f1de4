"""A local ``mlflow server`` over a study's SQLite store: the one writer while trials run in parallel,
and the UI people browse. Always bound to 127.0.0.1 unless asked otherwise.

The server (``mlflow server`` and its uvicorn child) runs in a process group of its own under a small
supervisor, this module run as a program: it ends the whole group when the command that started it is
gone, however that command ended (SIGKILL included), so no server outlives its command.

Every server nerlab starts gets its port by one rule, ``on_a_port`` (a given port once; else a preferred
one, then ports picked free, three tries), and counts as up only once a process of its own listens there
(``listens``) and answers: another program that took the port meanwhile is never mistaken for it.
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
from typing import Callable, Iterator, TypeVar

import psutil


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class PortLost(RuntimeError):
    """A server did not get the port it was started on (another process bound it first)."""


class ServerExited(PortLost):
    """The server process ended before it answered (its port taken meanwhile, or a bad store)."""


T = TypeVar("T")


def on_a_port(start: Callable[[int], T], port: int | None = None, prefer: int | None = None,
              host: str = "127.0.0.1", tries: int = 3) -> T:
    """The port rule of every server nerlab starts (an MLflow server, the UI, a local Ray's dashboard).

    A port the caller gave is tried once. Otherwise ``prefer`` (if given) is tried first, then ports picked
    free, ``tries`` in all: a port picked free may be bound by another process (a Ray worker starting)
    before the server binds it, and ``start(port)`` then raises ``PortLost``, having cleaned up after itself.
    """
    for attempt in range(1 if port else tries):
        try:
            return start(port or (prefer if attempt == 0 and prefer else free_port(host)))
        except PortLost:
            if port or attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` or one of its descendants listens on TCP ``port``.

    Once one of them does, no other program can answer there (servers here do not share ports): what
    answers is the server that was started, not another that took the port first."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return False
    for proc in procs:
        try:
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in proc.net_connections("tcp")):
                return True
        except psutil.Error:  # ended meanwhile, or not ours to inspect
            continue
    return False


class Server:
    """A launched server command, under the supervisor: ``ready()`` waits until the server listens on
    its port and ``health`` answers 200 there, and returns its URL."""

    def __init__(self, cmd: list[str], host: str, port: int, health: str = "/health",
                 log_file: Path | None = None, env: dict | None = None):
        out = open(log_file, "ab") if log_file else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", "nerlab.platform.tracking.server", str(os.getpid()), *cmd],
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                     env=os.environ if env is None else env)
        self.port, self.health, self.log_file = port, health, log_file
        self.url = f"http://{host}:{port}"

    def ready(self, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerExited(f"{self.url}: the server exited with code {self.proc.returncode} "
                                   f"(log: {self.log_file})")
            try:
                if listens(self.proc.pid, self.port):  # ours: not another program's that took the port
                    with urllib.request.urlopen(f"{self.url}{self.health}", timeout=2) as r:
                        if r.status == 200:
                            return self.url
            except (OSError, http.client.HTTPException):  # not up yet
                pass
            time.sleep(0.3)
        stop(self.proc)
        raise RuntimeError(f"the server did not answer on {self.url} within {timeout:.0f} s (log: {self.log_file})")


def start_command(cmd: Callable[[int], list[str]], host: str = "127.0.0.1", port: int | None = None,
                  prefer: int | None = None, health: str = "/health", log_file: Path | None = None,
                  env: dict | None = None, timeout: float = 90.0) -> tuple[subprocess.Popen, str]:
    """Start the server ``cmd(port)`` (an HTTP server on ``host``) under ``on_a_port``'s rule and wait
    until it answers; returns (supervisor process, url). Stop it with ``stop``."""
    def attempt(p: int) -> tuple[subprocess.Popen, str]:
        server = Server(cmd(p), host, p, health, log_file, env)
        try:
            return server.proc, server.ready(timeout)
        except ServerExited:
            stop(server.proc)
            raise

    return on_a_port(attempt, port, prefer, host)


def start(store_uri: str, artifacts_uri: str | None, host: str = "127.0.0.1", port: int | None = None,
          log_file: Path | None = None, timeout: float = 90.0, prefer: int | None = None
          ) -> tuple[subprocess.Popen, str]:
    """Start ``mlflow server`` over a store and wait until it answers; returns (process, url)."""
    def cmd(p: int) -> list[str]:
        return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store_uri,
                "--host", host, "--port", str(p), "--workers", "1",
                *(["--artifacts-destination", artifacts_uri] if artifacts_uri else [])]

    # MLflow's job runner (GenAI evaluation jobs, four huey consumer processes) is of no use here.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return start_command(cmd, host, port, prefer, "/health", log_file, env, timeout)


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
