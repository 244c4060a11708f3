"""The adaptive conformal range: misses widen it, covers narrow it, and coverage settles at the nominal level; the
served kind scales it by the volatility forecast and keeps each volatility bin at that level, one step per decision
time; the earlier kind (cqr) conformalizes the model's q10-q90.

Seeded generated returns exercise the mechanics only; nothing here is a claim about markets.
"""

from __future__ import annotations

import numpy as np

from services.predict.conformal import CQR, NORMALIZED, RangeState, load, replay, state_key

ALPHA, GAMMA, WINDOW = 0.2, 0.005, 500


def one(state: RangeState, t: int, a: float, b: float, r: float, gamma: float = GAMMA, served=None) -> float:
    """Absorb a single outcome (a decision time with one coin); 1.0 a miss, 0.0 a cover, NaN nothing served."""
    return float(state.absorb(t, np.array([a]), np.array([b]), np.array([r]),
                              None if served is None else np.array([served]), ALPHA, gamma, WINDOW)[0])


def test_a_miss_widens_the_range_and_a_cover_narrows_it():
    # Scores -0.050, -0.049, ..., 0.050; a step of 0.05 so one outcome moves the quantile by whole scores.
    step = 0.05
    scores = list(np.round(np.linspace(-0.05, 0.05, 101), 3))
    state = RangeState([ALPHA], scores, [0.04] * 101, list(range(101)), kind=CQR)
    assert state.margin() == 0.031  # (1 - 0.2)(1 + 1/101) of 101 scores: the 82nd
    assert one(state, 101, -0.02, 0.02, 0.30, step) == 1.0  # far outside: a miss
    assert state.alphas == [ALPHA - step * (1 - ALPHA)]  # 0.16: a higher quantile of the scores
    assert state.margin() == 0.036  # (1 - 0.16)(1 + 1/102) of 102 scores: the 87th
    assert one(state, 102, -0.02, 0.02, 0.0, step) == 0.0  # inside: a cover
    assert state.alphas == [ALPHA - step * (1 - ALPHA) + step * ALPHA]  # 0.17
    assert state.margin() == 0.035  # the 87th of 103: one lower, since the cover's score (-0.02) sits below
    assert (state.outcomes, state.misses) == (2, 1)


def test_no_scores_serve_no_range_and_the_state_round_trips(tmp_path):
    from shared.storage import LocalLake

    state = RangeState.new(ALPHA, kind=CQR)
    assert state.margin() is None and state.served(-0.1, 0.1) is None
    assert np.isnan(one(state, 0, -0.1, 0.1, 0.15))  # nothing was served: no miss, alpha stays
    assert state.alphas == [ALPHA] and state.misses == 0 and state.outcomes == 1
    again = RangeState.from_json(state.to_json())
    assert again == state and again.served(-0.1, 0.1) == (-0.15, 0.15)
    # The served kind: centre +- m * sigma, m the quantile of |r - centre| / sigma (three bins, one alpha each).
    # One outcome demonstrates no median skill: the centre is no move, m the quantile of |r| / sigma.
    norm = RangeState.new(ALPHA)
    one(norm, 0, 0.01, 0.05, 0.11)  # |0.11 - 0.01| / 0.05 = 2; |0.11| / 0.05 = 2.2
    assert norm.scores == [2.0] and np.allclose(norm.zero_scores, [2.2]) and norm.alphas == [ALPHA] * 3
    assert np.allclose(norm.served(0.0, 0.1), (-0.22, 0.22))
    lake = LocalLake(tmp_path)
    lake.put_json(state_key("24h"), norm.to_json())
    assert load(lake, "24h", ALPHA) == norm
    # A state of the earlier layout (one alpha for every coin, no sigmas) starts afresh, keeping its last run.
    lake.put_json(state_key("24h"), {"alpha": 0.1, "scores": [1.0], "outcomes": 1, "misses": 0, "last_run": "r1",
                                     "kind": NORMALIZED})
    assert load(lake, "24h", ALPHA) == RangeState.new(ALPHA, last_run="r1")


def test_coverage_on_a_shifting_series_converges_to_the_nominal_level():
    # A model whose q10 / q90 are right for volatility 1 and stay there while the market's volatility doubles at
    # t = 2000 and falls to 0.5 at t = 4000: raw coverage drifts far from 80%, the adaptive range follows.
    rng = np.random.default_rng(11)
    sigma = np.r_[np.full(2000, 1.0), np.full(2000, 2.0), np.full(2000, 0.5)]
    r = rng.normal(0.0, sigma)
    q_lo, q_hi = -1.2816, 1.2816
    state = RangeState.new(ALPHA, kind=CQR)
    misses = np.array([one(state, t, q_lo, q_hi, float(x)) == 1.0 for t, x in enumerate(r)])
    raw_cover = (r >= q_lo) & (r <= q_hi)
    assert raw_cover[2000:4000].mean() < 0.55 and raw_cover[4000:].mean() > 0.98  # the model alone: wrong both ways
    for lo, hi in ((1000, 2000), (3000, 4000), (5000, 6000)):  # after each regime has had time to be learned
        assert abs((1 - misses[lo:hi].mean()) - 0.8) < 0.03, (lo, hi, 1 - misses[lo:hi].mean())
    # Gibbs & Candes' bound on the whole run: |mean miss - alpha| <= (max(alpha_1, 1 - alpha_1) + gamma) / (gamma T).
    assert abs(misses.mean() - ALPHA) <= (max(ALPHA, 1 - ALPHA) + GAMMA) / (GAMMA * r.size)


def test_replay_serves_what_the_outcome_step_would_have_served():
    # Two coins, daily decisions, a 2-day horizon: the outcome of day d matures at day d + 2.
    day = 86_400_000
    rng = np.random.default_rng(4)
    ts = np.repeat(np.arange(40) * day, 2)
    q_lo, q_hi = np.full(ts.size, -0.05), np.full(ts.size, 0.05)
    realized = rng.normal(0, 0.06, ts.size)
    got = replay(ts, q_lo, q_hi, realized, 2 * day, alpha=ALPHA, gamma=GAMMA, window=WINDOW, overlap=2, kind=CQR)
    # Days 0 and 1: nothing has matured, no range is served (the live path serves none either).
    assert np.isnan(got[:4]).all() and np.isfinite(got[4:]).all()
    # The same by hand: before each day, absorb every decision time matured by then, one at a time, in order.
    state, absorbed = RangeState.new(ALPHA, kind=CQR), 0
    for d in range(40):
        while absorbed < 40 and (absorbed + 2) <= d:
            rows = np.flatnonzero(ts == absorbed * day)
            state.absorb(absorbed * day, q_lo[rows], q_hi[rows], realized[rows], got[rows], ALPHA, GAMMA, WINDOW, 2)
            absorbed += 1
        rows = np.flatnonzero(ts == d * day)
        if state.margin() is not None:
            assert np.allclose(got[rows], [[-0.05 - state.margin(), 0.05 + state.margin()]] * rows.size)


def test_coins_that_miss_together_move_alpha_once_and_overlapping_outcomes_by_a_share():
    # 300 coins of one decision time all miss (the market jumped): one step, not 300. A 30-bar horizon's outcome
    # repeats the news of 29 neighbours: a thirtieth of a step.
    state = RangeState.new(ALPHA, bins=1)
    state.absorb(0, np.zeros(300), np.ones(300), np.zeros(300), None, ALPHA, 0.01, WINDOW)  # no range yet: NaN
    served = np.tile([-1.0, 1.0], (300, 1))
    miss = state.absorb(1, np.zeros(300), np.ones(300), np.full(300, 5.0), served, ALPHA, 0.01, WINDOW)
    assert miss.sum() == 300 and state.alphas == [ALPHA - 0.01 * 0.8]
    state.absorb(2, np.zeros(300), np.ones(300), np.full(300, 5.0), served, ALPHA, 0.01, WINDOW, overlap=30)
    assert np.isclose(state.alphas[0], ALPHA - 0.01 * 0.8 - 0.01 / 30 * 0.8)
    # The window holds the scores of its last decision times.
    for t in range(3, 8):
        state.absorb(t, np.zeros(2), np.ones(2), np.zeros(2), None, ALPHA, 0.01, 4)
    assert sorted(set(state.times)) == [4, 5, 6, 7] and len(state.scores) == 8


def test_each_volatility_bin_settles_at_the_nominal_level_when_the_forecast_spreads_coins_too_far():
    # 60 coins whose true volatility is sqrt(sigma_hat * 0.02): the forecast ranks them right but spreads them too
    # far apart (calm coins look calmer, wild ones wilder than they are). In proportion to sigma_hat (beta = 1), one
    # bin covers 80% overall and far from it in each tercile; the range learns to follow the forecast by its square
    # root (beta = 0.5) from the outcomes it has seen, and then each tercile holds 80%, with one bin or three.
    rng = np.random.default_rng(5)
    coins, days = 60, 400
    s_hat = np.exp(rng.uniform(np.log(0.005), np.log(0.08), coins))
    ts = np.repeat(np.arange(days), coins)
    sig = np.tile(s_hat, days)
    r = rng.normal(0.0, np.sqrt(sig * 0.02))
    cut = np.quantile(s_hat, [1 / 3, 2 / 3])
    third = np.digitize(sig, cut)
    late = ts >= 100

    def cover(got):
        inside = (r >= got[:, 0]) & (r <= got[:, 1])
        return [float(inside[late & (third == k)].mean()) for k in range(3)] + [float(inside[late].mean())]

    proportional = RangeState.exponent
    try:
        RangeState.exponent = lambda self, centred=None: 1.0
        fixed = cover(replay(ts, np.zeros(ts.size), sig, r, 1, alpha=ALPHA, gamma=0.01, window=60, bins=1))
    finally:
        RangeState.exponent = proportional
    assert abs(fixed[3] - 0.8) < 0.02 and fixed[0] < 0.7 and fixed[2] > 0.9, fixed
    for bins in (1, 3):
        learned = cover(replay(ts, np.zeros(ts.size), sig, r, 1, alpha=ALPHA, gamma=0.01, window=60, bins=bins))
        assert all(abs(c - 0.8) < 0.03 for c in learned), (bins, learned)
    state = RangeState.new(ALPHA, bins=3)
    for t in range(60):
        rows = ts == t
        state.absorb(t, np.zeros(coins), sig[rows], r[rows], None, ALPHA, 0.01, 60)
    assert state.exponent() == 0.5


def test_a_forecast_in_proportion_to_the_outcomes_is_followed_in_proportion_and_only_after_enough_windows():
    rng = np.random.default_rng(6)
    coins = 60
    s_hat = np.exp(rng.uniform(np.log(0.005), np.log(0.08), coins))
    state = RangeState.new(ALPHA, bins=3)
    for t in range(60):
        r = rng.normal(0.0, np.sqrt(s_hat * 0.02))  # as above: sigma_hat spreads the coins twice too far
        state.absorb(t, np.zeros(coins), s_hat, r, None, ALPHA, 0.01, 60, overlap=7)
    # 60 decision times of a 7-bar horizon are 9 independent windows, fewer than 10: followed in proportion
    # whatever the outcomes say; one window more, and the outcomes decide.
    assert state.centre_evidence()["windows"] == 9 and state.exponent() == 1.0
    for t in range(60, 70):
        state.absorb(t, np.zeros(coins), s_hat, rng.normal(0.0, np.sqrt(s_hat * 0.02)), None, ALPHA, 0.01, 60,
                     overlap=7)
    assert state.centre_evidence()["windows"] == 10 and state.exponent() == 0.5
    calibrated = RangeState.new(ALPHA, bins=3)
    for t in range(60):
        calibrated.absorb(t, np.zeros(coins), s_hat, rng.normal(0.0, s_hat), None, ALPHA, 0.01, 60)
    assert calibrated.exponent() == 1.0


def test_normalized_ranges_settle_at_the_nominal_level_in_each_volatility_regime():
    # The same shifting series, now with a volatility forecast that learns from the past only (an exponentially
    # weighted mean of squared returns, lagging every shift): scores |r - 0| / sigma_hat. Coverage settles at 80% in
    # each regime, and the range is as wide as its regime: about four times narrower at volatility 0.5 than at 2.
    rng = np.random.default_rng(11)
    sigma = np.r_[np.full(2000, 1.0), np.full(2000, 2.0), np.full(2000, 0.5)]
    r = rng.normal(0.0, sigma)
    var, lam = 1.0, 0.97
    state = RangeState.new(ALPHA, bins=1)
    misses, widths = [], []
    for t, x in enumerate(r):
        s_hat = float(np.sqrt(var))
        lohi = state.served(0.0, s_hat)
        widths.append(np.nan if lohi is None else lohi[1] - lohi[0])
        misses.append(one(state, t, 0.0, s_hat, float(x)))
        var = lam * var + (1 - lam) * x * x
    miss = np.array(misses)
    widths = np.asarray(widths)
    for lo, hi in ((1000, 2000), (3000, 4000), (5000, 6000)):
        cover = 1 - np.nanmean(miss[lo:hi])
        assert abs(cover - 0.8) < 0.03, (lo, hi, cover)
    ratio = np.nanmedian(widths[3000:4000]) / np.nanmedian(widths[5000:6000])
    assert 3.0 < ratio < 5.0, ratio
    assert abs(np.nanmean(miss) - ALPHA) <= (max(ALPHA, 1 - ALPHA) + GAMMA) / (GAMMA * r.size)


def test_the_range_is_centred_on_the_models_median_only_where_it_sat_closer_to_the_outcomes_than_no_move():
    rng = np.random.default_rng(3)
    days, coins = 200, 10
    ts = np.repeat(np.arange(days), coins)
    sigma = np.full(ts.size, 0.05)
    drift = rng.normal(0.0, 0.05, ts.size)  # what the coin will do beyond noise, known to a skilled median only
    r = drift + rng.normal(0.0, 0.02, ts.size)
    for median, centred in ((drift, True), (rng.normal(0.0, 0.05, ts.size), False)):
        state = RangeState.new(ALPHA)
        for t in range(days):
            rows = ts == t
            state.absorb(t, median[rows], sigma[rows], r[rows], None, ALPHA, 0.01, 60)
        assert state.centred() is centred
        lo, hi = state.served(0.1, 0.05)
        assert np.isclose((lo + hi) / 2, 0.1 if centred else 0.0)
        got = replay(ts, median, sigma, r, 1, alpha=ALPHA, gamma=0.01, window=60)
        late = ts >= 100
        inside = (r >= got[:, 0]) & (r <= got[:, 1])
        assert abs(inside[late].mean() - 0.8) < 0.04
        # 80% of |N(0, sd)| is 1.28 sd: the skilled median leaves sd 0.02 (width ~0.051); no move leaves 0.054
        # (~0.138); the noisy median would have left 0.073 (~0.187).
        width = np.median(got[late, 1] - got[late, 0])
        assert width < (0.07 if centred else 0.16), width


def test_the_median_earns_the_centre_only_by_the_projects_skill_standard():
    """A skilled median over four 30-day windows has not demonstrated anything yet (fewer than ten independent
    windows); over twelve it has. The standard is training's (skill_z, skill_min_windows)."""
    from services.predict.conformal import CENTRE_MIN_WINDOWS, CENTRE_Z
    from shared.settings import Settings

    training = Settings().training
    assert (CENTRE_Z, CENTRE_MIN_WINDOWS) == (training.skill_z, training.skill_min_windows)
    rng = np.random.default_rng(11)
    bars, coins = 30, 8
    for days, demonstrated in ((120, False), (360, True)):
        ts = np.repeat(np.arange(days), coins)
        drift = np.repeat(rng.normal(0.0, 0.1, days // bars), bars * coins)  # one market move per window
        drift = drift + rng.normal(0.0, 0.05, ts.size)
        r = drift + rng.normal(0.0, 0.03, ts.size)
        state = RangeState.new(ALPHA)
        for t in range(days):
            rows = ts == t
            state.absorb(t, drift[rows], np.full(coins, 0.1), r[rows], None, ALPHA, 0.01, 60, overlap=bars)
        e = state.centre_evidence()
        assert e["windows"] == days // bars and e["mean"] > 0
        assert state.centred() is demonstrated
        assert RangeState.from_json(state.to_json()).centred() is demonstrated


def test_the_window_counts_horizons_and_a_decision_time_keeps_a_spread_of_its_coins_scores():
    state = RangeState.new(ALPHA)
    sig = np.linspace(0.01, 0.3, 300)
    for t in range(100):  # a 30-bar horizon with a window of 2 horizons: the last 60 decision times
        state.absorb(t, np.zeros(300), sig, np.full(300, 0.05), None, ALPHA, 0.01, 2, overlap=30)
    assert sorted(set(state.times)) == list(range(40, 100))
    assert len(state.scores) == len(state.zero_scores) == len(state.sigmas) == 60 * 32
    kept = np.asarray(state.sigmas[-32:])
    assert kept.min() == sig.min() and kept.max() == sig.max() and np.all(np.diff(kept) > 0)
    assert RangeState.from_json(state.to_json()) == state


def test_a_seeded_range_serves_calibrated_from_its_first_decision_and_the_median_earns_the_centre_live():
    # Held-out scores of N(0, sigma) returns seed the range: it covers 80% from the first decision time, where an
    # unseeded one serves nothing until an outcome matures and then learns from one decision time's scores.
    from services.predict.conformal import range_seed

    rng = np.random.default_rng(7)
    coins, days, bars = 20, 120, 7
    held_ts = np.repeat(np.arange(-400, 0), coins)
    held_sig = np.exp(rng.normal(np.log(0.05), 0.3, held_ts.size))
    seed = range_seed(held_ts, held_sig, rng.normal(0, held_sig), 60 * bars)
    assert len(set(seed.ts)) == 400 and len(seed.score) == 400 * coins  # 420 times allowed, 20 coins < 32
    ts = np.repeat(np.arange(days), coins)
    sig = np.exp(rng.normal(np.log(0.05), 0.3, ts.size))
    r = rng.normal(0, sig)
    seeded = replay(ts, np.zeros(ts.size), sig, r, bars, alpha=ALPHA, gamma=0.01, window=60, overlap=bars, seed=seed)
    cold = replay(ts, np.zeros(ts.size), sig, r, bars, alpha=ALPHA, gamma=0.01, window=60, overlap=bars)
    assert np.isfinite(seeded).all() and np.isnan(cold[ts < bars]).all()
    first = ts < 20
    inside = (r >= seeded[:, 0]) & (r <= seeded[:, 1])
    assert abs(inside[first].mean() - 0.8) < 0.06 and abs(inside.mean() - 0.8) < 0.03
    # The seed counts as centred on no move: a median equal to it does not win the centre by a tie.
    state = RangeState.seeded(ALPHA, 3, seed)
    assert not state.centred() and state.served(0.5, 0.05)[0] < 0 < state.served(0.5, 0.05)[1]
    assert state.outcomes == 0 and RangeState.from_json(state.to_json()) == state
