"""What rank 0 of a training job writes: each epoch's metrics to MLflow (once per epoch, whatever the retries)
and TensorBoard, the run's system metrics, and the folders of its final outputs (config, reports, predictions)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from nerlab.models import names as N
from nerlab.models.scoring import Report
from nerlab.models.wojood import format_sentences
from nerlab.platform.specs.run import RunSpec
from nerlab.platform.tracking import runs as T
from nerlab.platform.training.system_metrics import SystemMetrics


def epoch_metrics(epoch: int, stats, report: Report, lr: float, tokens_per_s: float, names: list[str]) -> dict:
    m = {N.TRAIN_LOSS: stats.loss, N.TRAIN_PENALTY: stats.penalty, N.LR: lr, N.TOKENS_PER_S: tokens_per_s,
         N.EPOCH_SECONDS: stats.seconds, N.VAL_F1: report.micro.f1, N.VAL_P: report.micro.precision,
         N.VAL_R: report.micro.recall}
    m.update({N.TRAIN_TASK_LOSS.format(n): v for n, v in zip(names, stats.task_losses)})
    m.update({N.VAL_TYPE_F1.format(t): s.f1 for t, s in report.per_type.items()})
    return {"epoch": epoch, "metrics": m}


class RankZeroLog:
    """MLflow and TensorBoard writes of rank 0.

    MLflow writes are idempotent per epoch (a resumed job skips the epochs its run already holds).
    TensorBoard gets every epoch: each attempt writes a fresh events folder, and only the last attempt's
    folder becomes the run's artifact, so it must hold the epochs of earlier attempts too.
    """

    def __init__(self, job):
        from torch.utils.tensorboard import SummaryWriter

        self.client, self.run_id = T.MlflowClient(job.tracking_uri), job.run_id
        self.tb_dir = Path(tempfile.mkdtemp(prefix="nerlab-tb-"))
        self.tb = SummaryWriter(str(self.tb_dir))
        self.done = T.logged_steps(self.client, self.run_id)
        self.system = SystemMetrics(job.tracking_uri, job.run_id, job.spec.tracking.system_metrics_s).start()
        # the run spec from the start, not only with the final outputs: every run, a trial ASHA stopped too,
        # can be trained again from it (``nerlab train --from-run``)
        self.client.log_text(self.run_id, spec_yaml(job.spec), N.RESOLVED_SPEC)

    def epoch(self, entry: dict) -> None:
        for k, v in entry["metrics"].items():
            self.tb.add_scalar(k, v, entry["epoch"])
        self.tb.flush()
        if entry["epoch"] not in self.done:
            T.log_metrics(self.client, self.run_id, entry["metrics"], step=entry["epoch"])
            self.done.add(entry["epoch"])

    def artifacts(self, folder: Path, path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(folder), path)

    def close(self) -> None:
        """Stop sampling, close TensorBoard, remove its folder: the process may train the next trial."""
        self.system.stop()
        self.tb.close()
        shutil.rmtree(self.tb_dir, ignore_errors=True)


def spec_yaml(spec: RunSpec) -> str:
    """The resolved run spec as logged (``config/resolved_spec.yaml``), credentials in URIs removed."""
    import yaml

    return yaml.safe_dump(T.spec_params(spec), allow_unicode=True)


def write_outputs(out: Path, spec: RunSpec, schema, val_report, val_pred, test_report, test_pred) -> None:
    for folder in (N.CONFIG_DIR, N.REPORTS_DIR, N.PREDICTIONS_DIR):
        (out / folder).mkdir()
    (out / N.RESOLVED_SPEC).write_text(spec_yaml(spec))
    schema.save(out / N.LABEL_SCHEMA)
    for split, report, pred in (("val", val_report, val_pred), ("test", test_report, test_pred)):
        if report is None:
            continue
        (out / N.report_file(split)).write_text(json.dumps(report.to_dict(), indent=2))
        (out / N.report_file(split)).with_suffix(".txt").write_text(report.format() + "\n")
        (out / N.predictions_file(split)).write_text(format_sentences(pred), encoding="utf-8")
