"""leaderboard, report, select, predict and ui against a real MLflow store filled by a small real study.

Every number is checked against an independent computation: metrics fetched here with MlflowClient and
averaged with ``statistics``, the trial's logged test F1 against ``nerlab evaluate`` of a fresh prediction.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import statistics
from collections import defaultdict
from pathlib import Path

import pytest

from nerlab.platform.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the first test also runs the session's study
VAL, TEST = "best/val/micro_f1", "test/micro_f1"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def by_config(runs) -> dict[tuple, list]:
    groups = defaultdict(list)
    for r in runs:
        groups[(r.data.tags["plm"], r.data.tags["loss"], float(r.data.tags["penalty"]))].append(r)
    return groups


def expected_champion(study):
    """The best configuration by mean validation F1 over seeds, and its best trial run, computed here."""
    groups = by_config(study.trial_runs())
    best_cfg = max(groups, key=lambda k: statistics.mean(r.data.metrics[VAL] for r in groups[k]))
    best_run = max(groups[best_cfg], key=lambda r: r.data.metrics[VAL])
    return best_cfg, best_run, groups


# ---- leaderboard ---------------------------------------------------------------------------------------------
def test_leaderboard_numbers_equal_the_runs_logged_metrics(study, capsys, cpu_bf16_flags):
    runs = study.trial_runs()
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    code, out, _ = run_cli(capsys, "leaderboard", str(study.out), "--json")
    assert code == 0
    rows = json.loads(out)["rows"]
    groups = by_config(runs)
    assert len(rows) == len(groups) == 2
    for row in rows:
        trials = groups[(row["plm"], row["loss"], row["penalty"])]
        val = [r.data.metrics[VAL] for r in trials]
        test = [r.data.metrics[TEST] for r in trials]
        assert row["trials"] == len(trials) == 2
        assert row["val_f1_mean"] == statistics.mean(val)
        assert row["val_f1_std"] == pytest.approx(statistics.stdev(val), rel=1e-12, abs=1e-15)
        assert row["test_f1_mean"] == statistics.mean(test)
        assert row["test_f1_std"] == pytest.approx(statistics.stdev(test), rel=1e-12, abs=1e-15)
        assert row["best_epoch"] == statistics.mean(r.data.metrics["best_epoch"] for r in trials)
        assert row["seeds"] == "1,2"
        wall = sum((r.info.end_time - r.info.start_time) / 1000 for r in trials)
        assert row["wall_s"] == pytest.approx(wall)
        assert row["cpu_s"] == pytest.approx(wall * 0.9) and row["gpu_s"] == 0.0  # 1 worker x 0.9 CPU
        assert row["best_run_id"] == max(trials, key=lambda r: r.data.metrics[VAL]).info.run_id
        # the study asks for precision: auto, which is bf16 on a CPU with AMX or AVX512-BF16 (/proc/cpuinfo)
        assert row["precision"] == ("bf16" if cpu_bf16_flags else "fp32")
        assert {r.data.tags["nerlab.precision"] for r in trials} == {row["precision"]}
    means = [r["val_f1_mean"] for r in rows]
    assert means == sorted(means, reverse=True)
    assert max(means) > 0.05, "the study learned nothing: the checks below would compare zeros"

    code, out, _ = run_cli(capsys, "leaderboard", str(study.out), "--csv")
    table = list(csv.DictReader(io.StringIO(out)))
    assert [float(r["val_f1_mean"]) for r in table] == means
    code, out, _ = run_cli(capsys, "leaderboard", str(study.out))
    assert code == 0 and all(r["config"] in out for r in rows) and "±" in out and "precision" in out


def test_leaderboard_finds_a_study_by_name_on_a_tracking_uri(study, capsys):
    code, out, _ = run_cli(capsys, "leaderboard", "dash", "--tracking-uri", study.uri, "--json")
    assert code == 0 and len(json.loads(out)["rows"]) == 2


# ---- report ----------------------------------------------------------------------------------------------------
REPORT_FILES = {"report.html", "heatmap_lambda-5.png", "penalty_effect.png", "per_type_f1.png",
                "learning_curves.png", "leaderboard.csv"}


def logged_report_files(study) -> set[str]:
    arts = study.client().list_artifacts(study.parent_run_id, "report")
    return {Path(a.path).name for a in arts}


def test_the_study_wrote_and_logged_its_report(study):
    folder = study.out / "report"
    assert REPORT_FILES <= {p.name for p in folder.iterdir()}
    for png in folder.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    assert REPORT_FILES <= logged_report_files(study)  # visible in the MLflow UI
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert "id='heatmap-5'" in page and "data:image/png;base64," in page and "tiny:2x32 | unified" in page


def test_report_on_demand_writes_and_logs(study, capsys, tmp_path):
    code, out, _ = run_cli(capsys, "report", str(study.out), "--out", str(tmp_path / "rep"), "--json")
    assert code == 0
    result = json.loads(out)
    assert set(result["files"]) == REPORT_FILES
    assert {p.name for p in (tmp_path / "rep").iterdir()} == REPORT_FILES
    assert result["logged_to"] == f"runs:/{study.parent_run_id}/report"
    assert REPORT_FILES <= logged_report_files(study)


# ---- select --------------------------------------------------------------------------------------------------
def test_select_registers_the_best_trial_as_champion(study, champion, tmp_path):
    answer, name = champion
    best_cfg, best_run, groups = expected_champion(study)
    choice = answer["choice"]
    assert choice["run_id"] == best_run.info.run_id
    assert choice["mean"] == statistics.mean(r.data.metrics[VAL] for r in groups[best_cfg])
    assert 0.0 <= choice["p_better"] <= 1.0 and choice["sentences"] > 0
    assert choice["ci95"][0] <= choice["delta"] <= choice["ci95"][1]

    client = study.client()
    version = client.get_model_version_by_alias(name, "champion")
    assert version.run_id == best_run.info.run_id and int(version.version) == answer["registered"]["version"]
    # models:/NAME@champion resolves to exactly the best trial's model folder (inside its MLflow Model)
    import mlflow.artifacts

    got = Path(mlflow.artifacts.download_artifacts(client.get_model_version_download_uri(name, version.version),
                                                   dst_path=str(tmp_path / "registry"), tracking_uri=study.uri))
    assert (got / "MLmodel").is_file()
    got = got / "artifacts" / "model"
    # the trial's weights are stored once, in its own MLflow Model (runs:/ID/model resolves to it)
    from nerlab.platform.tracking.stores import fetch_model

    logged = fetch_model(f"runs:/{best_run.info.run_id}/model", study.uri, tmp_path / "run")
    assert not client.list_artifacts(best_run.info.run_id, "model")
    digest = lambda p: hashlib.sha256((p / "model.safetensors").read_bytes()).hexdigest()  # noqa: E731
    assert digest(got) == digest(logged)


def test_select_again_keeps_the_previous_champion_version(study, champion, capsys):
    from nerlab.dashboards.champion import Choice, register

    _, best_run, groups = expected_champion(study)
    other = next(r for runs in groups.values() for r in runs if r.info.run_id != best_run.info.run_id)
    client = study.client()
    name = "dash-previous"
    first, created = register(client, name, Choice("dash", VAL, "earlier pick", other.info.run_id, "t", 0.1, 0.0, 1))
    assert created and client.get_model_version_by_alias(name, "champion").version == first.version
    code, out, _ = run_cli(capsys, "select", str(study.out), "--name", name, "--json")
    assert code == 0
    second = client.get_model_version_by_alias(name, "champion")
    assert second.run_id == best_run.info.run_id and int(second.version) == int(first.version) + 1
    kept = client.get_model_version(name, first.version)
    assert kept.run_id == other.info.run_id and not kept.aliases
    code, out, _ = run_cli(capsys, "select", str(study.out), "--name", name, "--json")  # same pick: no new version
    assert json.loads(out)["registered"]["version"] == int(second.version)


def test_bootstrap_on_the_studys_predictions(study, tmp_path):
    """A config against a clearly worse one built by hand (all O; or against gold) gives 1.0; A vs B and
    B vs A add up to 1; per-sentence counts reproduce the scorer's micro-F1."""
    from nerlab.dashboards.champion import f1_of_counts, paired_bootstrap, sentence_counts
    from nerlab.models.scoring import score
    from nerlab.models.wojood import Sentence, read_file

    _, best_run, groups = expected_champion(study)
    gold = read_file(best_run.data.params["inputs.val"])
    client = study.client()
    pred = read_file(client.download_artifacts(best_run.info.run_id, "predictions/val.txt", str(tmp_path)))
    counts = sentence_counts(gold, pred, "nested")
    assert f1_of_counts(counts.sum(0)) == pytest.approx(score(gold, pred, "nested").micro.f1, abs=1e-12)
    assert f1_of_counts(counts.sum(0)) == pytest.approx(best_run.data.metrics[VAL], abs=1e-12)
    all_o = sentence_counts(gold, [Sentence(list(s.tokens), [["O"] for _ in s.tokens]) for s in gold], "nested")
    perfect = sentence_counts(gold, gold, "nested")
    assert paired_bootstrap([counts], [all_o], samples=500).p_better == 1.0
    assert paired_bootstrap([perfect], [counts], samples=500).p_better == 1.0
    others = [r for runs in groups.values() for r in runs if r.data.tags["loss"] != best_run.data.tags["loss"]]
    other = [sentence_counts(gold, read_file(client.download_artifacts(r.info.run_id, "predictions/val.txt",
                                                                       str(tmp_path / r.info.run_id))), "nested")
             for r in others]
    ab = paired_bootstrap([counts], other, samples=500, seed=3).p_better
    ba = paired_bootstrap(other, [counts], samples=500, seed=3).p_better
    assert 0.0 <= ab <= 1.0 and ab + ba == pytest.approx(1.0)


def test_select_bootstraps_from_the_studys_gold_copy_on_another_machine(study, champion, tmp_path):
    """The study logs its gold validation file on the parent run; where the trials' own path is missing (another
    machine), select downloads that copy and reaches the same answer."""
    from nerlab.dashboards.champion import choose

    answer, _ = champion
    _, best_run, _ = expected_champion(study)
    val = Path(best_run.data.params["inputs.val"])
    client = study.client()
    logged = Path(client.download_artifacts(study.parent_run_id, "gold/val.txt", str(tmp_path)))
    assert logged.read_bytes() == val.read_bytes()
    test = Path(best_run.data.params["inputs.test"])  # the test file too, for ensembles scored elsewhere
    logged = Path(client.download_artifacts(study.parent_run_id, "gold/test.txt", str(tmp_path / "t")))
    assert logged.read_bytes() == test.read_bytes()
    hidden = val.with_name(val.name + ".hidden")
    val.rename(hidden)
    try:
        choice = choose(client, study.experiment_id, study.parent_run_id, "dash")
    finally:
        hidden.rename(val)
    assert choice.sentences == answer["choice"]["sentences"] > 0
    assert choice.p_better == answer["choice"]["p_better"] and choice.delta == answer["choice"]["delta"]


# ---- predict -------------------------------------------------------------------------------------------------
def test_predict_with_the_champion_scores_as_the_trials_logged_test_f1(study, champion, capsys, tmp_path):
    _, name = champion
    version = study.client().get_model_version_by_alias(name, "champion")
    run = study.client().get_run(version.run_id)
    test_file = run.data.params["inputs.test"]
    pred = tmp_path / "submission.txt"
    code, _, err = run_cli(capsys, "predict", "--model", f"models:/{name}@champion", "--study", str(study.out),
                           "--input", test_file, "--out", str(pred))
    assert code == 0, err
    code, out, _ = run_cli(capsys, "evaluate", "--gold", test_file, "--pred", str(pred), "--task", "nested", "--json")
    assert code == 0
    assert json.loads(out)["micro"]["f1"] == run.data.metrics[TEST]


def test_predict_reads_untagged_and_raw_text_and_drops_no_token(study, champion, capsys, tmp_path):
    from nerlab.models.wojood import read_file

    _, name = champion
    run = study.client().get_run(study.client().get_model_version_by_alias(name, "champion").run_id)
    gold = read_file(run.data.params["inputs.test"])
    untagged = tmp_path / "tokens.txt"
    untagged.write_text("".join("".join(t + "\n" for t in s.tokens) + "\n" for s in gold), encoding="utf-8")
    long_sentence = [t for s in gold for t in s.tokens][:700]  # far beyond the model's 64-piece window
    raw = tmp_path / "raw.txt"
    raw.write_text("\n".join(" ".join(s.tokens) for s in gold[:5]) + "\n" + " ".join(long_sentence) + "\n",
                   encoding="utf-8")
    model = ["--model", f"models:/{name}@champion", "--tracking-uri", study.uri]
    code, _, err = run_cli(capsys, "predict", *model, "--input", str(untagged), "--out", str(tmp_path / "a.txt"))
    assert code == 0, err
    code, _, err = run_cli(capsys, "predict", *model, "--input", str(run.data.params["inputs.test"]),
                           "--out", str(tmp_path / "b.txt"))
    assert code == 0, err
    assert (tmp_path / "a.txt").read_bytes() == (tmp_path / "b.txt").read_bytes()  # gold tags do not matter
    code, out, err = run_cli(capsys, "predict", *model, "--input", str(raw), "--out", str(tmp_path / "c.txt"),
                             "--json")
    assert code == 0, err
    assert json.loads(out)["format"] == "raw"
    # every token carries a tag (O or entities): read from the file's own lines (read_file refuses a line
    # without a tag, so it cannot tell)
    lines = [ln.split(" ") for ln in (tmp_path / "c.txt").read_text(encoding="utf-8").splitlines() if ln]
    untagged = [i + 1 for i, fields in enumerate(lines) if len(fields) < 2]
    assert not untagged, f"c.txt: tokens without a tag at token lines {untagged[:5]}"
    got = read_file(tmp_path / "c.txt")
    assert [s.tokens for s in got] == [s.tokens for s in gold[:5]] + [long_sentence]


# ---- bad input -----------------------------------------------------------------------------------------------
def test_bad_input_is_one_line_and_exit_code_2(study, champion, capsys, tmp_path):
    _, name = champion
    cases = [
        (["leaderboard", "no-such-study"], "no-such-study"),
        (["report", "no-such-study"], "no-such-study"),
        (["select", "no-such-study", "--name", "x"], "no-such-study"),
        (["leaderboard", "other", "--tracking-uri", study.uri], "other"),
        (["predict", "--model", "models:/no-such-model@champion", "--study", str(study.out), "--input",
          str(study.out / "study.yaml"), "--out", str(tmp_path / "x")], "no-such-model"),
        (["predict", "--model", f"models:/{name}@no-such-alias", "--study", str(study.out), "--input",
          str(study.out / "study.yaml"), "--out", str(tmp_path / "x")], "no-such-alias"),
        (["predict", "--model", str(tmp_path / "no-model"), "--input", str(study.out / "study.yaml"),
          "--out", str(tmp_path / "x")], "no-model"),
        (["predict", "--model", f"models:/{name}@champion", "--study", str(study.out), "--input",
          str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x")], "missing.txt"),
        (["ui", "--store", str(tmp_path / "nowhere.db")], "nowhere.db"),
    ]
    for argv, named in cases:
        code, out, err = run_cli(capsys, *argv)
        assert code == 2, (argv, err)
        assert len(err.strip().splitlines()) == 1 and named in err, (argv, err)


def test_ui_serves_a_study_on_loopback(study, listening, tmp_path):
    """The real ``nerlab ui`` over the study's folder: it prints the study's experiment page once the server
    answers, every socket of its processes listens on 127.0.0.1 (the kernel's socket table), and what it
    serves is the study's store. The other ways to name that store resolve to the same URI."""
    import signal
    import subprocess
    import sys
    import urllib.request

    import psutil

    from nerlab.platform.tracking.server import free_port
    from nerlab.platform.tracking.stores import store_uri

    port = free_port()
    cmd = subprocess.Popen([sys.executable, "-m", "nerlab.platform.cli", "ui", str(study.out), "--port", str(port)],
                           stdout=subprocess.PIPE, stderr=(tmp_path / "ui.log").open("w"), text=True)
    try:
        line = cmd.stdout.readline()  # printed once /health answers
        assert line.startswith(f"MLflow UI on http://127.0.0.1:{port}/#/experiments/{study.experiment_id}  "), \
            (line, (tmp_path / "ui.log").read_text())
        command = psutil.Process(cmd.pid)
        sockets = listening([command, *command.children(recursive=True)])
        assert ("127.0.0.1", port) in sockets and {ip for ip, _ in sockets} == {"127.0.0.1"}, sockets
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get?experiment_id={study.experiment_id}"
        with urllib.request.urlopen(api, timeout=30) as r:
            assert json.load(r)["experiment"]["name"] == "dash"
    finally:
        cmd.send_signal(signal.SIGINT)  # Ctrl-C: the command stops its server and ends
        assert cmd.wait(timeout=60) == 0
    db = study.out / "mlflow.db"
    assert store_uri(str(study.out)) == store_uri(str(db)) == store_uri(f"sqlite:///{db}") == study.uri
