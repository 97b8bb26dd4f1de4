"""The tagger as an MLflow Model: logged from code (no pickle), loaded with pyfunc, tags as predict()."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from nerlab.dashboards.runs import process_tracking_uri
from nerlab.models import names as N
from nerlab.models.predict import predict
from nerlab.models.schema import LabelSchema
from nerlab.models.tagger import MultiTaskTagger, TaggerConfig
from nerlab.models.wojood import Sentence, read_file
from nerlab.platform.tracking.logged_model import log_tagger


@pytest.fixture(scope="module")
def logged(synth_dir: Path, tiny_plm: Path, tmp_path_factory):
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("pyfunc")
    schema = LabelSchema.wojood("nested")
    model = MultiTaskTagger.from_plm(str(tiny_plm), schema, TaggerConfig(plm=str(tiny_plm)))
    folder = model.save(tmp / "model", AutoTokenizer.from_pretrained(tiny_plm))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("pyfunc", artifact_location=(tmp / "artifacts").as_uri())
    run = client.create_run(exp)
    sentences = read_file(synth_dir / "test.txt", task="nested")[:12]
    t0 = time.perf_counter()
    info = log_tagger(folder, run.info.run_id, uri, sentences[0].tokens[:8])
    seconds = time.perf_counter() - t0
    return info, folder, uri, client, run.info.run_id, sentences, seconds


def test_logged_model_is_linked_to_its_run_and_pickle_free(logged):
    info, folder, uri, client, run_id, _, seconds = logged
    assert info.model_uri == f"models:/{info.model_id}"
    outputs = client.get_run(run_id).outputs.model_outputs
    assert [o.model_id for o in outputs] == [info.model_id]
    lm = client.get_logged_model(info.model_id)
    assert lm.name == N.PYFUNC_MODEL and lm.source_run_id == run_id
    assert lm.experiment_id == client.get_run(run_id).info.experiment_id  # not the Default experiment
    assert info.signature is not None and info.saved_input_example_info is not None
    print(f"log_tagger took {seconds:.2f} s")


def test_pyfunc_predict_equals_predict(logged):
    import mlflow
    import pandas as pd

    info, folder, uri, _, _, sentences, _ = logged
    with process_tracking_uri(uri):
        pyf = mlflow.pyfunc.load_model(info.model_uri)
    model, tok = MultiTaskTagger.load(folder)
    want = predict(model, tok, [Sentence(s.tokens) for s in sentences])
    by_text = pyf.predict(pd.DataFrame({"text": [" ".join(s.tokens) for s in sentences]}))
    by_tokens = pyf.predict(pd.DataFrame({"tokens": [s.tokens for s in sentences]}))
    for out in (by_text, by_tokens):
        assert [list(t) for t in out["tokens"]] == [s.tokens for s in want]
        assert [list(t) for t in out["tags"]] == [["|".join(t) for t in s.tags] for s in want]


def test_pyfunc_takes_a_list_of_sentences_and_refuses_other_shapes(logged):
    """A list (Series, array) of strings is raw sentences; a shape without text/tokens is an error that names
    them, never an empty answer (MLflow's schema enforcement used to drop such input as an unknown column)."""
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.exceptions import MlflowException

    info, folder, uri, _, _, sentences, _ = logged
    with process_tracking_uri(uri):
        pyf = mlflow.pyfunc.load_model(info.model_uri)
    model, tok = MultiTaskTagger.load(folder)
    want = predict(model, tok, [Sentence(s.tokens) for s in sentences])
    texts = [" ".join(s.tokens) for s in sentences]
    for given in (texts, pd.Series(texts), np.array(texts), {"text": texts}, [{"text": t} for t in texts]):
        out = pyf.predict(given)
        assert [list(t) for t in out["tokens"]] == [s.tokens for s in want], type(given)
        assert [list(t) for t in out["tags"]] == [["|".join(t) for t in s.tags] for s in want], type(given)
    for bad in ([1, 2], [["a", "b"]], "one sentence", pd.DataFrame({"sentence": texts}), [{"txt": "a"}],
                {"text": "a b"}, pd.DataFrame({"text": [1.5]})):
        with pytest.raises(MlflowException) as e:
            pyf.predict(bad)
        assert "'text'" in e.value.message and "'tokens'" in e.value.message, bad
