"""Scores with their uncertainty: horizon windows and the block bootstrap, checked on small explained sets."""

from __future__ import annotations

import numpy as np
import pytest

from shared.metrics import block_bootstrap, brier, brier_gain_by_window, ece, horizon_windows

DAY = 86_400_000


def test_windows_are_non_overlapping_horizon_spans():
    ts = np.array([0, 1, 6, 7, 13, 14]) * DAY
    assert horizon_windows(ts, 7 * DAY).tolist() == [0, 0, 0, 1, 1, 2]
    # Window gains: each window's mean, whatever its row count.
    p, ref, y = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]), np.full(6, 0.5), np.ones(6)
    assert brier_gain_by_window(p, ref, y, horizon_windows(ts, 7 * DAY)).tolist() == [0.25, -0.75, -0.75]


def test_bootstrap_interval_holds_the_point_and_widens_with_fewer_windows():
    rng = np.random.default_rng(0)
    n = 4000
    p = rng.uniform(0.3, 0.7, n)
    y = (rng.random(n) < p).astype(float)
    ref = np.full(n, 0.5)
    skill = 1 - brier(p, y) / brier(ref, y)
    many = block_bootstrap(p, ref, y, np.arange(n) // 4, seed=1)  # 1000 windows
    few = block_bootstrap(p, ref, y, np.arange(n) // 400, seed=1)  # 10 windows
    assert many["windows"] == 1000 and few["windows"] == 10
    assert many["brier_skill"][0] < skill < many["brier_skill"][1]
    assert many["ece"][0] <= ece(p, y) + 0.01
    width = lambda b: b["brier_skill"][1] - b["brier_skill"][0]  # noqa: E731
    assert width(few) > width(many)


def test_bootstrap_matches_a_plain_resampling_loop():
    # The weighted matrix form against the obvious loop over resampled windows, on the same draws.
    rng = np.random.default_rng(5)
    n = 300
    p = rng.uniform(0, 1, n)
    y = (rng.random(n) < 0.5).astype(float)
    ref = np.full(n, 0.45)
    w = np.arange(n) // 10
    got = block_bootstrap(p, ref, y, w, draws=200, seed=9)
    k = np.random.default_rng(9).multinomial(30, np.full(30, 1 / 30), size=200)
    skills, eces = [], []
    for counts in k:
        rows = np.concatenate([np.flatnonzero(w == j).repeat(c) for j, c in enumerate(counts) if c] or [[]]).astype(int)
        skills.append(1 - brier(p[rows], y[rows]) / brier(ref[rows], y[rows]))
        eces.append(ece(p[rows], y[rows]))
    assert got["brier_skill"] == pytest.approx([np.quantile(skills, 0.05), np.quantile(skills, 0.95)])
    assert got["ece"] == pytest.approx([np.quantile(eces, 0.05), np.quantile(eces, 0.95)])
