"""Log a saved tagger folder as an MLflow Model (pyfunc, models from code; see ``pyfunc_model.py``)."""

from __future__ import annotations

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

    inputs = Schema([ColSpec(DataType.string, "text", required=False),
                     ColSpec(Array(DataType.string), "tokens", required=False)])
    outputs = Schema([ColSpec(Array(DataType.string), "tokens"), ColSpec(Array(DataType.string), "tags")])
    return ModelSignature(inputs, outputs, ParamSchema([ParamSpec("batch_size", DataType.long, 32)]))


def log_tagger(folder: str | Path, run_id: str, tracking_uri: str, example: list[str], step: int = 0):
    """Log ``folder`` (a ``MultiTaskTagger.save`` folder) as the run's MLflow Model ``N.PYFUNC_MODEL``.

    Returns the ``ModelInfo`` (``model_uri`` is ``models:/<model_id>``). The input example is one sentence
    (``example``: its tokens) as raw text; MLflow predicts it once at logging time (the logged model loads).
    """
    import importlib.util

    import mlflow
    import pandas as pd
    from mlflow.models import Model
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    code = importlib.util.find_spec("nerlab.models.pyfunc_model").origin  # its path; MLflow copies and runs it
    with _use_tracking_uri(tracking_uri):  # MLflow's logging reads the process-wide URI; leave it as it was
        return Model.log(artifact_path=None, name=N.PYFUNC_MODEL, flavor=mlflow.pyfunc, run_id=run_id, step=step,
                         python_model=code, artifacts={N.PYFUNC_ARTIFACT: str(folder)}, signature=signature(),
                         input_example=pd.DataFrame({"text": [" ".join(example)]}),
                         pip_requirements=pip_requirements())
