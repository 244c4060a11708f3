"""The search: a retrain's study is its own data window's, warm-started from earlier windows, never starved.

Seeded random rows exercise the mechanics only (labels are independent of the features); nothing here is a
claim about forecasts.
"""

from __future__ import annotations

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from services.training.cv import walk_forward  # noqa: E402
from services.training.members import Dataset  # noqa: E402
from services.training.tuning import tune_member  # noqa: E402
from shared.settings import Budget  # noqa: E402
from shared.storage import LocalLake  # noqa: E402

DAY = 86_400_000
BUDGET = Budget(folds=3, trials={"lr": 4}, timeout_s=600, epochs=1, gbt_max_estimators=50)


def dataset(days: int, start_day: int = 0, seed: int = 3) -> Dataset:
    rng = np.random.default_rng(seed)
    coins = np.array(["A", "B", "C"], dtype=object)
    ts = np.repeat((start_day + np.arange(days)) * DAY, coins.size).astype(np.int64)
    n = ts.size
    X = rng.normal(size=(n, 4)).astype(np.float32)
    return Dataset(X, X[:, None, :].repeat(2, axis=1), rng.integers(0, 2, n).astype(float), ts,
                   np.tile(coins, days))


def store_old_window(lake: LocalLake, value: float, params: dict) -> None:
    """An earlier window's study whose trials scored `value` at every fold: better than anything real."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = lake.root / "tmp.journal"
    storage = JournalStorage(JournalFileBackend(str(path)))
    # The name earlier versions gave every study of a horizon and member, whatever its window.
    study = optuna.create_study(study_name="24h-lr", storage=storage, direction="minimize")
    for c in (params["C"], params["C"] * 2, params["C"] * 4):
        study.add_trial(optuna.trial.create_trial(
            params={"C": c}, distributions={"C": optuna.distributions.FloatDistribution(1e-3, 10.0, log=True)},
            value=value if c == params["C"] else value + 0.01, intermediate_values={0: value, 1: value, 2: value}))
    lake.put("models/horizon=24h/optuna/lr.journal", path.read_bytes())
    path.unlink()


def test_a_reopened_study_with_better_old_scores_neither_prunes_nor_starves_the_retrain(tmp_path):
    lake = LocalLake(tmp_path)
    old_best = {"C": 0.37}
    store_old_window(lake, 0.01, old_best)  # a Brier of 0.01 is unreachable on random labels
    ds = dataset(400)
    folds = walk_forward(ds.ts, DAY, BUDGET.folds)
    seen = []
    r = tune_member("lr", ds, folds, BUDGET, seed=1, lake=lake, horizon="24h", first_trial={"C": 0.1},
                    on_trial=lambda *a: seen.append(a))
    # Every requested trial ran and completed in the new window's own study: none was compared with 0.01.
    assert r.fallback is None and r.trials_run == 4 and r.warm_starts == 1
    # Progress after every trial: trials done of those asked, seconds spent, an estimate of what is left.
    assert [(d, n) for d, n, _, _ in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert seen[-1][3] == 0 and all(left is not None and left >= 0 for *_, left in seen)
    assert 0.2 < r.best_brier < 0.3 and r.oof.size == sum(f.test.size for f in folds)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = tmp_path / "check.journal"
    path.write_bytes(lake.get("models/horizon=24h/optuna/lr.journal"))
    summaries = {s.study_name: s for s in optuna.get_all_study_summaries(JournalStorage(JournalFileBackend(str(path))))}
    (new_name,) = [n for n in summaries if n != "24h-lr"]
    new = optuna.load_study(study_name=new_name, storage=JournalStorage(JournalFileBackend(str(path))))
    # The old window's best parameters went first, re-scored on the new window.
    assert new.trials[0].params == old_best and new.trials[0].value > 0.2
    # Whatever the new study pruned, it pruned against its own window's trials: at least the startup ones complete.
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in new.trials) >= 2


def test_the_old_single_study_would_have_pruned_every_new_trial(tmp_path):
    """The failure this design prevents: new trials reported into the old window's study are all pruned."""
    lake = LocalLake(tmp_path)
    store_old_window(lake, 0.01, {"C": 0.37})
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = tmp_path / "old.journal"
    path.write_bytes(lake.get("models/horizon=24h/optuna/lr.journal"))
    study = optuna.load_study(study_name="24h-lr", storage=JournalStorage(JournalFileBackend(str(path))),
                              pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))

    def objective(trial):
        trial.suggest_float("C", 1e-3, 10.0, log=True)
        for k in range(3):
            trial.report(0.25, k)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return 0.25

    study.optimize(objective, n_trials=4)
    assert [t.state for t in study.trials[3:]] == [optuna.trial.TrialState.PRUNED] * 4


def test_a_search_that_completes_nothing_falls_back_to_the_earlier_best(tmp_path, monkeypatch):
    lake = LocalLake(tmp_path)
    store_old_window(lake, 0.2, {"C": 0.37})
    ds = dataset(300, start_day=50)
    folds = walk_forward(ds.ts, DAY, BUDGET.folds)
    # Every trial pruned at its first fold, whatever it scores.
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: True)
    r = tune_member("lr", ds, folds, BUDGET, seed=1, lake=lake, horizon="24h", first_trial={"C": 0.1})
    assert r.params == {"C": 0.37} and "earlier window's best parameters" in r.fallback
    assert r.trials_run == 4 and np.isfinite(r.best_brier) and r.oof.size == sum(f.test.size for f in folds)
    assert r.summary()["fallback"] == r.fallback
