"""Optuna per member: TPE with pruning per fold, a trial budget, one study per data window, all kept in the lake.

The studies of a (horizon, member) live in one journal file in the lake. Each retrain opens a study of its own
data window, so the median pruner compares a trial only with trials scored on the same folds: trials of an
earlier window (another market, other folds) can never prune the new ones. What earlier windows learned comes
in as warm starts: their best parameters are the new study's first trials, re-scored on the new window, and TPE
goes on from there. If the search still completes no trial, the member falls back to the previous best
parameters (or the configured first trial), fitted and scored like any trial, and the model card says so.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.training.calibration import brier
from services.training.cv import Fold
from services.training.members import (
    Dataset,
    GbtMember,
    LogisticMember,
    SequenceMember,
    make_member,
)
from shared.errors import LakeKeyNotFound
from shared.metrics import sigmoid
from shared.registry import tuning_journal_key
from shared.settings import Budget
from shared.storage import Lake

log = logging.getLogger(__name__)


@dataclass
class TuneResult:
    params: dict
    oof: np.ndarray  # logits on the concatenated fold test rows
    trials_run: int
    trials_total: int
    best_brier: float
    trials_requested: int = 0
    warm_starts: int = 0  # best parameters of earlier windows re-scored first
    stopped_by_time: bool = False  # the wall-clock safety net ended the search before its trial count
    fallback: str | None = None  # why the member was fitted with earlier parameters instead of a searched trial

    def summary(self) -> dict:
        out = {"trials_this_run": self.trials_run, "trials_requested": self.trials_requested,
               "trials_in_journal": self.trials_total, "warm_starts": self.warm_starts}
        if self.stopped_by_time:
            out["stopped_by_time"] = f"search stopped by time after {self.trials_run} of {self.trials_requested} trials"
        if self.fallback:
            out["fallback"] = self.fallback
        return out


def oof_logits(member_name: str, params: dict, ds: Dataset, folds: list[Fold], epochs: int, seed: int,
               report: Callable[[int, float], None] | None = None, threads: int = 2) -> tuple[np.ndarray, float]:
    """Fit on each fold's training rows, score its test rows; returns logits in fold order and mean Brier."""
    parts, scores = [], []
    for k, fold in enumerate(folds):
        m = make_member(member_name, params, seed, threads).fit(ds.take(fold.train), epochs=epochs)
        z = m.logit(ds.take(fold.test))
        parts.append(z)
        scores.append(brier(sigmoid(z), ds.y[fold.test]))
        if report is not None:
            report(k, float(np.mean(scores)))
    return np.concatenate(parts), float(np.mean(scores))


def _space(member: str, trial, budget: Budget) -> dict:
    if member == "lr":
        return LogisticMember.space(trial)
    if member == "gbt":
        return GbtMember.space(trial, budget.gbt_max_estimators)
    return SequenceMember.space(trial)


def _within_budget(member: str, params: dict, budget: Budget) -> dict:
    """A warm start inside this budget's search space (a smaller budget caps the trees)."""
    if member == "gbt" and "n_estimators" in params:
        cap = max(GbtMember.ESTIMATOR_STEP, budget.gbt_max_estimators // GbtMember.ESTIMATOR_STEP * GbtMember.ESTIMATOR_STEP)
        return {**params, "n_estimators": min(int(params["n_estimators"]), cap)}
    return params


def window_id(ds: Dataset, folds: list[Fold]) -> str:
    """The data window a search scores on: its rows' time span and size, and the fold layout."""
    return f"{int(ds.ts.min())}-{int(ds.ts.max())}-{len(ds)}-{len(folds)}f"


def earlier_best(study_summaries, current: str, keep: int) -> list[dict]:
    """Best parameters of the most recent earlier windows' studies (newest first, duplicates dropped)."""
    found: list[dict] = []
    for s in sorted(study_summaries, key=lambda s: s.datetime_start or 0, reverse=True):
        if s.study_name == current or s.best_trial is None:
            continue
        params = dict(s.best_trial.params)
        if params not in found:
            found.append(params)
        if len(found) >= keep:
            break
    return found


def tune_member(member: str, ds: Dataset, folds: list[Fold], budget: Budget, *, seed: int, lake: Lake | None,
                horizon: str, first_trial: dict, warm_starts: int = 2, threads: int = 2,
                on_trial: Callable[[int, int, float, float | None], None] | None = None,
                target: str = "direction") -> TuneResult:
    """Optuna on the purged folds, in this window's own study; earlier windows' best parameters go first. Each
    target of a horizon (direction, beats) keeps its own journal: what one learned is no warm start for the other."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal = member if target == "direction" else f"{target}-{member}"
    key = tuning_journal_key(horizon, journal)
    requested = budget.trials.get(member, 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.log"
        if lake is not None:
            try:
                path.write_bytes(lake.get(key))
            except LakeKeyNotFound:
                pass
        storage = JournalStorage(JournalFileBackend(str(path)))
        name = f"{horizon}-{journal}-{window_id(ds, folds)}"
        warm = earlier_best(optuna.get_all_study_summaries(storage), name, warm_starts)
        study = optuna.create_study(
            study_name=name, storage=storage, load_if_exists=True, direction="minimize",
            sampler=optuna.samplers.TPESampler(seed=seed),
            # Warm starts run first and are never pruned: the pruner starts after them.
            pruner=optuna.pruners.MedianPruner(n_startup_trials=max(2, len(warm)), n_warmup_steps=0),
        )
        first_number = len(study.trials)
        own = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        # The same window searched again (a retrain on unchanged data) goes on from its own best; a new window
        # starts from the earlier windows' best parameters, or the configured first trial.
        for params in ([study.best_params] if own else warm or [first_trial]):
            study.enqueue_trial(_within_budget(member, params, budget), skip_if_exists=False)
        oofs: dict[int, np.ndarray] = {}

        def objective(trial) -> float:
            params = _space(member, trial, budget)

            def report(k: int, value: float) -> None:
                trial.report(value, k)
                if trial.should_prune():
                    raise optuna.TrialPruned()

            z, score = oof_logits(member, params, ds, folds, budget.epochs, seed, report, threads)
            oofs[trial.number] = z
            return score

        started = time.perf_counter()

        def progress(study_, _trial) -> None:
            done, elapsed = len(study_.trials) - first_number, time.perf_counter() - started
            left = min(elapsed / done * (requested - done), max(0.0, budget.timeout_s - elapsed)) if done else None
            on_trial(done, requested, elapsed, left)

        callbacks = [progress] if on_trial else []
        study.optimize(objective, n_trials=requested, timeout=budget.timeout_s, callbacks=callbacks, catch=())
        trials = study.trials
        ran = len(trials) - first_number
        mine = [t for t in trials[first_number:] if t.state == optuna.trial.TrialState.COMPLETE]
        if lake is not None:
            lake.put(key, path.read_bytes())
    result = TuneResult({}, np.zeros(0), ran, len(trials), float("nan"), requested, len(warm),
                        stopped_by_time=ran < requested)
    if mine:
        best = min(mine, key=lambda t: t.value)
        result.params, result.oof, result.best_brier = dict(best.params), oofs[best.number], float(best.value)
        return result
    # Nothing completed (every trial pruned or the time net tripped first): the previous best, scored unpruned.
    params = warm[0] if warm else dict(first_trial)
    why = "earlier window's best parameters" if warm else "the configured first trial"
    log.warning("%s/%s: no trial completed in %d run; fitted with %s", horizon, member, ran, why)
    result.oof, result.best_brier = oof_logits(member, params, ds, folds, budget.epochs, seed, threads=threads)
    result.params = params
    result.fallback = f"no search trial completed ({ran} run, {requested} requested): fitted with {why}"
    return result
