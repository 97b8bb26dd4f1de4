"""The champion as an MLflow Model (pyfunc load, HTTP serving) and readable trial runs, on the session's study."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from nerlab.models import names as N
from nerlab.platform.tracking import server as mlflow_server
from nerlab.platform.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the first test may run the session's study


def nerlab_predict_tags(study, name: str, sentences: list[list[str]], tmp_path: Path) -> list[list[str]]:
    """What ``nerlab predict`` writes for these sentences (raw text), as ``|``-joined tags per token."""
    from nerlab.models.wojood import read_file

    raw, out = tmp_path / "raw.txt", tmp_path / "pred.txt"
    raw.write_text("\n".join(" ".join(s) for s in sentences) + "\n", encoding="utf-8")
    assert main(["predict", "--model", f"models:/{name}@champion", "--study", str(study.out), "--input", str(raw),
                 "--format", "raw", "--out", str(out)]) == 0
    return [["|".join(t) for t in s.tags] for s in read_file(out)]


def some_sentences(study) -> list[list[str]]:
    from nerlab.models.wojood import read_file

    run = study.trial_runs()[0]
    gold = read_file(run.data.params["inputs.test"])
    return [s.tokens for s in gold[:6]] + [[t for s in gold for t in s.tokens][:300]]  # one beyond a window


def test_trial_runs_are_named_by_what_they_are_and_show_their_datasets(study):
    runs = study.trial_runs()
    assert len(runs) == 4
    names = sorted(r.info.run_name for r in runs)
    assert names == sorted(f"tiny:2x32·{loss}·λ5·s{seed}" for loss in ("ce", "unified") for seed in (1, 2))
    for r in runs:
        assert r.data.tags[N.TRIAL_TAG] and r.data.tags[N.TRIAL_TAG] not in r.info.run_name
        inputs = {i.tags[0].value: i.dataset for i in r.inputs.dataset_inputs}
        assert set(inputs) == {"training", "validation", "test"}
        for ctx, split in (("training", "train"), ("validation", "val"), ("test", "test")):
            path = r.data.params[f"inputs.{split}"]
            assert json.loads(inputs[ctx].source)["uri"] == str(Path(path).resolve())
            assert len(inputs[ctx].digest) == 16


def test_each_trial_logs_an_mlflow_model_the_registry_points_to(study, champion):
    client = study.client()
    for r in study.trial_runs():
        (out,) = r.outputs.model_outputs
        lm = client.get_logged_model(out.model_id)
        assert lm.name == N.PYFUNC_MODEL and lm.source_run_id == r.info.run_id
    _, name = champion
    version = client.get_model_version_by_alias(name, "champion")
    model_id = client.get_run(version.run_id).outputs.model_outputs[0].model_id
    assert version.source == f"models:/{model_id}"  # (MLflow's SQL registry keeps no model_id column)
    assert client.get_logged_model(model_id).experiment_id == study.experiment_id


def test_pyfunc_champion_tags_as_nerlab_predict(study, champion, tmp_path):
    import mlflow
    import pandas as pd

    from nerlab.dashboards.runs import process_tracking_uri

    _, name = champion
    sentences = some_sentences(study)
    want = nerlab_predict_tags(study, name, sentences, tmp_path)
    with process_tracking_uri(study.uri):
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    meta = model.metadata
    assert meta.signature is not None and meta.saved_input_example_info is not None
    by_text = model.predict(pd.DataFrame({"text": [" ".join(s) for s in sentences]}))
    by_tokens = model.predict(pd.DataFrame({"tokens": sentences}))
    for got in (by_text, by_tokens):
        assert [list(t) for t in got["tokens"]] == sentences
        assert [list(t) for t in got["tags"]] == want


@pytest.mark.timeout(300)
@pytest.mark.parametrize("which", ["champion", "ensemble"])
def test_mlflow_models_serve_answers_as_nerlab_predict(study, which, request, tmp_path):
    _, name = request.getfixturevalue(which)  # a single tagger, or the top-2 ensemble (select --ensemble 2)
    sentences = some_sentences(study)
    want = nerlab_predict_tags(study, name, sentences, tmp_path)
    # the serving command runs `uvicorn` from PATH: make it this interpreter's (a copied venv's scripts may
    # name another interpreter in their first line)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "uvicorn").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m uvicorn "$@"\n')
    (bin_dir / "uvicorn").chmod(0o755)
    env = {**os.environ, "MLFLOW_TRACKING_URI": study.uri, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    def serve(port: int) -> list[str]:
        return [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{name}@champion",
                "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]

    # nerlab's rule for servers: a port picked free, another if it was taken meanwhile, and up once ours answers
    server, url = mlflow_server.start_command(serve, health="/ping", log_file=tmp_path / "serve.log", env=env,
                                              timeout=180)
    try:
        def invoke(body):
            req = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        texts = [" ".join(s) for s in sentences]
        for body in ({"dataframe_records": [{"text": t} for t in texts]},
                     {"dataframe_records": [{"tokens": s} for s in sentences]},
                     {"inputs": texts},  # MLflow's usual shape for a model of text: a list of sentences
                     {"inputs": {"text": texts}}):
            status, answer = invoke(body)
            assert status == 200, (body, answer)
            assert [a["tokens"] for a in answer["predictions"]] == sentences
            assert [a["tags"] for a in answer["predictions"]] == want
        # any other shape: a 4xx that names the expected columns, never an empty answer
        for body in ({"inputs": [1, 2]}, {"inputs": [s[:2] for s in sentences]}, {"inputs": texts[0]},
                     {"dataframe_records": [{"sentence": t} for t in texts]}):
            status, answer = invoke(body)
            assert 400 <= status < 500, (body, status, answer)
            assert "'text'" in answer["message"] and "'tokens'" in answer["message"], answer
    finally:
        mlflow_server.stop(server)  # the whole process group: mlflow, uvicorn and its workers


def test_predict_counts_entities_as_the_scorer(study, champion, tmp_path, capsys):
    _, name = champion
    test_file = study.trial_runs()[0].data.params["inputs.test"]
    pred = tmp_path / "submission.txt"
    capsys.readouterr()
    assert main(["predict", "--model", f"models:/{name}@champion", "--study", str(study.out), "--input", test_file,
                 "--out", str(pred), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert main(["evaluate", "--gold", test_file, "--pred", str(pred), "--task", "nested", "--json"]) == 0
    assert summary["entities_tagged"] == json.loads(capsys.readouterr().out)["micro"]["predicted"]


def test_predict_takes_every_uri_of_the_champion(study, champion, tmp_path):
    _, name = champion
    client = study.client()
    run_id = client.get_model_version_by_alias(name, "champion").run_id
    model_id = client.get_run(run_id).outputs.model_outputs[0].model_id
    test_file = client.get_run(run_id).data.params["inputs.test"]
    outs = []
    for i, uri in enumerate((f"models:/{name}@champion", f"runs:/{run_id}/{N.PYFUNC_MODEL}",
                             f"runs:/{run_id}/{N.MODEL_DIR}", f"models:/{model_id}")):
        outs.append(tmp_path / f"{i}.txt")
        assert main(["predict", "--model", uri, "--tracking-uri", study.uri, "--input", test_file,
                     "--out", str(outs[-1])]) == 0, uri
    assert len({o.read_bytes() for o in outs}) == 1
