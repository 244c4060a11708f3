"""Cross-sectional evaluation of a score that ranks the coins of each decision (which coins beat the others), in the
conventions quant users read (Qlib, Alphalens): rank IC per decision time, its mean with a block-bootstrap interval
over non-overlapping horizon windows, ICIR, IC by month, quantile mean forward returns, the top-minus-bottom
spread and the turnover of the top and bottom quantiles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from services.risk.guards import impact_bps, liquidity  # noqa: F401 - the evaluation reads liquidity here
from shared.ranking import MIN_COINS, Decisions, decisions, rank_ic, ranks, window_interval  # noqa: F401 - the evaluation's names too

def buckets(values: np.ndarray, q: int) -> np.ndarray:
    """Quantile 0..q-1 of each value by its rank within the group (equal counts when q divides the group)."""
    r = ranks(values)
    return np.minimum((r * q / values.size).astype(np.int64), q - 1)


def quantile_returns(d: Decisions, score: np.ndarray, fwd: np.ndarray, q: int) -> np.ndarray:
    """(times, q): the mean forward return of each score quantile at each decision time, lowest score first."""
    out = np.full((len(d.groups), q), np.nan)
    for k, g in enumerate(d.groups):
        b = buckets(score[g], q)
        sums = np.bincount(b, weights=fwd[g], minlength=q)
        counts = np.bincount(b, minlength=q)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[k] = sums / counts
    return out


def turnover(d: Decisions, coin: np.ndarray, score: np.ndarray, q: int) -> dict[str, float | None]:
    """Mean share of the top (and bottom) quantile's coins that were not in it at the previous decision time."""
    shares: dict[str, list[float]] = {"top": [], "bottom": []}
    previous: dict[str, set] | None = None
    for g in d.groups:
        b = buckets(score[g], q)
        now = {"top": set(coin[g][b == q - 1].tolist()), "bottom": set(coin[g][b == 0].tolist())}
        if previous is not None:
            for side in shares:
                if now[side]:
                    shares[side].append(len(now[side] - previous[side]) / len(now[side]))
        previous = now
    return {side: float(np.mean(v)) if v else None for side, v in shares.items()}


def by_month(values: np.ndarray, times: np.ndarray) -> dict[str, float]:
    months = [datetime.fromtimestamp(t / 1000, tz=timezone.utc).strftime("%Y-%m") for t in times.tolist()]
    out: dict[str, list[float]] = {}
    for m, v in zip(months, values.tolist(), strict=True):
        if np.isfinite(v):
            out.setdefault(m, []).append(v)
    return {m: float(np.mean(v)) for m, v in sorted(out.items())}


def report(ts: np.ndarray, coin: np.ndarray, score: np.ndarray, fwd: np.ndarray, horizon_ms: int, *,
           seed: int = 0, min_coins: int = MIN_COINS, d: Decisions | None = None) -> dict:
    """Every cross-sectional figure of one score on one horizon's test rows (forward returns in log terms);
    `d`: its decisions, when the caller already grouped them."""
    d = decisions(ts, score, fwd, min_coins) if d is None else d
    if not d.groups:
        return {"decision_times": 0, "note": f"no decision time ranks {min_coins} or more coins"}
    ic = rank_ic(d, score, fwd)
    finite = ic[np.isfinite(ic)]
    constant = sum(int(np.ptp(score[g]) == 0) for g in d.groups)
    if constant == len(d.groups):
        # A forecast without demonstrated skill serves its base rate to every coin: it ranks nothing.
        return {"decision_times": len(d.groups), "constant_score_decisions": constant,
                "note": "the score is the same for every coin at every decision time: it ranks nothing"}
    quint, dec = quantile_returns(d, score, fwd, 5), quantile_returns(d, score, fwd, 10)
    spread = dec[:, -1] - dec[:, 0]
    return {
        "decision_times": len(d.groups),
        "coins_per_decision": float(np.mean([g.size for g in d.groups])),
        # Decision times where every coin had the same score (no ranking: their IC is undefined, not zero).
        "constant_score_decisions": constant,
        "ic": window_interval(ic, d.times, horizon_ms, seed=seed),
        "ic_per_decision_mean": float(finite.mean()) if finite.size else None,
        "icir": float(finite.mean() / finite.std()) if finite.size > 1 and finite.std() > 0 else None,
        "ic_positive_share": float((finite > 0).mean()) if finite.size else None,
        "ic_by_month": by_month(ic, d.times),
        "quintile_mean_fwd": np.nanmean(quint, axis=0).tolist(),
        "decile_mean_fwd": np.nanmean(dec, axis=0).tolist(),
        "top_minus_bottom": window_interval(spread, d.times, horizon_ms, seed=seed),
        "turnover_decile": turnover(d, coin, score, 10),
        # Decisions in one horizon window (one bar apart): the spread cumulated over non-overlapping windows
        # takes one decision in this many.
        "decisions_per_window": int(max(1, round(horizon_ms / np.median(np.diff(d.times))))) if len(d.times) > 1
        else 1,
        # Per decision time, for the plots.
        "series": {"ts": d.times.tolist(), "ic": ic.tolist(), "spread": spread.tolist()},
    }


def past_return(close: np.ndarray, open_ts0: int, step: int, ts: np.ndarray, col: np.ndarray, start_bars: int,
                end_bars: int) -> np.ndarray:
    """Log return from `start_bars` to `end_bars` bars before each row's decision (start > end >= 0), from a panel's
    closes (times x coins); NaN where the panel does not reach."""
    a = (ts - step - open_ts0) // step  # the panel row of the candle that closes at the decision
    i, j = a - start_bars, a - end_bars
    ok = (i >= 0) & (j < close.shape[0]) & (col >= 0)
    out = np.full(ts.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[ok] = np.log(close[j[ok], col[ok]] / close[i[ok], col[ok]])
    return out


def reference_scores(close: np.ndarray, coins: list[str], open_ts0: int, step: int, ts: np.ndarray,
                     coin: np.ndarray) -> dict[str, np.ndarray]:
    """The field's plain cross-sectional references on the same rows: momentum from four weeks to one week before
    the decision (skipping the last week, where short-term reversal lives), and short-term reversal (minus the last
    day's return)."""
    index = {c: k for k, c in enumerate(coins)}
    col = np.asarray([index.get(c, -1) for c in coin.tolist()], dtype=np.int64)
    week, day = 7 * 86_400_000 // step, max(1, 86_400_000 // step)
    return {"momentum 4w-1w": past_return(close, open_ts0, step, ts, col, 4 * week, week),
            "reversal 1d": -past_return(close, open_ts0, step, ts, col, day, 0)}


@dataclass
class Costs:
    """What a long-short book pays: taker fees per side on traded notional, the square-root impact model of the
    risk service (half spread + k * daily volatility * sqrt(notional / average daily quote volume)) per name, and
    perpetual funding (an assumption printed with the result: no funding rates are recorded in the lake). The
    defaults are those of settings.risk.basket."""

    fee_bps: float = 5.0
    half_spread_bps: float = 5.0
    impact_k: float = 1.0
    funding_long_bps_per_day: float = 3.0  # paid by the long leg
    funding_short_bps_per_day: float = 3.0  # received by the short leg
    capital: float = 100_000.0  # per leg, in quote currency

    @classmethod
    def of(cls, basket) -> Costs:
        """The costs of settings.risk.basket."""
        return cls(basket.taker_fee_bps, basket.half_spread_bps, basket.impact_k, basket.funding_long_bps_per_day,
                   basket.funding_short_bps_per_day, basket.capital_per_leg)

    def funding_said(self) -> str:
        net = self.funding_long_bps_per_day - self.funding_short_bps_per_day
        return (f"assumed: the long leg pays {self.funding_long_bps_per_day:g} bps a day, the short leg receives "
                f"{self.funding_short_bps_per_day:g}: {net:+g} bps a day net; no funding rates are recorded in the lake")


def long_short(d: Decisions, coin: np.ndarray, score: np.ndarray, fwd: np.ndarray, adv_quote: np.ndarray,
               daily_vol: np.ndarray, every: int, costs: Costs, q: int = 10,
               days: float = 0.0) -> tuple[np.ndarray, dict]:
    """Long the top score quantile and short the bottom, equal weight, opened at one decision in `every` (one per
    non-overlapping horizon window) and held for the horizon. Per window, as returns on one leg's capital: the
    gross spread of simple returns, the fees on what changed since the previous window (a name that changed is
    sold and its replacement bought: traded twice; once when the book opens), the impact of trading it, and the
    funding of `days` held (the long leg pays its rate, the short leg receives its own).
    Returns the decision times of the windows and their per-window arrays."""
    simple = np.expm1(fwd)
    times, rows = [], []
    held: dict[str, set] = {"long": set(), "short": set()}
    for k in range(0, len(d.groups), max(1, every)):
        g = d.groups[k]
        if np.ptp(score[g]) == 0:
            continue
        b = buckets(score[g], q)
        legs = {"long": g[b == q - 1], "short": g[b == 0]}
        if not legs["long"].size or not legs["short"].size:
            continue  # ties leave a leg empty: no book at this decision
        gross = float(simple[legs["long"]].mean() - simple[legs["short"]].mean())
        fee = impact = 0.0
        for side, idx in legs.items():
            names = coin[idx]
            entering = ~np.isin(names, list(held[side]))
            times_traded = 2 if held[side] else 1
            fee += costs.fee_bps / 1e4 * entering.mean() * times_traded
            notional = costs.capital / idx.size
            with np.errstate(invalid="ignore", divide="ignore"):
                bps = impact_bps(notional, adv_quote[idx[entering]], daily_vol[idx[entering]], costs.half_spread_bps,
                                 costs.impact_k)
            impact += float(np.nansum(bps)) / 1e4 * notional * times_traded / costs.capital
            held[side] = set(names.tolist())
        times.append(d.times[k])
        rows.append((gross, fee, impact))
    arrays = {name: np.asarray(col, dtype=float) for name, col in zip(("gross", "fees", "impact"), zip(*rows, strict=True))} \
        if rows else {"gross": np.zeros(0), "fees": np.zeros(0), "impact": np.zeros(0)}
    arrays["funding"] = np.full(arrays["gross"].size,
                                (costs.funding_long_bps_per_day - costs.funding_short_bps_per_day) / 1e4 * days)
    arrays["net"] = arrays["gross"] - arrays["fees"] - arrays["impact"] - arrays["funding"]
    return np.asarray(times, dtype=np.int64), arrays


def long_short_report(d: Decisions, coin: np.ndarray, score: np.ndarray, fwd: np.ndarray, adv_quote: np.ndarray,
                      daily_vol: np.ndarray, horizon_ms: int, every: int, costs: Costs, *, seed: int = 0) -> dict:
    """The long-short book's gross and net spread per window with intervals, Sharpe, drawdown, turnover costs and
    its capacity: the capital per leg at which impact eats half the gross spread."""
    times, a = long_short(d, coin, score, fwd, adv_quote, daily_vol, every, costs, days=horizon_ms / 86_400_000)
    if not times.size:
        return {"windows": 0, "note": "no decision time with a ranking score"}
    per_year = 365.25 * 86_400_000 / max(horizon_ms, 1)
    net = a["net"]
    curve = np.cumsum(net)
    out = {"windows": int(times.size), "capital_per_leg": costs.capital, "fee_bps_per_side": costs.fee_bps,
           "impact_model": f"half spread {costs.half_spread_bps:g} bps + {costs.impact_k:g} x daily volatility x "
                           "sqrt(notional / 30-day average daily quote volume) (services/risk/guards.py)",
           "funding": costs.funding_said(), "funding_mean": float(a["funding"].mean()),
           "gross": window_interval(a["gross"], times, horizon_ms, seed=seed),
           "net": window_interval(net, times, horizon_ms, seed=seed),
           "fees_mean": float(a["fees"].mean()), "impact_mean": float(a["impact"].mean()),
           "sharpe_net": float(net.mean() / net.std() * np.sqrt(per_year)) if net.size > 1 and net.std() > 0 else None,
           "max_drawdown_net": float(np.max(np.maximum.accumulate(np.r_[0, curve]) - np.r_[0, curve])),
           "series": {"ts": times.tolist(), "net": net.tolist()}}
    out["capacity_per_leg"] = capacity(d, coin, score, fwd, adv_quote, daily_vol, every, costs, float(a["gross"].mean()))
    return out


def capacity(d: Decisions, coin: np.ndarray, score: np.ndarray, fwd: np.ndarray, adv_quote: np.ndarray,
             daily_vol: np.ndarray, every: int, costs: Costs, gross: float) -> float | None:
    """The capital per leg at which the impact model's mean cost reaches half the mean gross spread (0 when its
    half spread alone does; None without a positive spread)."""
    if not gross > 0:
        return None

    def impact(capital: float) -> float:
        _, b = long_short(d, coin, score, fwd, adv_quote, daily_vol, every,
                          Costs(**{**costs.__dict__, "capital": capital}))
        return float(b["impact"].mean())

    lo, hi = 1.0, 1e13
    if impact(lo) >= gross / 2:
        return 0.0
    for _ in range(80):  # impact grows with capital: bisect on a log scale
        mid = float(np.sqrt(lo * hi))
        lo, hi = (mid, hi) if impact(mid) < gross / 2 else (lo, mid)
    return lo
