"""The market-neutral basket and the cross-sectional candidates, by hand."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from services.predict.signals import cross_section_consensus
from services.risk.basket import build


def _build(score, adv, vol=None, **kw):
    n = len(score)
    args = dict(quantile=0.2, gross=1.0, equity=100_000.0, max_position=0.5, max_impact_bps=50.0,
                half_spread_bps=5.0, impact_k=1.0)
    args.update(kw)
    return build([f"C{i}" for i in range(n)], np.asarray(score, float), np.asarray(adv, float),
                 np.full(n, 0.02) if vol is None else np.asarray(vol, float), **args)


def test_long_the_top_short_the_bottom_equal_weight_and_dollar_neutral():
    # Ten coins, 20% a leg: two names each; each leg holds half the equity: 25% a name.
    b = _build(np.arange(10.0), np.full(10, 1e9))
    assert [x.coin for x in b.long] == ["C9", "C8"] and [x.coin for x in b.short] == ["C0", "C1"]
    assert [x.weight for x in b.long] == [0.25, 0.25] and [x.weight for x in b.short] == [-0.25, -0.25]
    assert sum(x.weight for x in b.long + b.short) == 0
    # Impact by hand: 5 + 0.02 * sqrt(25,000 / 1e9) * 1e4 bps.
    assert b.long[0].impact_bps == pytest.approx(5 + 0.02 * np.sqrt(25_000 / 1e9) * 1e4)


def test_an_illiquid_or_unmeasured_name_is_left_out_and_the_next_in_rank_takes_its_place():
    adv = np.full(10, 1e9)
    adv[9] = 1e3  # impact 5 + 0.02 * sqrt(25) * 1e4 = 1,005 bps
    adv[0] = np.nan
    b = _build(np.arange(10.0), adv)
    assert [x.coin for x in b.long] == ["C8", "C7"] and [x.coin for x in b.short] == ["C1", "C2"]
    assert b.left_out["C9"].startswith("liquidity: impact 1005 bps")
    assert "no complete 30-day" in b.left_out["C0"]


def test_the_position_cap_holds_and_too_few_coins_make_no_basket():
    b = _build(np.arange(10.0), np.full(10, 1e9), max_position=0.1)
    assert all(abs(x.weight) == 0.1 for x in b.long + b.short) and b.capped
    assert _build([1.0], [1e9]).per_leg == 0
    b = _build([1.0, np.nan, 2.0], [1e9] * 3, quantile=0.5)
    assert b.left_out == {"C1": "no cross-sectional score"} and [x.coin for x in b.long] == ["C2"]


def _p(coin, horizon, p, conf, act=True):
    return SimpleNamespace(coin=coin, horizon=horizon, p_beats=p, beats_confidence=conf, beats_actionable=act,
                           q10=-0.1, q50=0.0, q90=0.1, decision_ts=0)


def test_cross_sectional_candidates_need_agreeing_actionable_horizons():
    preds = [_p("A", "24h", 0.9, 0.85), _p("A", "7d", 0.88, 0.82),  # long candidate
             _p("B", "24h", 0.1, 0.86), _p("B", "7d", 0.15, 0.81),  # short candidate
             _p("C", "24h", 0.9, 0.85), _p("C", "7d", 0.1, 0.85),   # contradicted
             _p("D", "24h", 0.9, 0.85), _p("D", "7d", 0.9, 0.6, act=False)]  # one horizon only
    sig = {s.coin: s for s in cross_section_consensus(preds, 2)}
    assert set(sig) == {"A", "B"}
    assert sig["A"].direction == "beats" and sig["B"].direction == "lags"
    assert sig["A"].target == "cross_section" and sig["A"].min_confidence == 0.82
    assert sig["B"].p_up == {"24h": 0.1, "7d": 0.15}
