"""Log a saved tagger folder as an MLflow Model (pyfunc, models from code; see ``pyfunc.py``)."""

from __future__ import annotations

import contextlib
import os
from importlib import metadata
from pathlib import Path

from nerlab.models import names as N

# nerlab's runtime set for prediction, pinned at the versions of the environment that logs the model
RUNTIME_PACKAGES = ("torch", "transformers", "tokenizers", "safetensors", "pandas", "numpy", "mlflow")


def pip_requirements() -> list[str]:
    out = []
    for pkg in (*RUNTIME_PACKAGES, "nerlab"):
        try:
            out.append(f"{pkg}=={metadata.version(pkg).split('+')[0]}")
        except metadata.PackageNotFoundError:
            out.append(pkg)
    return out


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    # no input schema: MLflow would enforce it before the model sees its input, dropping a list of sentences
    # (an unknown column `0`) and handing over an empty frame; pyfunc.sentences_of checks the input instead
    # (the input example shows its shape)
    outputs = Schema([ColSpec(Array(DataType.string), "tokens"), ColSpec(Array(DataType.string), "tags")])
    return ModelSignature(None, outputs, ParamSchema([ParamSpec("batch_size", DataType.long, 32)]))


@contextlib.contextmanager
def _env(**values):
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        yield
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def log_tagger(folder: str | Path, run_id: str, tracking_uri: str, example: list[str], step: int = 0):
    """Log ``folder`` (a ``MultiTaskTagger.save`` folder) as the run's MLflow Model ``N.PYFUNC_MODEL``.

    Returns the ``ModelInfo`` (``model_uri`` is ``models:/<model_id>``). The input example is one sentence
    (``example``: its tokens) as raw text; MLflow predicts it once at logging time (the logged model loads).
    """
    import importlib.util

    import mlflow
    import pandas as pd
    from mlflow.models import Model

    from nerlab.dashboards.runs import process_tracking_uri

    code = importlib.util.find_spec("nerlab.platform.tracking.pyfunc").origin  # its path; MLflow copies and runs it
    # MLflow's logging reads the process-wide tracking URI and experiment (else the Default experiment, whose
    # artifacts may live elsewhere): the run's, for this call only
    experiment_id = mlflow.MlflowClient(tracking_uri).get_run(run_id).info.experiment_id
    with process_tracking_uri(tracking_uri), _env(MLFLOW_EXPERIMENT_ID=experiment_id, MLFLOW_EXPERIMENT_NAME=None):
        return Model.log(artifact_path=None, name=N.PYFUNC_MODEL, flavor=mlflow.pyfunc, run_id=run_id, step=step,
                         python_model=code, artifacts={N.PYFUNC_ARTIFACT: str(folder)}, signature=signature(),
                         input_example=pd.DataFrame({"text": [" ".join(example)]}),
                         pip_requirements=pip_requirements())
