"""A training job: its driver (start-up checks, MLflow run, Ray Train), its inputs (data, PLM), the worker loop and
the two sessions it runs in (a Ray Train worker, a Tune trial's own process), and rank 0's outputs."""
