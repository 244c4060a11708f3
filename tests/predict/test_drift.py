"""Drift verdicts on small explained inputs: the production cadence retrains a model whose data has aged."""

from __future__ import annotations

import numpy as np

from services.predict.drift import judge
from shared.settings import RunSettings

DAY = 86_400_000


def test_a_model_older_than_the_cadence_is_retrained_without_any_drift():
    cfg = RunSettings()
    ref = {"edges": [[0.0] * 9], "proportions": [[0.1] * 10], "rows": 100}
    X = np.zeros((0, 1))
    fresh = judge(["f"], ref, X, [], 0.25, cfg, age_ms=29 * DAY, max_age_ms=30 * DAY)
    assert not fresh["retrain"] and fresh["model_age_days"] == 29
    old = judge(["f"], ref, X, [], 0.25, cfg, age_ms=30 * DAY, max_age_ms=30 * DAY)
    assert old["retrain"] and old["reasons"] == ["cadence: training data ended 30.0 days ago >= 30"]
    # Without an age the cadence is not judged (and nothing else here drifts).
    assert not judge(["f"], ref, X, [], 0.25, cfg)["retrain"]
