"""The tagger as an MLflow Model (pyfunc flavour, "models from code": no pickle of any Python object).

MLflow copies this file into the logged model and runs it at load time; it calls ``set_model`` with a
``PythonModel`` whose ``load_context`` reads the model folder (artifact ``tagger``) with
``ensemble.load_predictor``: a single tagger's folder (safetensors weights, encoder config, label schema and
task, tokenizer) or an ensemble's (``ensemble.json`` and one such folder per member, combined per word).

Input, a pandas DataFrame (or a list of records) with one sentence per row, in either column:
  ``text``    a raw sentence, whitespace-tokenised (as ``nerlab predict`` reads raw text), or
  ``tokens``  a list of tokens.
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


def sentences_of(model_input):
    """Sentences from a DataFrame / list of records / list of strings with ``text`` or ``tokens``."""
    import pandas as pd

    from nerlab.models.wojood import Sentence

    if isinstance(model_input, pd.DataFrame):
        records = model_input.to_dict(orient="records")
    elif isinstance(model_input, dict):
        records = pd.DataFrame(model_input).to_dict(orient="records")
    else:
        records = [r if isinstance(r, dict) else {"text": r} for r in model_input]
    out = []
    for i, r in enumerate(records):
        tokens = r.get("tokens")
        if tokens is not None and not (isinstance(tokens, float)):  # NaN: the row has text instead
            tokens = [str(t) for t in list(tokens)]
        elif isinstance(r.get("text"), str):
            tokens = r["text"].split()
        else:
            raise ValueError(f"row {i}: give 'text' (a sentence) or 'tokens' (a list of tokens)")
        out.append(Sentence(tokens))
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
