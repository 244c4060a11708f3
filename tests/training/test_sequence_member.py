"""The sequence member pooled across coins: it must not learn the dates. Rows of one decision time share the
market's move, so a network trained to convergence memorises each training date's direction and is confidently
wrong on later dates; training stops at the checkpoint that scores best on the latest training dates, held out
past the label's reach."""

from __future__ import annotations

import numpy as np
import pytest

from services.training.calibration import brier
from services.training.members import Dataset, SequenceMember, _time_tail

pytest.importorskip("torch")


def market_days(times: int, coins: int, seed: int) -> Dataset:
    """Every coin of a day shares that day's features (the market's) and its direction, drawn at random: nothing
    about a later day can be learned."""
    rng = np.random.default_rng(seed)
    day = rng.normal(size=(times, 6)).astype(np.float32)
    up = rng.integers(0, 2, times).astype(float)
    t = np.repeat(np.arange(times, dtype=np.int64) * 86_400_000, coins)
    X = day[t // 86_400_000] + 0.05 * rng.normal(size=(times * coins, 6)).astype(np.float32)
    return Dataset(X, np.stack([X, X], axis=1), up[t // 86_400_000], t,
                   np.tile(np.array([f"C{i}" for i in range(coins)]), times), 86_400_000)


def test_the_held_out_dates_start_after_the_training_labels_end():
    ts = np.repeat(np.arange(20, dtype=np.int64) * 10, 3)
    train, val = _time_tail(ts, 0.2, label_ms=25)
    assert ts[val].min() == 160 and ts[train].max() + 25 < 160
    assert _time_tail(ts[:27], 0.2)[1].size == 0  # nine dates: nothing held out


def test_a_pooled_network_does_not_memorise_the_market_direction_of_each_date():
    ds = market_days(240, 40, seed=3)
    fit, later = ds.take(np.flatnonzero(ds.ts < 160 * 86_400_000)), ds.take(np.flatnonzero(ds.ts >= 160 * 86_400_000))
    member = SequenceMember(hidden=32, dropout=0.0, lr=1e-2, weight_decay=0.0, seed=0, threads=1).fit(fit, epochs=8)
    z = member.logit(later)
    p = 1 / (1 + np.exp(-z))
    constant = brier(np.full(len(later), fit.y.mean()), later.y)
    # Trained to the end (8 epochs at lr 1e-2), the same network scores 0.459 against the constant's 0.260 on the
    # later dates, its logits spread with a standard deviation of 4.4; the checkpoint chosen on held-out dates
    # stays near the constant (0.269, 0.63).
    assert brier(p, later.y) < constant + 0.02
    assert np.std(z) < 1.0
