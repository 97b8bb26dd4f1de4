"""``nerlab select --ensemble K`` on the session's real study: built, logged, registered, loaded, predicted, scored."""

from __future__ import annotations

import json

import pytest

from nerlab.models import names as N
from nerlab.platform.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the first test may run the session's study

NAME = "dash-ensemble"  # the session's ensemble (conftest.py)


def test_ensemble_of_the_top_two_configurations_is_logged_and_registered(study, ensemble):
    answer, _ = ensemble
    ens, reg = answer["ensemble"], answer["registered"]
    assert ens["k"] == 2 and len(ens["members"]) == 2
    assert {m["config"] for m in ens["members"]} == {"tiny:2x32 | ce | λ=5", "tiny:2x32 | unified | λ=5"}
    assert ens["single"]["run_id"] == ens["members"][0]["run_id"]
    for split in ("val", "test"):
        assert 0 <= ens["bootstrap"][split]["p_better"] <= 1 and ens["bootstrap"][split]["sentences"] > 0
        assert ens["bootstrap"][split]["delta"] == pytest.approx(ens["f1"][split] - ens["single_f1"][split])
    client = study.client()
    # the best single model's F1 is the one its trial logged
    single = client.get_run(ens["single"]["run_id"]).data.metrics
    assert ens["single_f1"]["val"] == pytest.approx(single[N.BEST_VAL_F1], abs=1e-12)
    assert ens["single_f1"]["test"] == pytest.approx(single[N.TEST_F1], abs=1e-12)
    run = client.get_run(ens["run_id"])
    assert run.data.tags[N.KIND_TAG] == "ensemble" and N.PARENT_RUN_TAG not in run.data.tags
    assert run.data.metrics[N.TEST_F1] == ens["f1"]["test"] and run.data.metrics[N.BEST_VAL_F1] == ens["f1"]["val"]
    assert len(study.trial_runs()) == 4  # not counted as a trial
    version = client.get_model_version_by_alias(NAME, "champion")
    assert reg["version"] == int(version.version) and version.run_id == ens["run_id"]
    (out,) = run.outputs.model_outputs
    assert version.source == f"models:/{out.model_id}"


def test_ensemble_f1_is_the_score_of_its_predict_output(study, ensemble, tmp_path, capsys):
    import mlflow
    import pandas as pd

    from nerlab.dashboards.runs import process_tracking_uri
    from nerlab.models.wojood import read_file

    test_file = study.trial_runs()[0].data.params["inputs.test"]
    pred = tmp_path / "pred.txt"
    assert main(["predict", "--model", f"models:/{NAME}@champion", "--study", str(study.out), "--input", test_file,
                 "--out", str(pred)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--gold", test_file, "--pred", str(pred), "--task", "nested", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)["micro"]["f1"]
    assert scored == pytest.approx(ensemble[0]["ensemble"]["f1"]["test"], abs=1e-12)

    gold = read_file(test_file)
    with process_tracking_uri(study.uri):
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    got = model.predict(pd.DataFrame({"tokens": [s.tokens for s in gold]}))
    assert [list(t) for t in got["tags"]] == [["|".join(t) for t in s.tags] for s in read_file(pred)]


def test_ensemble_larger_than_the_study_is_bad_input(study, capsys):
    capsys.readouterr()
    assert main(["select", str(study.out), "--name", NAME, "--ensemble", "3"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--ensemble 3" in err and "only 2 configuration(s)" in err
