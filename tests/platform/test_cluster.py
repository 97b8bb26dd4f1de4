"""Scale-out for real: a study on a two-node Ray cluster with token authentication and an MLflow tracking
server, each on a test host of its own, and the fault drills that go with it.

The hosts are network namespaces this module creates (``ip netns add``) and deletes: ``head`` 10.231.0.1
(Ray head, ``mlflow server`` on PostgreSQL, the S3 server, the study driver), ``node`` 10.231.0.2 (a second Ray node) and
``spare`` 10.231.0.3 (the node that replaces a lost one), wired by veth pairs to a bridge in a fourth,
``switch`` namespace. No namespace has a route anywhere else or a link to the machine's network, so nothing
the cluster sends can reach any other address. Every process this module starts lives in one of its
namespaces: teardown kills exactly ``ip netns pids`` of each (other Ray instances on the machine are
never touched) and deletes the namespaces, also when a test fails.

The nodes share no disk with the driver: ``node`` and ``spare`` each run in a mount namespace of their own
with a private ``/tmp`` (where the driver's output folder, the MLflow store and pytest's files are) and a
private home. The study keeps its checkpoints, its synthetic corpus and its tiny PLM in the bucket
(``storage: s3://...``, SeaweedFS on the head host), and their workers read them from there.

The tracking server is the lab's: its store is a PostgreSQL database on the head host (its artifacts are
proxied into a folder there).

One study of four 2-worker trials runs on the cluster. Each node has one CPU and each worker needs 0.6,
so every trial's two DDP workers span two nodes. While it runs, four drills are injected in turn, each
into a trial of its own:
- the MLflow server is stopped for 30 s while a trial is mid-way, then started again on the same port
  and store: the epochs logged in that window must reach MLflow afterwards (or the trial fail loudly and
  be retried): never an epoch silently missing;
- the S3 server is stopped for 30 s while a trial is mid-way (its checkpoints go there at every epoch),
  then started again: the upload waits it out or the trial is retried from its last checkpoint, and the
  trial finishes in its one run with every epoch logged once;
- PostgreSQL is stopped for 10 s under the tracking server while a trial is mid-way (every connection of
  the server's pool cut), then started again: the server answers errors meanwhile, the clients retry, and
  the trial finishes in its one run with every epoch logged once;
- the second Ray node is killed (all its processes) while a later trial is mid-way and a spare node joins,
  as an autoscaler would bring one: the trial must be retried on the nodes left and finish, in its one
  MLflow run, with every epoch logged once.
The tests below each check one aspect of that study.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lab as L  # noqa: E402  (tests/lab.py: the S3 server)

pytestmark = pytest.mark.slow

NET = "10.231.0"
HEAD, NODE, SPARE = f"{NET}.1", f"{NET}.2", f"{NET}.3"
GCS_PORT, DASHBOARD_PORT, MLFLOW_PORT = 6379, 8265, 5000  # inside the namespaces: no clash with anyone
PREFIX = "nerlabt"  # this module's namespaces: nerlabt<pid>-<role>
EPOCHS = 4
TRIALS = 4
OUTAGE_S = 30
PG_OUTAGE_S = 10
STUDY_BUDGET_S = 840  # the whole study, drills included (about 6 minutes on 2 cores): a hang fails here
WORKER_NODES = "nerlab.worker_nodes"  # tag set by rank 0: every rank's node IP (latest attempt)
RAY = str(Path(sys.executable).with_name("ray"))
STUDY = "cluster"
BUCKET = "nerlab"
# A node's own file system view: a mount namespace with tmpfs over /tmp (its home and its input cache there)
PRIVATE_DISK = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount -t tmpfs nerlab-node /tmp && mkdir -p "$HOME" && exec "$@"', "sh"]
NODE_ENV = {"HOME": "/tmp/home", "NERLAB_CACHE": "/tmp/nerlab-cache"}


# ---- test hosts: network namespaces -------------------------------------------------------------------
def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {p.stderr.strip()}")
    return p


def ns_pids(ns: str) -> list[int]:
    return [int(p) for p in ip("netns", "pids", ns, check=False).stdout.split()]


def kill_ns(ns: str) -> None:
    """SIGKILL every process whose network namespace is ``ns`` (all of them ours), until none is left."""
    for _ in range(40):
        pids = ns_pids(ns)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.25)


def reap_stale_namespaces() -> None:
    """Namespaces left by an earlier run of this module whose pytest process is gone (a killed run)."""
    import psutil

    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        owner = name[len(PREFIX):].split("-")[0]
        if owner.isdigit() and not psutil.pid_exists(int(owner)):
            kill_ns(name)
            ip("netns", "del", name, check=False)


class Hosts:
    """Namespaces as hosts on one /24: each has lo and eth0, and eth0's peer sits on br0 in ``switch``."""

    def __init__(self):
        self.tag = f"{PREFIX}{os.getpid()}"
        self.switch = f"{self.tag}-switch"
        self.ns: dict[str, str] = {}
        self.created: list[str] = []

    def create_switch(self) -> None:
        ip("netns", "add", self.switch)
        self.created.append(self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")

    def add(self, role: str, address: str) -> str:
        ns = f"{self.tag}-{role}"
        ip("netns", "add", ns)
        self.created.append(ns)
        # Both ends are created inside the namespaces: no interface ever appears on the machine's side.
        ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", role, "netns", self.switch)
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        for dev in ("lo", "eth0"):
            ip("-n", ns, "link", "set", dev, "up")
        ip("-n", self.switch, "link", "set", role, "master", "br0")
        ip("-n", self.switch, "link", "set", role, "up")
        self.ns[role] = ns
        return ns

    def remove(self) -> None:
        for ns in reversed(self.created):
            kill_ns(ns)
            ip("netns", "del", ns, check=False)
        self.created.clear()


# ---- the cluster --------------------------------------------------------------------------------------
HEALTH = textwrap.dedent("""
    import sys, time, urllib.request
    url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    sys.exit(0)
        except OSError:
            time.sleep(0.3)
    sys.exit(1)
""")

# Run inside the head namespace with the cluster's token: the dashboard refuses a request without it
# and answers one with it, and both nodes are alive with their CPUs.
AUTH_PROBE = textwrap.dedent("""
    import json, os, sys, time, urllib.error, urllib.request
    url, address = sys.argv[1], sys.argv[2]
    def get(headers):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
    token = open(os.environ["RAY_AUTH_TOKEN_PATH"]).read().strip()
    out = {"without_token": get({}), "wrong_token": get({"Authorization": "Bearer nope"}),
           "with_token": get({"Authorization": f"Bearer {token}"})}
    import ray
    ray.init(address=address, logging_level="ERROR")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        if len(nodes) >= int(sys.argv[3]):
            break
        time.sleep(0.5)
    out["nodes"] = sorted((n["NodeManagerAddress"], n["Resources"].get("CPU", 0)) for n in nodes)
    print(json.dumps(out))
""")

# A driver holding the wrong token: Ray must refuse it (it gives up after ~20 s of retries).
WRONG_TOKEN = "import ray, sys; ray.init(address=sys.argv[1]); print('CONNECTED')"


@dataclass
class Cluster:
    hosts: Hosts
    root: Path  # test files: token, MLflow store and artifacts, study output
    ray_tmp: Path  # Ray's temp dirs (short: Ray's Unix socket paths must stay under 108 bytes)
    token_file: Path | None = None
    mlflow: subprocess.Popen | None = None
    wrong_token: subprocess.Popen | None = None  # a driver holding a wrong token
    auth: dict | None = None  # what the auth probe saw
    procs: list = field(default_factory=list)
    s3: L.S3 | None = None  # the bucket's server, on the head host
    pg: L.Postgres | None = None  # the tracking server's database, on the head host

    @property
    def artifacts(self) -> Path:
        return self.root / "mlflow" / "artifacts"

    @property
    def tracking_uri(self) -> str:
        return f"http://{HEAD}:{MLFLOW_PORT}"

    def env(self, token: str = "path", **extra) -> dict:
        """A clean environment: none of the caller's Ray or MLflow settings (a RAY_ADDRESS or
        RAY_API_SERVER_ADDRESS left by another test would point elsewhere); token auth on; no telemetry."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
        env.update(RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=str(self.ray_tmp),
                   MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", HF_HUB_OFFLINE="1",
                   TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1",
                   # The hostname does not resolve to a cluster address in these namespaces, so gloo
                   # would advertise 127.0.0.1 to its peers: name the interface, as on any multi-NIC host.
                   GLOO_SOCKET_IFNAME="eth0")
        if self.s3 is not None:  # every node's credentials and endpoint for the bucket
            env.update(self.s3.env())
        if token == "path":  # the head and the driver read the token file ...
            env["RAY_AUTH_TOKEN_PATH"] = str(self.token_file)
        elif token == "env":  # ... a joining node gets the token itself, as KubeRay hands it to pods
            env["RAY_AUTH_TOKEN"] = self.token_file.read_text().strip()
        else:
            env["RAY_AUTH_TOKEN"] = token
        env.update(extra)
        return env

    def run_in(self, role: str, *cmd: str, env: dict, timeout: float = 120, check: bool = True):
        p = subprocess.run(["ip", "netns", "exec", self.hosts.ns[role], *cmd], env=env, capture_output=True,
                           text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:3])} in {role}: exit {p.returncode}\n{p.stdout[-2000:]}"
                               f"\n{p.stderr[-3000:]}")
        return p

    def popen_in(self, role: str, *cmd: str, env: dict, log: Path, **kw) -> subprocess.Popen:
        f = open(log, "ab")
        p = subprocess.Popen(["ip", "netns", "exec", self.hosts.ns[role], *cmd], env=env, stdout=f,
                             stderr=subprocess.STDOUT, start_new_session=True, **kw)
        f.close()
        self.procs.append(p)
        return p

    # -- pieces
    def make_token(self) -> None:
        """``ray get-auth-token --generate`` as Ray documents it, but into a home of the test's own: the
        machine's ~/.ray/auth_token is neither read nor written."""
        home = self.root / "home"
        home.mkdir()
        env = {**self.env(token="none"), "HOME": str(home)}
        env.pop("RAY_AUTH_TOKEN")
        p = subprocess.run([RAY, "get-auth-token", "--generate"], env=env, capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0, p.stderr
        self.token_file = home / ".ray" / "auth_token"
        self.token_file.chmod(0o600)
        assert len(self.token_file.read_text().strip()) >= 32

    def start_ray(self, role: str, address: str) -> None:
        common = ["--node-ip-address", address, "--num-cpus", "1", "--num-gpus", "0",
                  "--object-store-memory", str(100 * 1024 ** 2), "--temp-dir", str(self.ray_tmp / role),
                  "--disable-usage-stats"]
        if role == "head":
            cmd = [RAY, "start", "--head", "--port", str(GCS_PORT), "--dashboard-host", HEAD,
                   "--dashboard-port", str(DASHBOARD_PORT), *common]
            self.run_in(role, *cmd, env=self.env(token="path"))
        else:  # a host of its own: no disk shared with the head (see PRIVATE_DISK)
            cmd = [*PRIVATE_DISK, RAY, "start", "--address", f"{HEAD}:{GCS_PORT}", *common]
            self.run_in(role, *cmd, env=self.env(token="env", **NODE_ENV))

    def sees(self, role: str, path: Path) -> bool:
        """Whether ``path`` exists for ``role``'s Ray processes (``/proc/PID/root`` resolves a path in the
        process's own mount namespace)."""
        views = [Path(f"/proc/{pid}/root") for pid in ns_pids(self.hosts.ns[role])]
        views = [v for v in views if v.exists()]
        assert views, f"no process on {role}"
        return (views[0] / path.relative_to("/")).exists()

    def start_mlflow(self) -> None:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.pg.uri("mlflow"),
               "--serve-artifacts", "--artifacts-destination", str(self.artifacts),
               "--host", HEAD, "--port", str(MLFLOW_PORT), "--workers", "1"]
        self.mlflow = self.popen_in("head", *cmd, env=self.env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
                                    log=self.root / "mlflow-server.log")
        self.wait_http("head", f"{self.tracking_uri}/health", 120)

    def stop_mlflow(self) -> None:
        """Stop the server (SIGTERM to its process group, SIGKILL if it lingers)."""
        p = self.mlflow
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=20)
        except ProcessLookupError:
            pass

    def wait_http(self, role: str, url: str, timeout: float) -> None:
        p = self.run_in(role, sys.executable, "-c", HEALTH, url, str(timeout), env=self.env(),
                        timeout=timeout + 30, check=False)
        assert p.returncode == 0, f"{url} did not answer within {timeout} s"

    def probe(self, nodes: int) -> dict:
        p = self.run_in("head", sys.executable, "-c", AUTH_PROBE, f"http://{HEAD}:{DASHBOARD_PORT}/nodes?view=summary",
                        f"{HEAD}:{GCS_PORT}", str(nodes), env=self.env(), timeout=180)
        return json.loads(p.stdout.strip().splitlines()[-1])

    def teardown(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.hosts.remove()  # PostgreSQL with the rest: its processes are in the head namespace
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.ray_tmp, ignore_errors=True)
        shutil.rmtree(self.pg_root, ignore_errors=True)

    @property
    def pg_root(self) -> Path:
        return self.ray_tmp.with_name(self.ray_tmp.name.replace("nl-ray-", "nl-pg-"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if shutil.which("ip") is None:
        pytest.skip("the ip command (iproute2) is not installed")
    reap_stale_namespaces()
    hosts = Hosts()
    try:
        hosts.create_switch()
    except RuntimeError as e:
        hosts.remove()
        pytest.skip(f"cannot build the test network here: no network namespaces or bridges ({e})")
    c = Cluster(hosts, tmp_path_factory.mktemp("cluster"), Path(tempfile.mkdtemp(prefix="nl-ray-")))
    try:
        for role, address in (("head", HEAD), ("node", NODE), ("spare", SPARE)):
            hosts.add(role, address)
        why = L.missing()
        if why:
            pytest.skip(why)
        c.pg_root.mkdir(mode=0o755)  # the postgres user reaches its folder inside (pytest's tmp is 700)
        c.pg = L.start_postgres(c.pg_root, hosts.ns["head"])
        c.pg.createdb("mlflow")
        c.s3 = L.start_s3(c.root, HEAD, hosts.ns["head"])
        c.s3.bucket(BUCKET)
        c.make_token()
        c.start_ray("head", HEAD)
        # A driver with a wrong token, started now, refused (or not) by the time the tests look.
        c.wrong_token = c.popen_in("head", sys.executable, "-c", WRONG_TOKEN, f"{HEAD}:{GCS_PORT}",
                                   env=c.env(token="not-the-token"), log=c.root / "wrong-token.log")
        c.start_mlflow()
        c.start_ray("node", NODE)
        c.auth = c.probe(nodes=2)
        (c.root / "auth.json").write_text(json.dumps(c.auth))
        yield c
    finally:
        c.teardown()


# ---- the study, with its drills -------------------------------------------------------------------------
def snapshot(pg: L.Postgres) -> dict[str, dict]:
    """Trial id -> its MLflow run as the server's store holds it now (straight from PostgreSQL, over its
    Unix socket: this process is not on the head host's network)."""
    import psycopg

    try:
        with psycopg.connect(host=str(pg.folder), port=pg.port, user="postgres", dbname="mlflow",
                             connect_timeout=5) as con:
            runs = con.execute("SELECT r.run_uuid, r.status, t.value FROM runs r JOIN tags t "
                               "ON t.run_uuid = r.run_uuid AND t.key = 'nerlab.trial'").fetchall()
            nodes = dict(con.execute("SELECT run_uuid, value FROM tags WHERE key = %s", (WORKER_NODES,)).fetchall())
            steps: dict[str, list[int]] = {}
            for run_id, step in con.execute("SELECT run_uuid, step FROM metrics WHERE key = 'val/micro_f1'"):
                steps.setdefault(run_id, []).append(step)
    except psycopg.Error:  # tables not created yet, or the database down for a drill
        return {}
    return {trial: {"run_id": rid, "status": status, "nodes": nodes.get(rid, ""),
                    "steps": sorted(steps.get(rid, []))} for rid, status, trial in runs}


@dataclass
class StudyRun:
    returncode: int
    log: str
    summary: dict | None
    out: Path
    outage: dict
    s3_outage: dict
    pg_outage: dict
    node_loss: dict
    seen_nodes: set[str]


def write_spec(folder: Path, tracking_uri: str) -> Path:
    spec = {
        "name": STUDY, "task": "nested",
        "data": {"synth": {"sentences": 200, "seed": 0}},
        "model": {"max_length": 64},
        "train": {"epochs": EPOCHS, "batch_size": 16, "lr": 3.0e-3, "patience": EPOCHS + 1},
        # four trials: the first takes the MLflow outage, the second the S3 outage, the third PostgreSQL's, the
        # fourth loses its node
        "search": {"mode": "grid", "plm": ["tiny:2x32"], "loss": ["ce", "unified", "dice", "focal"],
                   "variance_penalty": [5.0],
                   "seeds": [1]},
        # 0.6 CPU per worker on 1-CPU nodes: a trial's two workers never fit on one node, and only one
        # trial fits at a time (a second one would only wait, its worker-group start timing out each 60 s).
        "resources": {"workers_per_trial": 2, "cpus_per_worker": 0.6, "trial_cpus": 0.1, "max_concurrent": 1,
                      "max_failures": 3, "trial_retries": 2},
        "tracking": {"tracking_uri": tracking_uri},
        "ray_address": f"{HEAD}:{GCS_PORT}",
        "storage": f"s3://{BUCKET}/studies",
    }
    path = folder / f"{STUDY}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def study(cluster) -> StudyRun:
    out = cluster.root / "out"
    spec = write_spec(cluster.root, cluster.tracking_uri)
    log_path = cluster.root / "driver.log"
    driver = cluster.popen_in("head", sys.executable, "-m", "nerlab.platform.cli", "study", "run", str(spec),
                              "--output", str(out), "--json", env=cluster.env(), log=log_path, cwd=cluster.root)
    seen: set[str] = set()
    deadline = time.monotonic() + STUDY_BUDGET_S

    def wait_for(what: str, cond) -> tuple[str, dict, dict]:
        while time.monotonic() < deadline:
            snap = snapshot(cluster.pg)
            for t in snap.values():
                seen.update(n for n in t["nodes"].split(",") if n)
            for trial, t in snap.items():
                if cond(trial, t):
                    return trial, t, snap
            if driver.poll() is not None:
                break
            time.sleep(0.5)
        driver.kill()
        pytest.fail(f"no trial {what} (driver exit code {driver.poll()}):\n{log_path.read_text()[-6000:]}")

    # Drill 1: the MLflow server goes away for OUTAGE_S while a trial is mid-way, and comes back.
    trial, t, _ = wait_for("mid-way for the MLflow outage",
                           lambda _, t: t["status"] == "RUNNING" and 1 <= len(t["steps"]) < EPOCHS)
    down = time.time()
    cluster.stop_mlflow()
    time.sleep(OUTAGE_S)
    cluster.start_mlflow()
    up = time.time()  # /health answers again
    outage = {"trial": trial, "run_id": t["run_id"], "steps_before": t["steps"], "down": down, "up": up}

    # Drill 2: the S3 server (checkpoints, Tune's state) goes away for OUTAGE_S while another trial is mid-way.
    trial, t, _ = wait_for("mid-way for the S3 outage",
                           lambda tr, t: tr != outage["trial"] and t["status"] == "RUNNING" and 1 <= len(t["steps"]) < EPOCHS)
    down = time.time()
    cluster.s3.stop()
    time.sleep(OUTAGE_S)
    cluster.s3.start()
    s3_outage = {"trial": trial, "run_id": t["run_id"], "steps_before": t["steps"], "down": down, "up": time.time()}

    # Drill 3: PostgreSQL goes away under the tracking server for PG_OUTAGE_S while a third trial is mid-way.
    trial, t, _ = wait_for("mid-way for the PostgreSQL outage",
                           lambda tr, t: (tr not in (outage["trial"], s3_outage["trial"]) and t["status"] == "RUNNING"
                                          and 1 <= len(t["steps"]) < EPOCHS))
    down = time.time()
    cluster.pg.stop("fast")  # ends every open connection of the server's pool
    time.sleep(PG_OUTAGE_S)
    cluster.pg.start()
    pg_outage = {"trial": trial, "run_id": t["run_id"], "steps_before": t["steps"], "down": down, "up": time.time()}

    # Drill 4: a fourth trial mid-way with a worker on the second node: the node is lost (every process
    # of it killed), and a spare node joins the cluster.
    drilled = (outage["trial"], s3_outage["trial"], pg_outage["trial"])
    trial, t, _ = wait_for("mid-way on the second node",
                           lambda tr, t: (tr not in drilled and t["status"] == "RUNNING"
                                          and NODE in t["nodes"].split(",") and 1 <= len(t["steps"]) <= EPOCHS - 2))
    lost = time.time()
    kill_ns(cluster.hosts.ns["node"])
    cluster.start_ray("spare", SPARE)
    node_loss = {"trial": trial, "run_id": t["run_id"], "nodes_before": t["nodes"], "steps_before": t["steps"],
                 "lost": lost, "spare_up": time.time()}

    try:
        driver.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        driver.kill()
        pytest.fail(f"the study did not finish:\n{log_path.read_text()[-6000:]}")
    log = log_path.read_text(errors="replace")
    summary = None
    start = log.rfind('{\n  "study"')
    if start >= 0:
        summary = json.loads(log[start:log.index("\n}", start) + 2])
    for t in snapshot(cluster.pg).values():
        seen.update(n for n in t["nodes"].split(",") if n)
    run = StudyRun(driver.returncode, log, summary, out, outage, s3_outage, pg_outage, node_loss, seen)
    (cluster.root / "observed.json").write_text(json.dumps(  # for people reading a failed run
        {"returncode": run.returncode, "summary": summary, "outage": outage, "s3_outage": s3_outage,
         "pg_outage": pg_outage, "node_loss": node_loss, "seen_nodes": sorted(seen), "final": snapshot(cluster.pg),
         "log": {"http_retries": log.count("Retrying (Retry("), "job_restarts": log.count("[FailurePolicy] RETRY"),
                 "trial_errors": log.count("Trial task failed")}}, indent=2))
    return run


def trial_runs(cluster):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(cluster.pg.socket_uri("mlflow"))  # the server's own store, read directly
    exp = client.get_experiment_by_name(STUDY)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("nerlab.study_run")]
    trials = {r.data.tags["nerlab.trial"]: r for r in runs if r.data.tags.get("nerlab.trial")}
    assert len(trials) == len([r for r in runs if r.data.tags.get("nerlab.trial")]), "two runs for one trial"
    return client, exp, parents, trials


def epochs_logged(client, run) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/micro_f1"))


def drilled_trial(cluster, drill: dict):
    """The trial a drill hit, checked: still its one run, FINISHED, every epoch logged once. Returns (client,
    its run, its val F1 history, every trial's run)."""
    client, _, _, trials = trial_runs(cluster)
    r = trials[drill["trial"]]
    assert r.info.run_id == drill["run_id"] and r.info.status == "FINISHED"
    history = client.get_metric_history(r.info.run_id, "val/micro_f1")
    assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))
    return client, r, history, trials


def logged_during(history, drill: dict) -> list[int]:
    """The epochs a drill's fault hit: not in the store when the drill began, yet logged (by the client's
    timestamp, taken when it logs) before the fault ended. Such an epoch was logged while the fault lasted, or
    its call was under way when the fault began and was retried through it (its timestamp then falls just before
    the fault: the trial's next epoch comes only once that call returns, after the fault)."""
    return [m.step for m in history if m.step not in drill["steps_before"] and m.timestamp <= drill["up"] * 1000]


# ---- the tests ----------------------------------------------------------------------------------------
@pytest.mark.timeout(STUDY_BUDGET_S + 240)  # includes starting the cluster and running the whole study
def test_study_places_workers_on_both_nodes_and_logs_everything_through_the_server(cluster, study):
    assert study.returncode == 0, study.log[-6000:]
    assert study.summary is not None and study.summary["trials"] == TRIALS and study.summary["errors"] == 0
    client, exp, parents, trials = trial_runs(cluster)
    assert len(parents) == 1 and len(trials) == TRIALS  # one MLflow run per trial, retried trials included
    for trial, r in trials.items():
        assert r.info.status == "FINISHED", trial
        assert epochs_logged(client, r) == list(range(1, EPOCHS + 1)), trial
        nodes = r.data.tags[WORKER_NODES].split(",")
        assert len(nodes) == 2 and len(set(nodes)) == 2, f"{trial}: both workers on one node ({nodes})"
    assert {HEAD, NODE} <= study.seen_nodes  # the study used both nodes of the cluster it was given
    # Artifacts went through the server into its --artifacts-destination; none is on the driver's side.
    for r in [*trials.values(), parents[0]]:
        assert r.info.artifact_uri.startswith("mlflow-artifacts:/"), r.info.artifact_uri
    for r in trials.values():
        stored = cluster.artifacts / exp.experiment_id / r.info.run_id / "artifacts"
        for path in ("config/resolved_spec.yaml", "predictions/val.txt", "reports/test_report.json"):
            assert (stored / path).is_file(), f"{stored / path} missing"
        assert not (stored / "model").exists()  # the weights are stored once, in the run's MLflow Model:
        (output,) = r.outputs.model_outputs
        weights = [p for p in cluster.artifacts.rglob("model.safetensors") if output.model_id in p.parts]
        assert len(weights) == 1, f"{r.info.run_id}: its MLflow Model's weights at {weights}"
    leaderboard = cluster.artifacts / exp.experiment_id / parents[0].info.run_id / "artifacts" / "leaderboard"
    assert (leaderboard / "leaderboard.csv").is_file()
    assert not (study.out / "mlflow.db").exists() and not (study.out / "mlflow-server.url").exists()
    for name in ("mlartifacts", "mlruns", "mlflow.db"):
        assert not list(study.out.rglob(name)), f"{name} under the driver's output folder"


@pytest.mark.timeout(600)
def test_mlflow_server_outage_loses_no_epoch(cluster, study):
    """The server was down OUTAGE_S seconds while a trial was mid-way: the trial's later epochs reached
    MLflow once it was back (the clients retry), in the same run, each epoch once."""
    assert study.returncode == 0, study.log[-6000:]
    o = study.outage
    assert len(o["steps_before"]) < EPOCHS  # stopped while the trial still had epochs to log
    client, _, history, trials = drilled_trial(cluster, o)
    # An epoch logged while the server was down is in the store now: the drill did hit a client, and what it
    # logged arrived afterwards.
    assert logged_during(history, o), f"no epoch of {o['trial']} was logged during the outage: the drill tested nothing"
    for other in trials.values():  # and nothing missing anywhere else either
        assert epochs_logged(client, other) == list(range(1, EPOCHS + 1))
        assert "best/val/micro_f1" in other.data.metrics and "test/micro_f1" in other.data.metrics


@pytest.mark.timeout(600)
def test_object_store_outage_loses_no_checkpoint_and_no_epoch(cluster, study):
    """The S3 server was down OUTAGE_S seconds while a trial was mid-way: the trial got through it (its
    checkpoint upload waited it out, or it was retried from its last checkpoint) and finished in its one
    run, every epoch logged once, with its final scores and its MLflow Model."""
    assert study.returncode == 0, study.log[-6000:]
    o = study.s3_outage
    assert len(o["steps_before"]) < EPOCHS and o["trial"] != study.outage["trial"]
    _, r, history, _ = drilled_trial(cluster, o)
    # The drill hit the trial's checkpoints. Rank 0 logs an epoch to MLflow, then persists its checkpoint
    # to the bucket, then trains on: either an epoch ended while the bucket was gone or as it went, after the
    # drill began (its checkpoint had to be written then), or the trial stood still through the outage (the upload of the checkpoint of
    # the epoch logged just before it waited), its next epoch coming only once the bucket was back,
    # after a pause far longer than any of its other epochs took.
    ended = {m.step: m.timestamp / 1000 for m in history}
    during = logged_during(history, o)
    last = max(e for e, t in ended.items() if t < o["down"])
    others = [ended[e + 1] - ended[e] for e in range(1, EPOCHS) if e != last]
    stood_still = last < EPOCHS and ended[last + 1] >= o["up"] and ended[last + 1] - ended[last] > 3 * max(others)
    assert during or stood_still, f"{o['trial']} neither ended an epoch during the S3 outage nor waited for " \
                                  f"it: the drill tested nothing ({ended}, outage {o['down']:.1f}-{o['up']:.1f})"
    assert "best/val/micro_f1" in r.data.metrics and "test/micro_f1" in r.data.metrics
    assert r.outputs.model_outputs, "the trial's MLflow Model (built from its last checkpoint) is missing"


@pytest.mark.timeout(600)
def test_database_outage_under_the_tracking_server_loses_no_epoch(cluster, study):
    """PostgreSQL was down PG_OUTAGE_S seconds under the tracking server while a trial was mid-way: the epochs
    logged meanwhile reached the store once it was back (the server's pool reconnects, the clients retry the
    errors it answered), in the trial's one run, each epoch once."""
    assert study.returncode == 0, study.log[-6000:]
    o = study.pg_outage
    assert len(o["steps_before"]) < EPOCHS and o["trial"] not in (study.outage["trial"], study.s3_outage["trial"])
    _, r, history, _ = drilled_trial(cluster, o)
    # the drill hit a client: an epoch logged while the database was down is stored
    assert logged_during(history, o), (f"no epoch of {o['trial']} was logged during the database outage: the drill "
                                       "tested nothing")
    assert "best/val/micro_f1" in r.data.metrics and "test/micro_f1" in r.data.metrics
    assert r.outputs.model_outputs, "the trial's MLflow Model is missing"


@pytest.mark.timeout(600)
def test_lost_node_trial_is_retried_on_the_nodes_left(cluster, study):
    """The second node died under a running trial: the trial ran again elsewhere (head + spare) and
    finished in its one MLflow run with every epoch logged once."""
    assert study.returncode == 0, study.log[-6000:]
    n = study.node_loss
    assert NODE in n["nodes_before"].split(",")
    client, _, _, trials = trial_runs(cluster)
    r = trials[n["trial"]]
    assert r.info.run_id == n["run_id"] and r.info.status == "FINISHED"
    after = r.data.tags[WORKER_NODES].split(",")
    assert NODE not in after and set(after) == {HEAD, SPARE}, after
    assert epochs_logged(client, r) == list(range(1, EPOCHS + 1))


@pytest.mark.timeout(300)
def test_token_authentication_guards_the_cluster(cluster, study):
    """The nodes joined with the token; a request or a driver without it is refused."""
    auth = cluster.auth
    assert auth["with_token"] == 200
    assert auth["without_token"] in (401, 403) and auth["wrong_token"] in (401, 403), auth
    assert [a for a, _ in auth["nodes"]] == [HEAD, NODE] and all(cpu == 1 for _, cpu in auth["nodes"])
    p = cluster.wrong_token
    try:
        p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("a driver with a wrong token neither connected nor gave up")
    log = (cluster.root / "wrong-token.log").read_text(errors="replace")
    assert p.returncode != 0 and "CONNECTED" not in log
    assert "InvalidAuthToken" in log or "Unauthenticated" in log, log[-3000:]


@pytest.mark.timeout(300)
def test_nodes_that_share_no_disk_read_and_write_everything_in_the_bucket(cluster, study):
    """The second node and the spare never saw the driver's disk, yet their workers trained every trial
    with the head's: the corpus, the tiny PLM and every checkpoint were in the bucket, none under the
    driver's output folder."""
    assert study.returncode == 0, study.log[-6000:]
    assert cluster.sees("head", study.out / "study.yaml")
    assert not cluster.sees("spare", study.out) and not cluster.sees("spare", cluster.root)  # the node's own /tmp
    assert NODE in study.seen_nodes and SPARE in study.seen_nodes  # workers ran where the output is not
    _, _, _, trials = trial_runs(cluster)
    for r in trials.values():  # what the workers read: URIs in the bucket, not paths on the driver's disk
        for key in ("inputs.train", "inputs.val", "inputs.test", "inputs.plm"):
            assert r.data.params[key].startswith(f"s3://{BUCKET}/studies/{STUDY}-"), (key, r.data.params[key])
    keys = cluster.s3.keys(BUCKET, "studies/")
    prepared = [k for k in keys if "/prepared/" in k]
    assert any(k.endswith("/train.txt") for k in prepared) and any(k.endswith("/config.json") for k in prepared)
    assert any("/ray-train/" in k and "/checkpoint_" in k for k in keys), keys[:20]
    assert any("/tune/" in k and "experiment_state" in k for k in keys), keys[:20]
    local = [str(p.relative_to(study.out)) for p in study.out.rglob("*") if p.is_file()]
    assert not any(p.startswith(("tune/", "ray-train/")) or "checkpoint" in p for p in local), local
