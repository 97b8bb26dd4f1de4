"""Champion selection: the best configuration by its mean over seeds, how sure that is, and registration.

How sure: a paired bootstrap over validation sentences between the best two configurations. Every
bootstrap sample draws the sentences with replacement; each trial's micro-F1 is recomputed on the sample
from its per-sentence counts (true positives, predicted and gold entities), each configuration scores the
mean over its seeds, and the probability that the winner is really better is the share of samples where
it stays ahead (ties count half). The predictions are the trials' logged ``predictions/val.txt``; the
gold sentences are the validation file the trials read (their ``inputs.val`` param) where this machine
has it, else the copy logged on the study's parent run (``gold/val.txt``), or ``gold``.

Registration: the chosen trial's MLflow Model (``tagger``, a pyfunc around its model folder; the plain
``model`` artifact folder for runs logged before there were MLflow Models) becomes a new version of a
registered model in the MLflow Model Registry, and the alias (``champion``) moves to it; earlier versions stay as they are.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from nerlab.dashboards.leaderboard import (
    TEST, VAL, higher_is_better, in_config, leaderboard_frame, metric_key, trial_frame,
)
from nerlab.dashboards.runs import gold_file, logged_models, quiet_downloads, run_file
from nerlab.models import names as N
from nerlab.models.scoring import check_aligned, sentence_spans
from nerlab.models.wojood import Sentence, read_file

ALIAS = "champion"


class NoChoice(ValueError):
    """Nothing to choose from (no study runs with the metric), or a bad choice request."""


# ---- the paired bootstrap --------------------------------------------------------------------------------
def sentence_counts(gold: Sequence[Sentence], pred: Sequence[Sentence], task: str) -> np.ndarray:
    """(sentences, 3) array of true positives, predicted and gold entities per sentence."""
    check_aligned(gold, pred)
    out = np.zeros((len(gold), 3), dtype=np.int64)
    for i, (g, p) in enumerate(zip(gold, pred)):
        gs, ps = sentence_spans(g, task), sentence_spans(p, task)
        out[i] = (len(gs & ps), len(ps), len(gs))
    return out


def f1_of_counts(counts: np.ndarray) -> np.ndarray:
    """Micro-F1 from summed counts (..., 3): 2 tp / (predicted + gold), 0 where there is nothing."""
    tp, pred, gold = counts[..., 0], counts[..., 1], counts[..., 2]
    denom = pred + gold
    return np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 0.0)


@dataclass(frozen=True)
class Bootstrap:
    p_better: float  # share of samples where A's mean F1 beats B's (ties half)
    delta: float  # observed mean F1 of A minus that of B
    ci_low: float  # 95% interval of the difference over samples
    ci_high: float
    samples: int
    sentences: int


def paired_bootstrap(counts_a: Sequence[np.ndarray], counts_b: Sequence[np.ndarray], samples: int = 2000,
                     seed: int = 0, chunk: int = 250) -> Bootstrap:
    """Probability that configuration A (its seeds' count arrays) is better than B on the same sentences."""
    if not counts_a or not counts_b:
        raise ValueError("each configuration needs at least one trial")
    n = counts_a[0].shape[0]
    if any(c.shape != (n, 3) for c in (*counts_a, *counts_b)):
        raise ValueError("every trial must be scored on the same sentences")
    a, b = np.stack(counts_a).astype(np.float64), np.stack(counts_b).astype(np.float64)  # (seeds, n, 3)
    observed = f1_of_counts(a.sum(1)).mean() - f1_of_counts(b.sum(1)).mean()
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)  # (size, n) draw counts
        fa = f1_of_counts(np.einsum("kn,snc->ksc", w, a)).mean(1)  # (size,) mean over seeds
        fb = f1_of_counts(np.einsum("kn,snc->ksc", w, b)).mean(1)
        diffs.append(fa - fb)
    d = np.concatenate(diffs)
    p = (np.sum(d > 0) + 0.5 * np.sum(d == 0)) / len(d)
    lo, hi = np.quantile(d, [0.025, 0.975])
    return Bootstrap(float(p), float(observed), float(lo), float(hi), samples, n)


# ---- choosing --------------------------------------------------------------------------------------------
@dataclass
class Choice:
    study: str
    metric: str
    config: str
    run_id: str
    trial: str | None
    mean: float
    std: float
    seeds: int
    runner_up: str | None = None
    runner_up_mean: float | None = None
    p_better: float | None = None  # paired bootstrap: P(winner really better than the runner-up)
    delta: float | None = None
    ci95: tuple[float, float] | None = None
    sentences: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def _split_of(key: str) -> str | None:
    if key == VAL or key.startswith(N.VAL_F1):
        return "val"
    if key == TEST:
        return "test"
    return None


def _config_runs(trials, cfg) -> list[tuple[str, str | None]]:
    """(run id, artifact URI) of the configuration's scored trials."""
    mine = trials.loc[in_config(trials, cfg) & trials["val_f1"].notna()]
    uris = mine["artifact_uri"] if "artifact_uri" in mine else [None] * len(mine)
    return list(zip(mine["run_id"], uris))


def _counts_for(client, runs: list[tuple[str, str | None]], split: str, gold: list[Sentence], task: str,
                tmp: Path) -> list[np.ndarray]:
    out = []
    for rid, uri in runs:
        path = run_file(client, rid, N.predictions_file(split), str(tmp / rid), uri)
        out.append(sentence_counts(gold, read_file(path, task=task), task))
    return out


def choose(client, experiment_id: str, parent_run_id: str, study: str, metric: str = N.VAL_F1,
           gold: str | None = None, samples: int = 2000, seed: int = 0) -> Choice:
    """The champion configuration (best mean over seeds), its best trial, and the bootstrap against #2."""
    key = metric_key(metric)
    trials = trial_frame(client, experiment_id, parent_run_id, metrics=(key,) if key not in (VAL, TEST) else ())
    if trials.empty:
        raise NoChoice(f"study {study!r} has no trial runs")
    unfinished = int((~trials["completed"]).sum())
    trials = trials[trials["completed"]]  # only trials that saved a model (not stopped early, not running)
    if trials.empty:
        raise NoChoice(f"study {study!r}: no trial has finished with a saved model yet")
    score_col = {VAL: "val_f1", TEST: "test_f1"}.get(key, key)
    if score_col not in trials or trials[score_col].notna().sum() == 0:
        raise NoChoice(f"study {study!r}: no trial logged the metric {key!r}")
    board = leaderboard_frame(client, experiment_id, parent_run_id, metric=key, trials=trials)
    mean_col = "val_f1_mean" if score_col == "val_f1" else "score_mean"
    best = board.iloc[0]
    run_id = best["best_run_id"]
    trial = trials.loc[trials["run_id"] == run_id, "trial"].iloc[0]
    choice = Choice(study=study, metric=key, config=best["config"], run_id=run_id, trial=trial,
                    mean=float(best[mean_col]), std=float(best[mean_col.replace("_mean", "_std")]),
                    seeds=int(best["trials"]))
    if unfinished:
        choice.notes.append(f"{unfinished} trial(s) without a saved model (stopped early or unfinished) not considered")
    if len(board) < 2:
        choice.notes.append("only one configuration: nothing to compare with")
        return choice
    second = board.iloc[1]
    choice.runner_up, choice.runner_up_mean = second["config"], float(second[mean_col])
    split = _split_of(key)
    if split is None or not higher_is_better(key):
        choice.notes.append(f"no bootstrap for {key!r} (it needs a micro-F1 over sentences)")
        return choice
    task = trials["task"].dropna().iloc[0] if trials["task"].notna().any() else "nested"
    with tempfile.TemporaryDirectory() as d, quiet_downloads():
        gold_path = gold or gold_file(client, parent_run_id, run_id, split, Path(d))
        if not gold_path:
            choice.notes.append(f"no bootstrap: no gold {split} file on this machine or in the study's "
                                f"artifacts (give --gold)")
            return choice
        gold_sentences = read_file(gold_path, task=task)
        a = _counts_for(client, _config_runs(trials, best), split, gold_sentences, task, Path(d))
        b = _counts_for(client, _config_runs(trials, second), split, gold_sentences, task, Path(d))
    boot = paired_bootstrap(a, b, samples=samples, seed=seed)
    choice.p_better, choice.delta = boot.p_better, boot.delta
    choice.ci95, choice.sentences = (boot.ci_low, boot.ci_high), boot.sentences
    return choice


# ---- registering -----------------------------------------------------------------------------------------
def register(client, name: str, choice: Choice, alias: str = ALIAS):
    """A new version of registered model ``name`` from the chosen run's MLflow Model, with ``alias``.

    Returns (version, created). Selecting the same run again keeps the current version (no duplicate).
    """
    tags = {"study": choice.study, "config": choice.config, "trial": str(choice.trial), "metric": choice.metric,
            "metric_mean": f"{choice.mean:.6f}", "seeds": str(choice.seeds)}
    if choice.p_better is not None:
        tags["p_better_than_runner_up"] = f"{choice.p_better:.4f}"
        tags["runner_up"] = str(choice.runner_up)
    description = (f"{choice.config}: {choice.metric} {choice.mean:.4f} (mean over {choice.seeds} seeds), "
                   f"trial {choice.trial}")
    if choice.p_better is not None:
        description += f"; P(better than {choice.runner_up}) = {choice.p_better:.3f}"
    return register_run(client, name, choice.run_id, tags, description, alias)


def register_run(client, name: str, run_id: str, tags: dict[str, str], description: str, alias: str = ALIAS):
    """A new version of ``name`` from run ``run_id``'s MLflow Model (a trial's tagger or an ensemble), with
    ``alias``; (version, created), the current version when the alias already points at this run."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="nerlab NER taggers (MLflow pyfunc models around safetensors "
                                                         "model folders): nerlab predict --model models:/NAME@champion, "
                                                         "mlflow.pyfunc.load_model or mlflow models serve")
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        current = None
    if current is not None and current.run_id == run_id:
        return current, False
    run = client.get_run(run_id)
    models = logged_models(client, run_id)
    if models:  # the run's MLflow Model: the version loads with mlflow.pyfunc and serves with mlflow models serve
        source, model_id = f"models:/{models[-1]}", models[-1]
    else:  # a run logged before trials logged MLflow Models: its plain model folder
        source, model_id = f"{run.info.artifact_uri.rstrip('/')}/{N.MODEL_DIR}", None
    from nerlab.dashboards.runs import process_tracking_uri

    # MLflow's SQL registry looks a models:/MODEL_ID source up through the process-wide tracking URI
    with process_tracking_uri(client._tracking_client.tracking_uri):
        version = client.create_model_version(name, source=source, run_id=run_id, tags=tags,
                                              description=description, model_id=model_id)
    client.set_registered_model_alias(name, alias, version.version)
    return version, True
