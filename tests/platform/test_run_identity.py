"""What a trial's MLflow run says about itself: a readable name, and the data files as MLflow datasets."""

from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

from nerlab.platform.tracking import runs as T
from nerlab.platform.specs.search import trial_run_name


def test_trial_run_names_say_what_the_trial_is():
    assert trial_run_name({"plm": "tiny:2x32", "loss": "ce", "variance_penalty": 5.0, "seed": 1}, "ce") == \
        "tiny:2x32·ce·λ5·s1"
    name = trial_run_name({"plm": "bert", "variance_penalty": 0.123456, "seed": 3, "lr": 3e-5, "batch_size": 16,
                           "loss_w_ce": 0.5, "loss_w_dice": 0.5}, "0.50ce+0.50dice")
    assert name == "bert·0.50ce+0.50dice·λ0.123·s3·batch_size16·lr3e-05"


def test_data_files_are_logged_once_as_datasets(tmp_path):
    files = {}
    for split in ("train", "val", "test"):
        files[split] = tmp_path / "data" / f"{split}.txt"
        files[split].parent.mkdir(exist_ok=True)
        files[split].write_text(f"a O\n{split} O\n", encoding="utf-8")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("x", artifact_location=(tmp_path / "a").as_uri()))
    T.log_datasets(client, run.info.run_id, {k: str(v) for k, v in files.items()})
    T.log_datasets(client, run.info.run_id, {"train": str(files["train"])})  # a resumed job: nothing more
    inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
    assert len(inputs) == 3
    got = {i.tags[0].value: i.dataset for i in inputs}
    assert set(got) == {"training", "validation", "test"}
    assert got["training"].name == "data/train.txt"
    assert json.loads(got["test"].source)["uri"] == str(files["test"].resolve())
    assert got["validation"].digest == T.file_digest(files["val"]) != got["test"].digest
