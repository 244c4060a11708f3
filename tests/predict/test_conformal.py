"""The adaptive conformal range: misses widen it, covers narrow it, and coverage settles at the nominal level.

Seeded generated returns exercise the mechanics only; nothing here is a claim about markets.
"""

from __future__ import annotations

import numpy as np

from services.predict.conformal import RangeState

ALPHA, GAMMA, WINDOW = 0.2, 0.005, 500


def test_a_miss_widens_the_range_and_a_cover_narrows_it():
    # Scores -0.050, -0.049, ..., 0.050; a step of 0.05 so one outcome moves the quantile by whole scores.
    step = 0.05
    state = RangeState(ALPHA, scores=list(np.round(np.linspace(-0.05, 0.05, 101), 3)))
    assert state.margin() == 0.031  # (1 - 0.2)(1 + 1/101) of 101 scores: the 82nd
    assert state.update(-0.02, 0.02, 0.30, ALPHA, step, WINDOW)  # far outside: a miss
    assert state.alpha == ALPHA - step * (1 - ALPHA)  # 0.16: a higher quantile of the scores
    assert state.margin() == 0.036  # (1 - 0.16)(1 + 1/102) of 102 scores: the 87th
    assert not state.update(-0.02, 0.02, 0.0, ALPHA, step, WINDOW)  # inside: a cover
    assert state.alpha == ALPHA - step * (1 - ALPHA) + step * ALPHA  # 0.17
    assert state.margin() == 0.035  # the 87th of 103: one lower, since the cover's score (-0.02) sits below
    assert (state.outcomes, state.misses) == (2, 1)


def test_no_scores_serve_no_range_and_the_state_round_trips():
    state = RangeState(ALPHA)
    assert state.margin() is None and state.served(-0.1, 0.1) is None
    state.update(-0.1, 0.1, 0.15, ALPHA, GAMMA, WINDOW)
    again = RangeState.from_json(state.to_json())
    assert again == state and again.served(-0.1, 0.1) == (-0.15, 0.15)


def test_coverage_on_a_shifting_series_converges_to_the_nominal_level():
    # A model whose q10 / q90 are right for volatility 1 and stay there while the market's volatility doubles at
    # t = 2000 and falls to 0.5 at t = 4000: raw coverage drifts far from 80%, the adaptive range follows.
    rng = np.random.default_rng(11)
    sigma = np.r_[np.full(2000, 1.0), np.full(2000, 2.0), np.full(2000, 0.5)]
    r = rng.normal(0.0, sigma)
    q_lo, q_hi = -1.2816, 1.2816
    state = RangeState(ALPHA)
    misses = np.array([state.update(q_lo, q_hi, float(x), ALPHA, GAMMA, WINDOW) for x in r])
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
    got = replay(ts, q_lo, q_hi, realized, 2 * day, alpha=ALPHA, gamma=GAMMA, window=WINDOW)
    # Days 0 and 1: nothing has matured, no range is served (the live path serves none either).
    assert np.isnan(got[:4]).all() and np.isfinite(got[4:]).all()
    # The same by hand: before each day, absorb every outcome matured by then, in decision order.
    state, absorbed = RangeState(ALPHA), 0
    for d in range(40):
        while absorbed < ts.size and ts[absorbed] + 2 * day <= d * day:
            served = None if np.isnan(got[absorbed, 0]) else tuple(got[absorbed])
            state.update(-0.05, 0.05, float(realized[absorbed]), ALPHA, GAMMA, WINDOW, served)
            absorbed += 1
        rows = np.flatnonzero(ts == d * day)
        if state.margin() is not None:
            assert np.allclose(got[rows], [[-0.05 - state.margin(), 0.05 + state.margin()]] * rows.size)
