"""The adaptive conformal range: misses widen it, covers narrow it, and coverage settles at the nominal level; the
served kind scales it by the volatility forecast, the earlier kind (cqr) conformalizes the model's q10-q90.

Seeded generated returns exercise the mechanics only; nothing here is a claim about markets.
"""

from __future__ import annotations

import numpy as np

from services.predict.conformal import CQR, NORMALIZED, RangeState

ALPHA, GAMMA, WINDOW = 0.2, 0.005, 500


def test_a_miss_widens_the_range_and_a_cover_narrows_it():
    # Scores -0.050, -0.049, ..., 0.050; a step of 0.05 so one outcome moves the quantile by whole scores.
    step = 0.05
    state = RangeState(ALPHA, scores=list(np.round(np.linspace(-0.05, 0.05, 101), 3)), kind=CQR)
    assert state.margin() == 0.031  # (1 - 0.2)(1 + 1/101) of 101 scores: the 82nd
    assert state.update(-0.02, 0.02, 0.30, ALPHA, step, WINDOW)  # far outside: a miss
    assert state.alpha == ALPHA - step * (1 - ALPHA)  # 0.16: a higher quantile of the scores
    assert state.margin() == 0.036  # (1 - 0.16)(1 + 1/102) of 102 scores: the 87th
    assert not state.update(-0.02, 0.02, 0.0, ALPHA, step, WINDOW)  # inside: a cover
    assert state.alpha == ALPHA - step * (1 - ALPHA) + step * ALPHA  # 0.17
    assert state.margin() == 0.035  # the 87th of 103: one lower, since the cover's score (-0.02) sits below
    assert (state.outcomes, state.misses) == (2, 1)


def test_no_scores_serve_no_range_and_the_state_round_trips():
    state = RangeState(ALPHA, kind=CQR)
    assert state.margin() is None and state.served(-0.1, 0.1) is None
    assert state.update(-0.1, 0.1, 0.15, ALPHA, GAMMA, WINDOW) is None  # nothing was served: no miss, alpha stays
    assert state.alpha == ALPHA and state.misses == 0 and state.outcomes == 1
    again = RangeState.from_json(state.to_json())
    assert again == state and again.served(-0.1, 0.1) == (-0.15, 0.15)
    # The served kind: centre +- m * sigma, m the quantile of |r - centre| / sigma.
    norm = RangeState(ALPHA)
    norm.update(0.01, 0.05, 0.11, ALPHA, GAMMA, WINDOW)  # |0.11 - 0.01| / 0.05 = 2
    assert norm.scores == [2.0] and norm.served(0.0, 0.1) == (-0.2, 0.2)
    assert RangeState.from_json(norm.to_json()).kind == NORMALIZED


def test_coverage_on_a_shifting_series_converges_to_the_nominal_level():
    # A model whose q10 / q90 are right for volatility 1 and stay there while the market's volatility doubles at
    # t = 2000 and falls to 0.5 at t = 4000: raw coverage drifts far from 80%, the adaptive range follows.
    rng = np.random.default_rng(11)
    sigma = np.r_[np.full(2000, 1.0), np.full(2000, 2.0), np.full(2000, 0.5)]
    r = rng.normal(0.0, sigma)
    q_lo, q_hi = -1.2816, 1.2816
    state = RangeState(ALPHA, kind=CQR)
    misses = np.array([bool(state.update(q_lo, q_hi, float(x), ALPHA, GAMMA, WINDOW)) for x in r])
    raw_cover = (r >= q_lo) & (r <= q_hi)
    assert raw_cover[2000:4000].mean() < 0.55 and raw_cover[4000:].mean() > 0.98  # the model alone: wrong both ways
    for lo, hi in ((1000, 2000), (3000, 4000), (5000, 6000)):  # after each regime has had time to be learned
        assert abs((1 - misses[lo:hi].mean()) - 0.8) < 0.03, (lo, hi, 1 - misses[lo:hi].mean())
    # Gibbs & Candes' bound on the whole run: |mean miss - alpha| <= (max(alpha_1, 1 - alpha_1) + gamma) / (gamma T).
    assert abs(misses.mean() - ALPHA) <= (max(ALPHA, 1 - ALPHA) + GAMMA) / (GAMMA * r.size)


def test_replay_serves_what_the_outcome_step_would_have_served():
    from services.predict.conformal import replay

    # Two coins, daily decisions, a 2-day horizon: the outcome of day d matures at day d + 2.
    day = 86_400_000
    rng = np.random.default_rng(4)
    ts = np.repeat(np.arange(40) * day, 2)
    q_lo, q_hi = np.full(ts.size, -0.05), np.full(ts.size, 0.05)
    realized = rng.normal(0, 0.06, ts.size)
    got = replay(ts, q_lo, q_hi, realized, 2 * day, alpha=ALPHA, gamma=GAMMA, window=WINDOW, kind=CQR)
    # Days 0 and 1: nothing has matured, no range is served (the live path serves none either).
    assert np.isnan(got[:4]).all() and np.isfinite(got[4:]).all()
    # The same by hand: before each day, absorb every outcome matured by then, in decision order.
    state, absorbed = RangeState(ALPHA, kind=CQR), 0
    for d in range(40):
        while absorbed < ts.size and ts[absorbed] + 2 * day <= d * day:
            served = None if np.isnan(got[absorbed, 0]) else tuple(got[absorbed])
            state.update(-0.05, 0.05, float(realized[absorbed]), ALPHA, GAMMA, WINDOW, served)
            absorbed += 1
        rows = np.flatnonzero(ts == d * day)
        if state.margin() is not None:
            assert np.allclose(got[rows], [[-0.05 - state.margin(), 0.05 + state.margin()]] * rows.size)


def test_normalized_ranges_settle_at_the_nominal_level_in_each_volatility_regime():
    # The same shifting series, now with a volatility forecast that learns from the past only (an exponentially
    # weighted mean of squared returns, lagging every shift): scores |r - 0| / sigma_hat. Coverage settles at 80% in
    # each regime, and the range is as wide as its regime: about four times narrower at volatility 0.5 than at 2.
    rng = np.random.default_rng(11)
    sigma = np.r_[np.full(2000, 1.0), np.full(2000, 2.0), np.full(2000, 0.5)]
    r = rng.normal(0.0, sigma)
    var, lam = 1.0, 0.97
    state = RangeState(ALPHA)
    misses, widths = [], []
    for x in r:
        s_hat = float(np.sqrt(var))
        lohi = state.served(0.0, s_hat)
        widths.append(np.nan if lohi is None else lohi[1] - lohi[0])
        misses.append(state.update(0.0, s_hat, float(x), ALPHA, GAMMA, WINDOW))
        var = lam * var + (1 - lam) * x * x
    miss = np.array([m if m is not None else np.nan for m in misses], dtype=float)
    widths = np.asarray(widths)
    for lo, hi in ((1000, 2000), (3000, 4000), (5000, 6000)):
        cover = 1 - np.nanmean(miss[lo:hi])
        assert abs(cover - 0.8) < 0.03, (lo, hi, cover)
    ratio = np.nanmedian(widths[3000:4000]) / np.nanmedian(widths[5000:6000])
    assert 3.0 < ratio < 5.0, ratio
    assert abs(np.nanmean(miss) - ALPHA) <= (max(ALPHA, 1 - ALPHA) + GAMMA) / (GAMMA * r.size)
