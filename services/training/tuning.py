"""Optuna per member: TPE with pruning per fold, a trial and time budget, studies kept in the lake.

The study of a (horizon, member) lives in one journal file in the lake and is reopened on every
retrain, so TPE starts from every earlier trial of that horizon; the previous best parameters are
also re-run first on the new data (warm start), and the winner is chosen among this run's trials.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.training.calibration import brier
from services.training.cv import Fold
from services.training.members import Dataset, GbtMember, LogisticMember, SequenceMember, make_member
from shared.metrics import sigmoid
from shared.errors import LakeKeyNotFound
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


def oof_logits(member_name: str, params: dict, ds: Dataset, folds: list[Fold], epochs: int, seed: int,
               report: Callable[[int, float], None] | None = None) -> tuple[np.ndarray, float]:
    """Fit on each fold's training rows, score its test rows; returns logits in fold order and mean Brier."""
    parts, scores = [], []
    for k, fold in enumerate(folds):
        m = make_member(member_name, params, seed).fit(ds.take(fold.train), epochs=epochs)
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


def tune_member(member: str, ds: Dataset, folds: list[Fold], budget: Budget, *, seed: int, lake: Lake | None,
                horizon: str, first_trial: dict, on_trial: Callable[[], None] | None = None) -> TuneResult:
    """Optuna on the purged folds; a new study starts from `first_trial`, a stored one from its best params."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    key = f"models/horizon={horizon}/optuna/{member}.journal"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.log"
        if lake is not None:
            try:
                path.write_bytes(lake.get(key))
            except LakeKeyNotFound:
                pass
        storage = JournalStorage(JournalFileBackend(str(path)))
        study = optuna.create_study(
            study_name=f"{horizon}-{member}", storage=storage, load_if_exists=True, direction="minimize",
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        )
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        first_number = len(study.trials)
        # Warm start: last retrain's best goes first; on the first run, the configured first trial.
        study.enqueue_trial(study.best_params if done else first_trial, skip_if_exists=False)
        oofs: dict[int, np.ndarray] = {}

        def objective(trial) -> float:
            params = _space(member, trial, budget)

            def report(k: int, value: float) -> None:
                trial.report(value, k)
                if trial.should_prune():
                    raise optuna.TrialPruned()

            z, score = oof_logits(member, params, ds, folds, budget.epochs, seed, report)
            oofs[trial.number] = z
            return score

        callbacks = [lambda *_: on_trial()] if on_trial else []
        study.optimize(objective, n_trials=budget.trials.get(member, 1), timeout=budget.timeout_s / 3,
                       callbacks=callbacks, catch=())
        trials = study.trials
        mine = [t for t in trials[first_number:] if t.state == optuna.trial.TrialState.COMPLETE]
        if lake is not None:
            lake.put(key, path.read_bytes())
    if not mine:
        raise RuntimeError(f"{horizon}/{member}: no trial completed within the budget")
    best = min(mine, key=lambda t: t.value)
    return TuneResult(dict(best.params), oofs[best.number], len(trials) - first_number, len(trials), float(best.value))
