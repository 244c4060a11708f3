"""How good the served return ranges and the volatility forecast are, against the standard baselines on the same rows.

Ranges (nominal level 1 - alpha): the served one (the model's median +- the normalized conformal multiple of the
volatility forecast, adapted online), the one served before it (the model's q10-q90 conformalized with ACI), the
naive rolling-volatility range, a HAR range and a GARCH(1,1) range per coin (normal quantiles of their forecast
sd). Each is judged by coverage (overall, by tercile of the served volatility forecast, by coin), median width and
the interval score of Gneiting & Raftery (2007), width + 2/alpha x the distance by which the outcome missed,
which rewards coverage and sharpness together; means and differences carry block-bootstrap intervals over
non-overlapping horizon windows. Misses are told apart by side (below the range, above it: a market that drifted
one way through the test). The served range's own rows also say what a range at exactly the nominal level would
measure on them (`calibrated_resolution`): a test of a few independent horizon windows cannot tell 0.80 from 0.85,
and the figure says how far it can. The volatility forecast is judged by QLIKE and R2 of log variance against HAR
alone and the 30-bar rolling mean.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from services.training.volatility import qlike, r2_log
from shared.ranking import horizon_windows, window_interval

log = logging.getLogger(__name__)

SERVED = "served (volatility-scaled conformal)"
PREVIOUS = "previous served (q10-q90 + ACI)"
NAIVE = "naive rolling volatility"
HAR = "HAR"
GARCH = "GARCH(1,1)"
COVERAGE_BAND = 0.03  # how far from the nominal level a measured coverage may lie and count as on target


def interval_score(lo: np.ndarray, hi: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Per row: (hi - lo) + 2/alpha (lo - y) if y < lo, + 2/alpha (y - hi) if y > hi (lower is better)."""
    return (hi - lo) + (2.0 / alpha) * np.maximum(lo - y, 0.0) + (2.0 / alpha) * np.maximum(y - hi, 0.0)


def normal_range(sigma: np.ndarray, alpha: float) -> np.ndarray:
    from scipy.stats import norm

    half = norm.ppf(1 - alpha / 2) * sigma
    return np.column_stack([-half, half])


def garch_sigma(panel, coin: np.ndarray, ts: np.ndarray, bars: int, starts: list[int], *, min_obs: int = 250,
                max_obs: int = 2000, tick: Callable[[str], None] | None = None) -> np.ndarray:
    """Per row, the sd of the forward log return over `bars` bars from a GARCH(1,1) with a constant mean and normal
    errors, fitted per coin on its one-bar log returns before the start of the row's retrain window (the served
    model's data horizon) and run forward with those parameters to the decision time. NaN where the coin has fewer
    than `min_obs` contiguous returns before the window (no fit is invented for it)."""
    from arch import arch_model

    out = np.full(ts.size, np.nan)
    close = panel.fields["close"]
    step = int(panel.open_ts[1] - panel.open_ts[0]) if panel.open_ts.size > 1 else 1
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.full_like(close, np.nan)
        r[1:] = 100.0 * np.diff(np.log(close), axis=0)  # percent: the scale arch's optimizer expects
    col = {c: j for j, c in enumerate(panel.coins)}
    row_bar = (ts - step - panel.open_ts[0]) // step  # the candle that closes at the decision time
    bounds = [*starts, np.iinfo(np.int64).max]
    coins = sorted(set(coin.tolist()))
    for n, c in enumerate(coins):
        if tick and n % 25 == 0:
            tick(f"GARCH(1,1) per coin: {n}/{len(coins)}")
        j = col.get(c)
        if j is None:
            continue
        series = r[:, j]
        for k in range(len(starts)):
            rows = np.flatnonzero((coin == c) & (ts >= bounds[k]) & (ts < bounds[k + 1]))
            if not rows.size:
                continue
            first_bar = int((bounds[k] - step - panel.open_ts[0]) // step)
            last_bar = int(row_bar[rows].max())
            # The contiguous stretch of returns that ends at the window's last decision.
            seg_end = last_bar + 1
            bad = np.flatnonzero(~np.isfinite(series[:seg_end]))
            seg_start = int(bad[-1]) + 1 if bad.size else 0
            if first_bar - seg_start < min_obs:
                continue
            seg_start = max(seg_start, first_bar - max_obs)
            train = series[seg_start:first_bar + 1]
            try:
                fit = arch_model(train, mean="Constant", vol="GARCH", p=1, q=1, dist="normal",
                                 rescale=False).fit(disp="off", show_warning=False)
                run = arch_model(series[seg_start:seg_end], mean="Constant", vol="GARCH", p=1, q=1, dist="normal",
                                 rescale=False)
                first_row = int(row_bar[rows].min()) - seg_start
                f = run.fix(fit.params).forecast(horizon=bars, start=first_row, reindex=False)
            except (ValueError, np.linalg.LinAlgError) as exc:  # a degenerate series: no GARCH for it here
                log.warning("GARCH(1,1) for %s before %s failed: %s", c, bounds[k], exc)
                continue
            var = f.variance.to_numpy().sum(axis=1)  # the sum of the h-step variances: the horizon's variance
            at = row_bar[rows] - seg_start - first_row
            out[rows] = np.sqrt(var[at]) / 100.0
    return out


def _coverage(lo: np.ndarray, hi: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (y >= lo) & (y <= hi)


def _terciles(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bounds between the volatility forecast's terciles on these rows, and each row's tercile (0 calm, 2 wild)."""
    cuts = np.quantile(v, [1 / 3, 2 / 3])
    return cuts, np.digitize(v, cuts)


def _by_coin(inside: np.ndarray, coin: np.ndarray, min_rows: int = 20) -> dict:
    names, which = np.unique(coin, return_inverse=True)
    counts = np.bincount(which)
    cov = np.bincount(which, weights=inside.astype(float)) / np.maximum(counts, 1)
    enough = counts >= min_rows
    c = cov[enough]
    if not c.size:
        return {"coins": 0}
    return {"coins": int(c.size), "min_rows": min_rows, "min": float(c.min()), "median": float(np.median(c)),
            "max": float(c.max()), "share_within_0.70_0.90": float(np.mean((c >= 0.7) & (c <= 0.9))),
            "lowest": {str(names[enough][i]): float(c[i]) for i in np.argsort(c)[:3]}}


def _judge(t: np.ndarray, c: np.ndarray, y: np.ndarray, v: np.ndarray, lo: np.ndarray, hi: np.ndarray,
           horizon_ms: int, alpha: float, seed: int) -> tuple[dict, np.ndarray]:
    """One range on one set of rows: coverage (overall, by tercile of the served volatility forecast on these rows,
    by coin) with window-bootstrap intervals, median width, interval score; and the per-row interval scores."""
    cuts, tercile = _terciles(v)
    inside = _coverage(lo, hi, y)
    s = interval_score(lo, hi, y, alpha)
    return {
        "rows": int(y.size),
        "coverage": float(inside.mean()),
        "coverage_by_vol_tercile": [float(inside[tercile == k].mean()) if (tercile == k).any() else None
                                    for k in range(3)],
        # How far the test can tell coverage apart from the nominal level: window-bootstrap 90% intervals (the
        # mean per window differs from the row share where windows hold unequal numbers of rows).
        "coverage_interval": window_interval(inside.astype(float), t, horizon_ms, seed=seed),
        "coverage_by_vol_tercile_interval": [
            window_interval(inside[tercile == k].astype(float), t[tercile == k], horizon_ms, seed=seed)
            for k in range(3)],
        "miss_below": float(np.mean(y < lo)),
        "miss_above": float(np.mean(y > hi)),
        "coverage_by_coin": _by_coin(inside, c),
        "median_width": float(np.median(hi - lo)),
        "interval_score": window_interval(s, t, horizon_ms, seed=seed),
        "vol_tercile_bounds": [float(x) for x in cuts],
    }, s


def calibrated_resolution(t: np.ndarray, y: np.ndarray, v: np.ndarray, horizon_ms: int, alpha: float, *,
                          band: float = COVERAGE_BAND, draws: int = 1000, level: float = 0.90, seed: int = 0) -> dict:
    """What a range at exactly the nominal level 1 - alpha would measure on these rows (outcomes y, volatility
    forecasts v, decision times t): the rows' own |y| / v ranked within each tercile of v, the lowest 1 - alpha
    share of each tercile covered, so its coverage is nominal overall and in every tercile; then whole horizon
    windows resampled (as every interval here). Returned: the 90% intervals of its coverage, overall and by
    tercile, and the share of draws within `band` of nominal overall and everywhere at once. The draws keep the
    coins of one window together (they move together); neighbouring windows of overlapping outcomes still share
    news, so the intervals are if anything too narrow."""
    nominal = 1.0 - alpha
    _, tercile = _terciles(v)
    inside = np.zeros(y.size, dtype=bool)
    for k in range(3):
        mine = np.flatnonzero(tercile == k)
        order = mine[np.argsort(np.abs(y[mine]) / v[mine], kind="stable")]
        inside[order[:int(round(nominal * mine.size))]] = True
    _, w = np.unique(horizon_windows(t, horizon_ms), return_inverse=True)
    n_w = int(w.max()) + 1 if w.size else 0
    cell = w * 3 + tercile
    hits = np.bincount(cell, weights=inside.astype(float), minlength=3 * n_w).reshape(n_w, 3)
    rows = np.bincount(cell, minlength=3 * n_w).reshape(n_w, 3).astype(float)
    out: dict = {"nominal": nominal, "band": band, "windows": n_w, "draws": draws, "level": level,
                 "coverage": float(inside.mean()) if y.size else None,
                 "coverage_by_vol_tercile": [float(inside[tercile == k].mean()) if (tercile == k).any() else None
                                             for k in range(3)]}
    if n_w < 2:
        return {**out, "interval": [None, None], "by_vol_tercile_interval": [[None, None]] * 3,
                "within_band_overall": None, "within_band_everywhere": None}
    k = np.random.default_rng(seed).multinomial(n_w, np.full(n_w, 1.0 / n_w), size=draws).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        overall = (k @ hits.sum(axis=1)) / (k @ rows.sum(axis=1))
        by = (k @ hits) / (k @ rows)  # a draw without a tercile's rows: NaN, never within the band
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2

    def near(x):
        return np.abs(x - nominal) <= band + 1e-12

    return {**out, "interval": [float(np.quantile(overall, lo)), float(np.quantile(overall, hi))],
            "by_vol_tercile_interval": [[float(np.nanquantile(by[:, j], lo)), float(np.nanquantile(by[:, j], hi))]
                                        if rows[:, j].any() else [None, None] for j in range(3)],
            "within_band_overall": float(np.mean(near(overall))),
            "within_band_everywhere": float(np.mean(near(overall) & near(by).all(axis=1)))}


def range_metrics(ts: np.ndarray, coin: np.ndarray, fwd: np.ndarray, ranges: dict[str, np.ndarray],
                  vol: np.ndarray, horizon_ms: int, alpha: float, seed: int = 0) -> dict:
    """Every range on the rows where all of them exist (the same rows), plus each one's own coverage where it
    exists. Terciles are of the served volatility forecast. The served range is also judged on every row it served
    (`served_own_rows`: the same rows leave out its first horizon, where the previous served range had no outcome
    yet, and young coins, which GARCH cannot fit), and against each reference on the rows both exist
    (`served_minus_reference_pairwise`)."""
    common = np.isfinite(fwd) & np.isfinite(vol)
    for r in ranges.values():
        common &= np.isfinite(r[:, 0])
    out: dict = {"alpha": alpha, "nominal": 1 - alpha, "common_rows": int(common.sum()),
                 "rows": int(ts.size), "kinds": {}}
    if SERVED in ranges:
        own = np.isfinite(ranges[SERVED][:, 0]) & np.isfinite(fwd) & np.isfinite(vol)
        if own.any():
            out["served_own_rows"], served_s = _judge(ts[own], coin[own], fwd[own], vol[own], ranges[SERVED][own, 0],
                                                      ranges[SERVED][own, 1], horizon_ms, alpha, seed)
            out["served_own_rows"]["calibrated_resolution"] = calibrated_resolution(
                ts[own], fwd[own], vol[own], horizon_ms, alpha, seed=seed)
            out["served_minus_reference_pairwise"] = {}
            for name, r in ranges.items():
                both = own & np.isfinite(r[:, 0])
                if name == SERVED or not both.any():
                    continue
                d = served_s[both[own]] - interval_score(r[both, 0], r[both, 1], fwd[both], alpha)
                out["served_minus_reference_pairwise"][name] = {
                    "rows": int(both.sum()), **window_interval(d, ts[both], horizon_ms, seed=seed)}
    if not common.any():
        out["note"] = "no row has every range"
        return out
    t, c, y, v = ts[common], coin[common], fwd[common], vol[common]
    scores = {}
    for name, r in ranges.items():
        out["kinds"][name], scores[name] = _judge(t, c, y, v, r[common, 0], r[common, 1], horizon_ms, alpha, seed)
        own = np.isfinite(r[:, 0]) & np.isfinite(fwd)
        out["kinds"][name]["rows_with_this_range"] = int(own.sum())
        out["kinds"][name]["coverage_where_it_exists"] = (
            float(_coverage(r[own, 0], r[own, 1], fwd[own]).mean()) if own.any() else None)
    if SERVED in scores:
        refs = {k: window_interval(scores[SERVED] - s, t, horizon_ms, seed=seed)["mean"] for k, s in scores.items()
                if k != SERVED}
        best = min((k for k in scores if k != SERVED), key=lambda k: out["kinds"][k]["interval_score"]["mean"],
                   default=None)
        if best is not None:
            out["best_reference"] = best
            out["served_minus_best_reference"] = window_interval(scores[SERVED] - scores[best], t, horizon_ms,
                                                                 seed=seed)
            out["served_minus_reference"] = refs
    out["vol_tercile_bounds"] = out["kinds"][next(iter(ranges))]["vol_tercile_bounds"] if ranges else []
    return out


def vol_metrics(rv: np.ndarray, forecasts: dict[str, np.ndarray], ts: np.ndarray, horizon_ms: int,
                seed: int = 0) -> dict:
    """QLIKE (with a window-bootstrap interval) and R2 of log variance per variance forecast, on the rows where
    the realized variance and every forecast exist."""
    ok = np.isfinite(rv) & (rv > 0)
    for f in forecasts.values():
        ok &= np.isfinite(f) & (f > 0)
    if not ok.any():
        return {"rows": 0}
    out: dict = {"rows": int(ok.sum()), "forecasts": {}}
    for name, f in forecasts.items():
        x = rv[ok] / f[ok]
        loss = x - np.log(x) - 1.0
        out["forecasts"][name] = {"qlike": qlike(rv[ok], f[ok]), "r2_log": r2_log(rv[ok], np.log(f[ok])),
                                  "qlike_interval": window_interval(loss, ts[ok], horizon_ms, seed=seed)["interval"]}
    if HAR in forecasts:  # each other forecast's QLIKE minus HAR's, row by row, with its window interval
        x_h = rv[ok] / forecasts[HAR][ok]
        out["minus_HAR_qlike"] = {}
        for name, f in forecasts.items():
            if name != HAR:
                x = rv[ok] / f[ok]
                d = (x - np.log(x)) - (x_h - np.log(x_h))
                out["minus_HAR_qlike"][name] = window_interval(d, ts[ok], horizon_ms, seed=seed)
    return out


def through_time(ts: np.ndarray, fwd: np.ndarray, ranges: dict[str, np.ndarray]) -> dict[str, tuple]:
    """Per range: (decision ts, inside, width) where it exists, for the coverage-and-width plot."""
    out = {}
    for name, r in ranges.items():
        ok = np.isfinite(r[:, 0]) & np.isfinite(fwd)
        out[name] = (ts[ok], _coverage(r[ok, 0], r[ok, 1], fwd[ok]), r[ok, 1] - r[ok, 0])
    return out


__all__ = ["GARCH", "HAR", "NAIVE", "PREVIOUS", "SERVED", "garch_sigma", "interval_score", "normal_range",
           "range_metrics", "through_time", "vol_metrics"]
