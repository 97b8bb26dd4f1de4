"""One driver per output folder and per study on a tracking server; what makes two specs the same study."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from nerlab.models import names as N
from nerlab.platform.studies import ownership
from nerlab.platform.tracking import server as mlflow_server
from nerlab.platform.errors import UsageError

HOLD = textwrap.dedent("""
    import sys, time
    from nerlab.platform.studies.ownership import FolderLock
    with FolderLock(sys.argv[1], "study x"):
        print("held", flush=True)
        time.sleep(120)
""")


def hold_in_subprocess(folder) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_folder_held_by_a_live_driver_is_refused_naming_it(tmp_path):
    p = hold_in_subprocess(tmp_path)
    try:
        with pytest.raises(UsageError) as e:
            with ownership.FolderLock(tmp_path, "study x"):
                pass
        assert f"study x is already running: pid {p.pid} on " in str(e.value)
        assert "\n" not in str(e.value)
    finally:
        p.kill()
        p.wait()


def test_a_holder_caught_between_taking_the_lock_and_naming_itself_is_still_named(tmp_path, monkeypatch):
    """The kernel lock comes first, the holder's name a moment later: a second driver waits for the name.

    The holder names itself exactly when the second driver, having found the lock taken and no name, first
    pauses to wait for it (its ``time.sleep``): no race with the clock either way."""
    import fcntl

    fh = open(tmp_path / ownership.LOCK_FILE, "a+")
    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held, nothing written yet
    waits = []
    real_sleep = time.sleep

    def holder_names_itself_meanwhile(seconds):
        if not waits:
            fh.write(json.dumps({"pid": 4242, "host": "elsewhere", "since": time.time(), "command": "nerlab train"}))
            fh.flush()
        waits.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(ownership.time, "sleep", holder_names_itself_meanwhile)
    try:
        with pytest.raises(UsageError) as e:
            with ownership.FolderLock(tmp_path, "training job j"):
                pass
        assert "training job j is already running: pid 4242 on elsewhere" in str(e.value)
        assert len(waits) == 1  # it waited once, and read the name then
    finally:
        fh.close()


def test_a_killed_driver_leaves_no_lock_behind(tmp_path):
    p = hold_in_subprocess(tmp_path)
    p.send_signal(signal.SIGKILL)
    p.wait()
    with ownership.FolderLock(tmp_path, "study x"):  # taken at once: the kernel dropped the dead one's lock
        holder = json.loads((tmp_path / ownership.LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid()
    assert (tmp_path / ownership.LOCK_FILE).read_text() == ""  # released


def test_changes_name_the_keys_that_differ_and_ignore_where_a_study_runs():
    old = {"train.epochs": "4", "search.plm": "['a']", "output": "/x", "resources.max_concurrent": "2"}
    new = {"train.epochs": "5", "search.plm": "['a']", "output": "/y", "resources.max_concurrent": "8",
           "search.lr": "[0.1]"}
    assert ownership.changes(old, new) == "search.lr (new: [0.1]), train.epochs 4 -> 5"
    assert ownership.changes(old, {**old, "output": "/z", "ray_address": "h:6379"}) == ""
    assert ownership.digest(old) == ownership.digest({**old, "output": "/z"}) != ownership.digest(new)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lease")
    proc, url = mlflow_server.start(f"sqlite:///{folder / 'mlflow.db'}", (folder / "art").as_uri())
    yield url
    mlflow_server.stop(proc)


def lease(url: str, key: str, what: str) -> ownership.ServerLease:
    return ownership.ServerLease(MlflowClient(url), key, what)


def test_two_drivers_claiming_a_lease_at_once_leave_exactly_one_holder(server):
    outcomes, held = [], []
    start = threading.Barrier(8)

    def claim():
        claim_ = lease(server, "exp/race", "study race")
        start.wait()
        try:
            held.append(claim_.__enter__())
            outcomes.append("held")
        except UsageError as e:
            outcomes.append(str(e))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert outcomes.count("held") == 1, outcomes
        assert all("study race is already running: pid" in o for o in outcomes if o != "held")
    finally:
        for h in held:
            h.__exit__(None, None, None)
    assert MlflowClient(server).get_experiment_by_name(ownership.LEASE_PREFIX + "exp/race") is None  # released
    with lease(server, "exp/race", "study race"):  # and free again
        pass


def test_a_lease_of_a_live_driver_is_refused_and_of_a_dead_one_is_taken(server, monkeypatch):
    code = textwrap.dedent(f"""
        import time
        from mlflow.tracking import MlflowClient
        from nerlab.platform.studies.ownership import ServerLease
        with ServerLease(MlflowClient({server!r}), "exp/dead", "study d"):
            print("held", flush=True)
            time.sleep(120)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(UsageError, match=f"study d is already running: pid {p.pid} on "):
            with lease(server, "exp/dead", "study d"):
                pass
        p.kill()  # SIGKILL: its heartbeat is fresh, but it is a dead process of this host
        p.wait()
        with monkeypatch.context() as m:
            m.setattr(ownership, "STALE_S", float("inf"))  # no heartbeat ever goes stale: only death frees it
            with lease(server, "exp/dead", "study d") as mine:
                tags = MlflowClient(server).get_experiment(mine.experiment_id).tags
                assert json.loads(tags[N.DRIVER_TAG])["pid"] == os.getpid()
    finally:
        p.kill()
        p.wait()


def test_the_server_supervisor_ends_the_server_when_its_command_is_killed(tmp_path):
    """A command that started a local MLflow server and was SIGKILLed leaves no server behind."""
    import psutil

    code = textwrap.dedent(f"""
        import time
        from nerlab.platform.tracking import server as mlflow_server
        proc, url = mlflow_server.start("sqlite:///{tmp_path / 'mlflow.db'}", None)
        print(proc.pid, flush=True)
        time.sleep(120)
    """)
    cmd = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    group = int(cmd.stdout.readline())
    server = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == group]
    assert len(server) >= 3  # supervisor, mlflow server, uvicorn
    cmd.kill()
    cmd.wait()
    gone, alive = psutil.wait_procs(server, timeout=20)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None
