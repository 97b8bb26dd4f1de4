"""A study (or a training job) is one thing: one spec, and one driver at a time.

- What a spec *is*: ``identity`` flattens a resolved spec into the keys that decide its trials (where it
  runs and how many trials run at once are left out), ``digest`` hashes them, ``changes`` names the keys
  in which two specs differ.
- One driver per output folder: ``FolderLock`` holds an exclusive ``flock`` on ``<output>/.driver.lock``
  for the driver's lifetime, with the holder's pid, host and command written inside. The kernel drops
  the lock when the process ends however it ends (SIGKILL, a reboot), so a dead driver never blocks a
  resume.
- One driver per study on a tracking server shared by several machines: ``ServerLease`` keeps a lease
  in the tags of the study's parent run (holder and a heartbeat every ``HEARTBEAT_S``). A lease whose
  heartbeat is older than ``STALE_S``, or whose holder is a dead process on this host, is free.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

from nerlab.models import names as N
from nerlab.platform.errors import UsageError

LOCK_FILE = ".driver.lock"
# Keys that say where or how fast a study runs, not what it trains: changing them continues the study.
OPERATIONAL = ("output", "ray_address", "storage", "resources.max_concurrent", "resources.trial_retries",
               "resources.max_failures", "resources.cpus_per_worker", "resources.trial_cpus",
               "resources.gpus_per_worker", "resources.single_worker",
               "tracking.system_metrics_s")
LEASE_PREFIX = ".nerlab-driver/"  # experiments that are leases, not studies
HEARTBEAT_S, STALE_S = 10.0, 60.0


# ---- what a spec is ------------------------------------------------------------------------------------
# Spec keys added after studies were run, each with the value every older spec meant. At that value a key is
# left out of a study's identity, so a new key does not turn a study run before it into another study (another
# digest, storage folder and parent run).
LATER_KEYS = {"search.startup_trials": "10"}


def identity(params: dict[str, str]) -> dict[str, str]:
    """The flattened spec (``tracking.flatten`` of ``tracking.spec_params``) without operational keys, and
    without a later key at the value older specs meant (``LATER_KEYS``)."""
    return {k: v for k, v in params.items() if not k.startswith(OPERATIONAL) and LATER_KEYS.get(k) != v}


def digest(params: dict[str, str]) -> str:
    text = json.dumps(identity(params), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def changes(old: dict[str, str], new: dict[str, str], most: int = 4) -> str:
    """'train.epochs 4 -> 5, search.lr (new)' for the identity keys that differ; '' when none."""
    old, new = identity(old), identity(new)
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))

    def show(k: str) -> str:
        if k not in old:
            return f"{k} (new: {new[k]})"
        if k not in new:
            return f"{k} (removed, was {old[k]})"
        return f"{k} {old[k]} -> {new[k]}"

    text = ", ".join(show(k) for k in keys[:most])
    return text + (f" and {len(keys) - most} more" if len(keys) > most else "")


# ---- the holder of a lock ------------------------------------------------------------------------------
def _me(token: str = "") -> dict:
    import psutil

    return {"pid": os.getpid(), "host": socket.gethostname(), "created": psutil.Process().create_time(),
            "since": time.time(), "command": " ".join(["nerlab", *sys.argv[1:]])[:200], "token": token}


def describe(holder: dict) -> str:
    since = datetime.fromtimestamp(holder.get("since", 0)).strftime("%Y-%m-%d %H:%M:%S")
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} (since {since}: {holder.get('command', '?')})"


def _alive_here(holder: dict) -> bool:
    """Whether the holder is a live process of this host (the same pid started at the same time)."""
    import psutil

    try:
        return abs(psutil.Process(int(holder["pid"])).create_time() - float(holder["created"])) < 1.0
    except (psutil.Error, KeyError, ValueError, TypeError):
        return False


class FolderLock:
    """Exclusive use of an output folder by one driver process (``what`` names it in the refusal)."""

    def __init__(self, folder: Path, what: str):
        self.path, self.what, self.fh = Path(folder) / LOCK_FILE, what, None

    def __enter__(self) -> "FolderLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        deadline = time.monotonic() + 2.0
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                fh.seek(0)
                try:
                    holder = describe(json.loads(fh.read()))
                except ValueError:  # the holder took the lock and has not written its name yet
                    if time.monotonic() < deadline:
                        time.sleep(0.05)
                        continue
                    holder = "another process"
                fh.close()
                raise UsageError(f"{self.what} is already running: {holder}; wait for it to end, or stop it "
                                 f"(it is resumed with the same command)") from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(_me()))
        fh.flush()
        self.fh = fh
        return self

    def __exit__(self, *exc) -> None:
        if self.fh is not None:
            self.fh.truncate(0)
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None


def same_or_archived(stack, folder: Path, what: str, old: dict[str, str], new: dict[str, str], replace_old: bool,
                     refusal: str) -> bool:
    """Whether the folder's earlier work was archived (True: start anew) or is this spec's (False: go on).

    Specs that differ are refused (``refusal``, with ``{diff}`` naming the keys) unless ``replace_old``: then
    the folder moves aside and a fresh one is locked for this driver in ``stack``.
    """
    diff = changes(old, new)
    if not diff:
        return False
    if not replace_old:
        raise UsageError(refusal.replace("{diff}", diff))  # not .format: paths may hold braces
    archive_and_relock(stack, folder, what)
    return True


def archive_and_relock(stack, folder: Path, what: str) -> None:
    """Move the folder's earlier work aside and lock a fresh folder for this driver in ``stack``."""
    moved = archive(folder)
    stack.enter_context(FolderLock(folder, what))
    print(f"archived the old {what} to {moved}", flush=True)


def archive(folder: Path) -> Path:
    """Move a study's or job's output folder aside (nothing is deleted); returns where it went."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    dest = folder.with_name(f"{folder.name}.archived-{stamp}")
    shutil.move(str(folder), str(dest))
    return dest


# ---- a lease on a tracking server -----------------------------------------------------------------------
class ServerLease:
    """One driver per study among machines that share a tracking server.

    The lease is an MLflow experiment named ``LEASE_PREFIX + key``: experiment names are unique in every
    tracking store, so of two drivers that claim at once exactly one creates it. Its tags name the holder
    and carry a heartbeat; a lease whose heartbeat is older than ``STALE_S``, or whose holder is a dead
    process of this host, is moved aside (renamed, then deleted) and claimed anew. Released on exit.
    """

    def __init__(self, client, key: str, what: str):
        self.client, self.name, self.what = client, LEASE_PREFIX + key, what
        self.experiment_id: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _create(self) -> bool:
        from mlflow.exceptions import MlflowException

        tags = {N.DRIVER_TAG: json.dumps(_me()), N.HEARTBEAT_TAG: f"{time.time():.0f}"}
        try:
            self.experiment_id = self.client.create_experiment(self.name, tags=tags)
            return True
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return False

    def _retire(self, experiment_id: str) -> None:
        """Move a lease aside: a deleted experiment keeps its name, so it is renamed first."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.rename_experiment(experiment_id, f"{self.name}~{uuid.uuid4().hex[:12]}")
            self.client.delete_experiment(experiment_id)
        except MlflowException:  # another driver retired it first
            pass

    def __enter__(self) -> "ServerLease":
        for _ in range(3):
            if self._create():
                self._thread = threading.Thread(target=self._heartbeats, name="nerlab-lease", daemon=True)
                self._thread.start()
                return self
            lease = self.client.get_experiment_by_name(self.name)
            if lease is None:  # released in between
                continue
            try:
                holder = json.loads(lease.tags.get(N.DRIVER_TAG, "{}"))
                beat = float(lease.tags.get(N.HEARTBEAT_TAG, 0))
            except ValueError:
                holder, beat = {}, 0.0
            dead_here = holder.get("host") == socket.gethostname() and not _alive_here(holder)
            if time.time() - beat <= STALE_S and not dead_here:
                raise UsageError(f"{self.what} is already running: {describe(holder)}; wait for it to end, or "
                                 f"stop it (it is resumed with the same command)")
            self._retire(lease.experiment_id)  # its driver is gone
        raise UsageError(f"{self.what}: other drivers keep claiming it at the same time; try again")

    def _heartbeats(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.client.set_experiment_tag(self.experiment_id, N.HEARTBEAT_TAG, f"{time.time():.0f}")
            except Exception:  # noqa: BLE001 - a server restart: the next beat retries
                pass

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.experiment_id is not None:
            try:
                self._retire(self.experiment_id)
            except Exception:  # noqa: BLE001 - the lease goes stale by itself
                pass
