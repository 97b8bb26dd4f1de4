"""MLflow: where runs go and how they are written, finding a study or a model in a store, the local server, and the
MLflow Model of a tagger (how a run logs it; the pyfunc MLflow loads)."""
