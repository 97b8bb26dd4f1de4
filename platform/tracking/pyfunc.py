"""The tagger as an MLflow Model (pyfunc flavour, "models from code": no pickle of any Python object).

MLflow copies this file into the logged model and runs it at load time; it calls ``set_model`` with a
``PythonModel`` whose ``load_context`` reads the model folder (artifact ``tagger``) with
``ensemble.load_predictor``: a single tagger's folder (safetensors weights, encoder config, label schema and
task, tokenizer) or an ensemble's (``ensemble.json`` and one such folder per member, combined per word).

Input, a pandas DataFrame (or a list of records, or columns as a dict of lists) with one sentence per row, in
either column:
  ``text``    a raw sentence, whitespace-tokenised (as ``nerlab predict`` reads raw text), or
  ``tokens``  a list of tokens;
or a list (Series, array) of raw sentences, as ``{"inputs": ["sentence one", "sentence two"]}`` sends them.
Anything else is refused with an error naming these columns (HTTP 400 when served). The signature declares
no input schema: MLflow's enforcement of one would drop a list of sentences as an unknown column and hand the
model an empty frame (an empty answer); this file checks its input itself.
Output, a DataFrame with one row per sentence: ``tokens`` (list of str) and ``tags`` (list of str, one per
token: its tags outermost first joined with ``|``, ``O`` for none), exactly the tags ``nerlab predict``
writes for the same sentences.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.pyfunc import PythonModel

from nerlab.models import names as N

TAG_SEPARATOR = "|"


EXPECTED_INPUT = ("rows with a 'text' column (a sentence) or a 'tokens' column (a list of tokens), "
                  "or a list of sentences (strings)")


def _bad_input(message: str):
    from mlflow.exceptions import MlflowException

    return MlflowException.invalid_parameter_value(message)  # HTTP 400 when served


def _plain(value):
    """A numpy value (how MLflow's server hands over JSON ``inputs``) as plain Python: str, list, ..."""
    import numpy as np

    return value.tolist() if isinstance(value, np.ndarray) else value


def _records(model_input) -> list[dict]:
    """``model_input`` as one dict per sentence, or a 400 naming the input that is expected."""
    import pandas as pd

    if isinstance(model_input, pd.Series):
        model_input = model_input.tolist()
    model_input = _plain(model_input)
    if isinstance(model_input, dict):  # columns, as {"inputs": {"text": [...]}} sends them
        if not all(isinstance(v, list) for v in map(_plain, model_input.values())):
            raise _bad_input(f"expected {EXPECTED_INPUT}; got columns that are not lists")
        try:
            model_input = pd.DataFrame({k: _plain(v) for k, v in model_input.items()})
        except ValueError as e:
            raise _bad_input(f"expected {EXPECTED_INPUT}; got columns that do not line up ({e})") from None
    if isinstance(model_input, pd.DataFrame):
        if len(model_input) and not {"text", "tokens"} & set(model_input.columns):
            raise _bad_input(f"expected {EXPECTED_INPUT}; got columns {list(model_input.columns)}")
        model_input = model_input.to_dict(orient="records")
    if isinstance(model_input, list) and all(isinstance(r, str) for r in model_input):
        return [{"text": r} for r in model_input]  # raw sentences
    if isinstance(model_input, list) and all(isinstance(r, dict) for r in model_input):
        return [{k: _plain(v) for k, v in r.items()} for r in model_input]
    got = type(model_input).__name__
    if isinstance(model_input, list):
        got = "a list of " + ", ".join(sorted({type(r).__name__ for r in model_input}))
    raise _bad_input(f"expected {EXPECTED_INPUT}; got {got}")


def sentences_of(model_input):
    """Sentences from a DataFrame, a list of records, columns (a dict of lists) with ``text`` or ``tokens``, or a
    list (Series, array) of raw sentences; any other input is refused (``MlflowException``, HTTP 400)."""
    from nerlab.models.wojood import Sentence

    out = []
    for i, r in enumerate(_records(model_input)):
        tokens, text = r.get("tokens"), r.get("text")
        if isinstance(tokens, (list, tuple)):  # (NaN where the row has text instead)
            out.append(Sentence([str(t) for t in tokens]))
        elif isinstance(text, str):
            out.append(Sentence(text.split()))
        else:
            raise _bad_input(f"row {i}: give 'text' (a sentence) or 'tokens' (a list of tokens)")
    return out


def tag_records(predictor, model_input, batch_size: int = 32):
    """``predictor``: a single tagger or an ensemble (``nerlab.models.ensemble.load_predictor``)."""
    import pandas as pd

    sentences = sentences_of(model_input)
    nonempty = [s for s in sentences if len(s)]
    pred = iter(predictor.predict(nonempty, batch_size=batch_size) if nonempty else [])
    rows = []
    for s in sentences:
        p = next(pred) if len(s) else s
        rows.append({"tokens": list(p.tokens), "tags": [TAG_SEPARATOR.join(t) for t in p.tags]})
    return pd.DataFrame(rows, columns=["tokens", "tags"])


class TaggerModel(PythonModel):
    def load_context(self, context):
        from nerlab.models.ensemble import load_predictor

        self.predictor = load_predictor(Path(context.artifacts[N.PYFUNC_ARTIFACT]), device="cpu")

    def predict(self, context, model_input, params=None):
        batch_size = int((params or {}).get("batch_size", 32))
        return tag_records(self.predictor, model_input, batch_size)


mlflow.models.set_model(TaggerModel())
