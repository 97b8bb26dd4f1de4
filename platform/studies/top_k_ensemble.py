"""``nerlab select --ensemble K``: one model from a study's top K configurations, scored, logged, registered.

Members: the K best configurations by the selection metric's mean over seeds (trials that saved a model),
each represented by its best trial, as ``select`` picks the champion. Their MLflow Models (``tagger``) are
downloaded and copied into one ensemble folder (``models/ensemble.py``: each member keeps its tokenizer and
weights; the combination is the mean of per-type head probabilities per word). The ensemble tags the
study's validation and test files; its micro-F1 is set beside the best single model's (the champion's
trial, scored from its logged predictions on the same gold files) with the paired bootstrap between the two
(``dashboards/champion.py``). A new run in the study's experiment (tag ``nerlab.kind = ensemble``, not a
child of the study run, so leaderboards do not count it) holds the scores, the ensemble's predictions and
its MLflow Model, which becomes a version of the registered model with the alias.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nerlab.models import names as N
from nerlab.platform.errors import UsageError

SPLITS = ("val", "test")


@dataclass
class EnsembleResult:
    study: str
    k: int
    rule: str
    members: list[dict]  # config, run_id, trial, val_f1, test_f1
    single: dict  # the best single model: config, run_id, trial
    f1: dict[str, float] = field(default_factory=dict)  # split -> ensemble micro-F1
    single_f1: dict[str, float] = field(default_factory=dict)  # split -> best single micro-F1
    bootstrap: dict[str, dict] = field(default_factory=dict)  # split -> p_better, delta, ci95, sentences
    run_id: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _members(ref, k: int, metric: str):
    """The top ``k`` configurations' best trials (leaderboard rows) and the trial frame."""
    from nerlab.dashboards.leaderboard import leaderboard_frame, metric_key, trial_frame

    key = metric_key(metric)
    trials = trial_frame(ref.client, ref.experiment_id, ref.parent_run_id,
                         metrics=(key,) if key not in (N.BEST_VAL_F1, N.TEST_F1) else ())
    trials = trials[trials["completed"]] if not trials.empty else trials
    board = leaderboard_frame(ref.client, ref.experiment_id, ref.parent_run_id, metric=key, trials=trials) \
        if not trials.empty else trials
    if len(board) < k:
        raise UsageError(f"--ensemble {k}: study {ref.name!r} has only {len(board)} configuration(s) with a "
                         f"saved model and the metric {key!r}")
    return board.iloc[:k], trials


def _gold(ref, run_id: str, split: str, tmp: Path, gold: dict[str, str | None]) -> str | None:
    from nerlab.dashboards.runs import gold_file

    if gold.get(split):
        return gold[split]
    return gold_file(ref.client, ref.parent_run_id, run_id, split, tmp)


def build(ref, k: int, metric: str = N.VAL_F1, gold: dict[str, str | None] | None = None, samples: int = 2000,
          seed: int = 0, log: bool = True, batch_size: int = 32) -> tuple[EnsembleResult, str | None]:
    """Build, score and (``log``) log the ensemble; returns the result and its run id (None without ``log``)."""
    import pandas as pd

    from nerlab.dashboards.champion import paired_bootstrap, sentence_counts
    from nerlab.dashboards.runs import quiet_downloads
    from nerlab.dashboards.runs import run_file
    from nerlab.models.ensemble import RULE, Ensemble, save_ensemble
    from nerlab.models.wojood import format_sentences, read_file
    from nerlab.platform.tracking.stores import fetch_model

    top, trials = _members(ref, k, metric)
    gold = gold or {}
    members = []
    for _, row in top.iterrows():
        t = trials.loc[trials["run_id"] == row["best_run_id"]].iloc[0]
        test_f1 = None if pd.isna(t["test_f1"]) else float(t["test_f1"])
        members.append({"config": row["config"], "run_id": t["run_id"], "trial": t["trial"],
                        "val_f1": float(t["val_f1"]), "test_f1": test_f1})
    result = EnsembleResult(ref.name, k, RULE, members, single=dict(members[0]))
    with tempfile.TemporaryDirectory() as d, quiet_downloads():
        tmp = Path(d)
        # runs:/ID/model: the trial's MLflow Model (or, for a run older than those, its model/ artifact)
        folders = [fetch_model(f"runs:/{m['run_id']}/{N.MODEL_DIR}", ref.uri, tmp / "fetch" / str(i))
                   for i, m in enumerate(members)]
        try:
            folder = save_ensemble(tmp / "ensemble", folders, members, {"study": ref.name, "metric": metric})
        except ValueError as e:
            raise UsageError(str(e)) from None
        ensemble = Ensemble.load(folder)
        task = ensemble.schema.task
        predictions = {}
        for split in SPLITS:
            path = _gold(ref, members[0]["run_id"], split, tmp / "gold" / split, gold)
            if not path:
                result.notes.append(f"no gold {split} file on this machine or in the study's artifacts: "
                                    f"no {split} score (give --gold-{split})")
                continue
            gold_s = read_file(path, task=task)
            pred = ensemble.predict(gold_s, task=task, batch_size=batch_size)
            predictions[split] = pred
            ens = sentence_counts(gold_s, pred, task)
            single_pred = run_file(ref.client, members[0]["run_id"], N.predictions_file(split), str(tmp / split))
            one = sentence_counts(gold_s, read_file(single_pred, task=task), task)
            boot = paired_bootstrap([ens], [one], samples=samples, seed=seed)
            result.f1[split] = _f1(ens)
            result.single_f1[split] = _f1(one)
            result.bootstrap[split] = {"p_better": boot.p_better, "delta": boot.delta,
                                       "ci95": [boot.ci_low, boot.ci_high], "sentences": boot.sentences}
        if log:
            result.run_id = _log(ref, result, folder, predictions, format_sentences)
    return result, result.run_id


def _f1(counts) -> float:
    from nerlab.dashboards.champion import f1_of_counts

    return float(f1_of_counts(counts.sum(0)))


def _log(ref, result: EnsembleResult, folder: Path, predictions: dict, format_sentences) -> str:
    """A run of kind ``ensemble`` in the study's experiment: params, scores, predictions, the MLflow Model."""
    from nerlab.platform.tracking import runs as T
    from nerlab.platform.tracking.logged_model import log_tagger

    c = ref.client
    run = c.create_run(ref.experiment_id, run_name=f"ensemble·top{result.k}",
                       tags={N.KIND_TAG: "ensemble", N.ENSEMBLE_TAG: ref.name, N.GIT_COMMIT_TAG: T.git_commit()})
    rid = run.info.run_id
    try:
        params = {"ensemble.k": result.k, "ensemble.rule": result.rule}
        for i, m in enumerate(result.members):
            params.update({f"ensemble.member{i}.config": m["config"], f"ensemble.member{i}.run_id": m["run_id"],
                           f"ensemble.member{i}.trial": m["trial"]})
        T.log_params(c, rid, params, {})
        metrics = {}
        for split, f1 in result.f1.items():
            metrics[N.BEST_VAL_F1 if split == "val" else N.TEST_F1] = f1
            metrics[N.SINGLE_F1.format(split)] = result.single_f1[split]
            metrics[N.P_BETTER.format(split)] = result.bootstrap[split]["p_better"]
            metrics[N.F1_DELTA.format(split)] = result.bootstrap[split]["delta"]
        T.log_metrics(c, rid, metrics, step=0)
        for split, pred in predictions.items():
            c.log_text(rid, format_sentences(pred), N.predictions_file(split))
        example = next(iter(predictions.values()))[0].tokens[:16] if predictions else ["."]
        with _quiet_logging():  # MLflow's type-hint warning and "validating input example" line
            log_tagger(folder, rid, ref.uri, example)
    except BaseException:
        c.set_terminated(rid, status="FAILED")
        raise
    c.set_terminated(rid, status="FINISHED")
    return rid


@contextlib.contextmanager
def _quiet_logging():
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logger.setLevel(level)


def register(ref, result: EnsembleResult, name: str, alias: str):
    from nerlab.dashboards.champion import register_run

    configs = " + ".join(m["config"] for m in result.members)
    tags = {"study": ref.name, "ensemble": str(result.k), "config": configs, "rule": result.rule,
            **{f"{s}_f1": f"{v:.6f}" for s, v in result.f1.items()},
            **{f"p_better_than_single_{s}": f"{b['p_better']:.4f}" for s, b in result.bootstrap.items()}}
    scores = ", ".join(f"{s} F1 {v:.4f} (best single {result.single_f1[s]:.4f})" for s, v in result.f1.items())
    description = f"ensemble of the top {result.k} configurations of {ref.name}: {configs}; {scores}"
    return register_run(ref.client, name, result.run_id, tags, description, alias)
