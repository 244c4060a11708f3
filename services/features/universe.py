"""Which coins a decision considers: its universe, chosen at each decision time from what was known at that time.

A coin is a member at decision time t (the close of candle i) when, from candles up to i only:
- it has traded for at least `min_history` bars since its first candle (its listing, as far as the data shows; a
  coin already trading on the first bar read was listed before it);
- its median quote volume over the last `liquidity_window` bars is at least `min_quote_volume` (judged only where
  the source publishes volume: where it does not, the coin is kept and the report says liquidity was not judged);
- it is not a stablecoin by price behaviour: some close of the window lies more than `stable_band` from the
  window's median close (a pegged coin never does), never by a list of names;
- it is among the `max_coins` most liquid of those.
A panel is one venue's prices (services/ingest/sources/layouts.py), so a universe is one venue's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from services.features.panel import Panel
from shared.records import Universe
from shared.settings import UniverseSettings

# Codes of the rule that kept a coin out (0: a member, or no candle at that time).
RULES = ("", "listing_age", "illiquid", "stablecoin", "max_coins")


def membership(panel: Panel, settings: UniverseSettings) -> tuple[np.ndarray, np.ndarray]:
    """(member, rule): T x N booleans and the code (index into RULES) of the first rule that excluded each cell."""
    tf = panel.timeframe
    close = panel.fields["close"]
    T, N = close.shape
    rule = np.zeros((T, N), np.int8)
    if T == 0 or N == 0:
        return np.zeros((T, N), bool), rule
    traded = np.isfinite(close)
    listed = np.maximum.accumulate(traded, axis=0)
    first = np.argmax(traded, axis=0)
    age = np.arange(T)[:, None] - first[None, :] + 1  # bars since the first candle, inclusive
    # A coin trading on the panel's first bar was listed before what was read: its age is at least the span's.
    young = listed & (age < settings.min_history[tf]) & (first > 0)[None, :]

    window = settings.liquidity_window[tf]
    # A peg shows over a day of hours or half a month of days (fewer closes: not judged, not called a stablecoin).
    min_periods = max(1, min(window // 2, 24))
    # Over the volumes of the window that were read (a new listing is held back by its age, not here).
    liquidity = _rolling(panel.quote_volume(), window, 1, "median")
    judged = np.asarray([("volume" not in panel.unavailable.get(c, set())) for c in panel.coins], bool)[None, :]
    illiquid = judged & ~(liquidity >= settings.min_quote_volume[tf])  # NaN (too few volumes yet) is not liquid

    frame = pd.DataFrame(close)
    median = frame.rolling(window, min_periods=min_periods).median().to_numpy()
    spread = frame.rolling(window, min_periods=min_periods)
    top, bottom = spread.max().to_numpy(), spread.min().to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        stable = (top / median - 1 <= settings.stable_band) & (1 - bottom / median <= settings.stable_band)

    for code, cells in ((1, young), (2, illiquid), (3, stable)):
        rule[(rule == 0) & traded & cells] = code
    member = traded & (rule == 0)
    # The most liquid first (liquidity not judged ranks after the judged ones, then by name).
    order_key = np.where(np.isfinite(liquidity) & judged, -liquidity, np.inf)
    names = np.argsort(np.asarray(panel.coins, dtype=object))
    rank_in_names = np.empty(N, np.int64)
    rank_in_names[names] = np.arange(N)
    too_many = member.sum(axis=1) > settings.max_coins
    for i in np.flatnonzero(too_many):
        candidates = np.flatnonzero(member[i])
        keep = candidates[np.lexsort((rank_in_names[candidates], order_key[i, candidates]))][:settings.max_coins]
        out = np.setdiff1d(candidates, keep)
        member[i, out] = False
        rule[i, out] = 4
    return member, rule


def _rolling(x: np.ndarray, window: int, min_periods: int, how: str) -> np.ndarray:
    return getattr(pd.DataFrame(x).rolling(window, min_periods=min_periods), how)().to_numpy()


def universe_at(panel: Panel, member: np.ndarray, rule: np.ndarray, i: int, venue: str) -> Universe:
    """The universe of the decision at the close of candle i: its members, and the rule that left out each other
    coin that had traded by then."""
    step = int(panel.open_ts[1] - panel.open_ts[0]) if panel.open_ts.size > 1 else 0
    coins = np.asarray(panel.coins, dtype=object)
    listed = np.isfinite(panel.fields["close"][: i + 1]).any(axis=0)
    excluded = {str(c): RULES[int(r)] for c, r, m, seen in zip(coins, rule[i], member[i], listed, strict=True)
                if seen and not m and r}
    stopped = {str(c): "no candle at this time" for c, m, seen, r in zip(coins, member[i], listed, rule[i], strict=True)
               if seen and not m and not r}
    return Universe(timeframe=panel.timeframe, venue=venue, decision_ms=int(panel.open_ts[i]) + step,
                    members=sorted(str(c) for c in coins[member[i]]), excluded=dict(sorted({**excluded, **stopped}.items())))
