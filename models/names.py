"""Every name that crosses a boundary, defined once: MLflow metric, tag and artifact names, and the keys of
the reports a training job sends to Ray Tune.

It lives in ``models`` because that is the lowest layer both ``platform`` (which writes these names) and
``dashboards`` (which reads them back from MLflow) may import; it imports nothing.
"""

# ---- MLflow metrics of a training run (per epoch unless said otherwise) --------------------------------
TRAIN_LOSS = "train/loss"
TRAIN_PENALTY = "train/variance_penalty"
TRAIN_TASK_LOSS = "train/loss_{}"  # .format(entity type, or FLAT)
LR = "train/lr"
TOKENS_PER_S = "train/tokens_per_second"
EPOCH_SECONDS = "train/epoch_seconds"
VAL_F1 = "val/micro_f1"
VAL_P = "val/micro_precision"
VAL_R = "val/micro_recall"
VAL_LOSS = "val/loss"  # only when the best epoch is selected by validation loss
VAL_TYPE_F1 = "val/f1_{}"
# Logged once, at the end (step = last epoch): the selected (best) epoch and its scores.
BEST_EPOCH = "best_epoch"
BEST_VAL_F1 = "best/" + VAL_F1  # also the study run's best configuration (mean over seeds)
TEST_F1 = "test/micro_f1"
TEST_TYPE_F1 = "test/f1_{}"
# An ensemble's run also logs the best single model's scores and the paired bootstrap between the two.
SINGLE_F1 = "single/{}/micro_f1"  # .format(split): the best single model (the champion's trial)
P_BETTER = "bootstrap/{}/p_better"  # .format(split): P(ensemble better than the best single model)
F1_DELTA = "bootstrap/{}/delta"  # ensemble minus best single

# ---- MLflow tags -------------------------------------------------------------------------------------------
JOB_TAG = "nerlab.job"  # a training job's identity: a rerun or retry finds its run by it
STUDY_RUN_TAG = "nerlab.study_run"  # on a study's parent run: the study's name
STUDY_TAG = "nerlab.study"  # on a trial's run: its study's name
TRIAL_TAG = "nerlab.trial"  # on a trial's run: its identity (a grid trial: its point's id; optuna: its Tune trial id)
TUNE_TRIAL_TAG = "nerlab.tune_trial"  # on a trial's run: the Tune trial id of the command that created it
ROUND_TAG = "nerlab.round"  # on a trial's run: the study's round (1, then one per growth) that added it
ROUNDS_TAG = "nerlab.rounds"  # on a study's parent run: how many rounds it has
ROUND_NOTE_TAG = "nerlab.round.{}"  # .format(round), on the parent run: what that round added
RERUN_OF_TAG = "nerlab.rerun_of"  # on a run trained by `nerlab train --from-run`: the run it trained again
KIND_TAG = "nerlab.kind"  # "study", "ensemble", ...
ENSEMBLE_TAG = "nerlab.ensemble_of"  # on an ensemble's run (kind "ensemble"): its study's name
STOPPED_EARLY_TAG = "nerlab.stopped_early"  # "true" on a trial ASHA stopped
DEVICE_TAG = "nerlab.device"  # cpu or cuda
PRECISION_TAG = "nerlab.precision"
WORKER_NODES_TAG = "nerlab.worker_nodes"
PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own: nests a trial's run under its study's run
# A training run's point, plain names people filter on in the UI (``tags.plm = '...'``)
PLM_TAG = "plm"
LOSS_TAG = "loss"
PENALTY_TAG = "penalty"  # λ of the variance penalty
SEED_TAG = "seed"
TASK_TAG = "task"
GIT_COMMIT_TAG = "git_commit"
# One driver per study or job: its holder (JSON), heartbeat (seconds since the epoch) and spec digest
DRIVER_TAG = "nerlab.driver"
HEARTBEAT_TAG = "nerlab.driver_heartbeat"
DIGEST_TAG = "nerlab.spec_digest"

# ---- MLflow artifacts ----------------------------------------------------------------------------------------
CONFIG_DIR = "config"  # resolved_spec.yaml, label_schema.json
RESOLVED_SPEC = f"{CONFIG_DIR}/resolved_spec.yaml"
LABEL_SCHEMA = f"{CONFIG_DIR}/label_schema.json"
REPORTS_DIR = "reports"  # {val,test}_report.{json,txt}
PREDICTIONS_DIR = "predictions"  # {val,test}.txt in Wojood format
MODEL_DIR = "model"  # the self-contained model folder
PYFUNC_MODEL = "tagger"  # the run's MLflow Model (pyfunc around the model folder): models:/<model_id>
PYFUNC_ARTIFACT = "tagger"  # its artifact key for the model folder (at artifacts/model/, see MLmodel)
TENSORBOARD_DIR = "tensorboard"
GOLD_DIR = "gold"  # on a study's run: its validation file, for the bootstrap of `nerlab select`
REPORT_DIR = "report"  # on a study's run: report.html and its figures
LEADERBOARD_DIR = "leaderboard"


def predictions_file(split: str) -> str:
    return f"{PREDICTIONS_DIR}/{split}.txt"


def report_file(split: str) -> str:
    return f"{REPORTS_DIR}/{split}_report.json"


def gold_file(split: str) -> str:
    return f"{GOLD_DIR}/{split}.txt"


# ---- files in a study's or a job's output folder -----------------------------------------------------------
RUNS_DIR = "runs"  # where output folders go by default: runs/<name> under the current folder
STUDY_FILE = "study.yaml"
STORE_FILE = "mlflow.db"

# ---- what a training job reports to Ray Train / Tune each epoch, and once at the end -------------------------
TUNE_EPOCH = "epoch"
TUNE_VAL_F1 = "val_micro_f1"  # the metric ASHA and Optuna optimise
TUNE_TEST_F1 = "test_micro_f1"
TUNE_TRAIN_LOSS = "train_loss"
TUNE_EPOCH_SECONDS = "epoch_seconds"  # the epoch's wall time on rank 0: training, validation, checkpoint
TUNE_BEST_EPOCH = "best_epoch"
TUNE_FINAL = "final"  # True only in the last report: the job finished (it was not stopped)
