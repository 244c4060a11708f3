"""Point-in-time fusion: every layer per coin per timestep plus cross-coin features, as one FeatureFrame.

A row's `ts` is its decision time: the close of its latest candle. Everything in the row was
published at or before that time. A row that lacks any declared feature (warm-up, a window touching
a gap, a missing market layer) is not emitted; it is counted under its reason instead. A row outside its
decision's universe is emitted with `member` False: no decision is made on it, but it is the coin's past, read
by the sequence window of a later decision once the coin has entered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from services.features.blocks import blocks_for
from services.features.indicators import segments
from services.features.joins import join_as_of
from services.features.panel import PANEL_FIELDS, PRICE, Panel
from services.features.quality.gate import publication_lag_ms
from services.features.registry import FeatureBlock
from services.features.universe import RULES, membership, universe_at
from shared.contracts import Series, venue_of
from shared.records import Universe
from shared.settings import FeatureSet, Settings, timeframe_ms

@dataclass
class FeatureFrame:
    timeframe: str
    ts: np.ndarray  # int64 ms UTC decision times
    coin: np.ndarray  # object array of coin symbols
    X: np.ndarray  # float32, rows x features
    names: list[str]
    declared: dict[str, object] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)
    rows_per_coin: dict[str, int] = field(default_factory=dict)
    # Extra per-row values some consumers need but the model must not see (e.g. the close at ts).
    close: np.ndarray | None = None
    # The universe of the frame's latest decision.
    universe: Universe | None = None
    # Per row: inside its decision's universe (None: every row is). Training, prediction, drift and evaluation
    # decide on member rows only; sequence windows read every row of the coin.
    member: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def members(self) -> np.ndarray:
        """Per row, whether it is a decision of the universe (bool)."""
        return np.ones(len(self), dtype=bool) if self.member is None else self.member

    def keep(self, mask: np.ndarray) -> None:
        """Only the rows where `mask` holds."""
        self.ts, self.coin, self.X = self.ts[mask], self.coin[mask], self.X[mask]
        if self.close is not None:
            self.close = self.close[mask]
        if self.member is not None:
            self.member = self.member[mask]


def coin_of(symbol: str) -> tuple[str, str]:
    """'BTC-USD' -> ('BTC', 'USD'); a perpetual 'BTC-USDT:USDT' -> ('BTC', 'USDT') (its venue tells it apart)."""
    base, _, quote = symbol.partition("-")
    return base, quote.partition(":")[0]


def build_panel(clean: dict[str, Series], unavailable: dict[str, list[str]], timeframe: str,
                settings: Settings) -> Panel:
    """One price series per coin (by quote preference), aligned on the timeframe grid; nothing is filled."""
    pref = settings.features.quote_preference
    chosen: dict[str, Series] = {}
    notes: dict[str, str] = {}
    for _key, s in sorted(clean.items()):
        if s.layer != "ohlcv" or s.timeframe != timeframe or len(s) == 0:
            continue
        base, quote = coin_of(s.symbol)
        rank = pref.index(quote) if quote in pref else len(pref)
        if base in chosen:
            other = chosen[base]
            other_rank = pref.index(coin_of(other.symbol)[1]) if coin_of(other.symbol)[1] in pref else len(pref)
            if other_rank <= rank:
                notes[s.key] = f"not used: {other.key} is preferred for {base}"
                continue
            notes[other.key] = f"not used: {s.key} is preferred for {base}"
        chosen[base] = s
    step = timeframe_ms(timeframe)
    coins = sorted(chosen)
    venue = "+".join(sorted({venue_of(s.source, s.symbol) for s in chosen.values()}))
    if not coins:
        return Panel(timeframe, np.zeros(0, dtype=np.int64), [], {f: np.zeros((0, 0)) for f in PANEL_FIELDS}, {}, notes)
    lo = min(int(chosen[c].ts[0]) for c in coins)
    hi = max(int(chosen[c].ts[-1]) for c in coins)
    lo -= lo % step  # grid aligned to the timeframe
    grid = np.arange(lo, hi + step, step, dtype=np.int64)
    # Column-major: per-coin work reads and writes contiguous columns.
    fields = {f: np.full((grid.size, len(coins)), np.nan, order="F") for f in PANEL_FIELDS}
    unavail: dict[str, set[str]] = {}
    for j, c in enumerate(coins):
        s = chosen[c]
        on_grid = (s.ts - lo) % step == 0
        idx = ((s.ts[on_grid] - lo) // step).astype(np.int64)
        for f in PANEL_FIELDS:
            if f in s.fields:
                fields[f][idx, j] = s.fields[f][on_grid]
        unavail[c] = set(unavailable.get(s.key, []))
        if not on_grid.all():
            notes[s.key] = f"{int((~on_grid).sum())} candles off the {timeframe} grid not used"
    return Panel(timeframe, grid, coins, fields, unavail, notes, venue)


def _coin_layers(clean: dict[str, Series], coin: str) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    """This coin's trades and order-book series (any quote), as (timestamps, fields)."""
    found: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    for s in clean.values():
        if s.layer in ("trades", "orderbook") and coin_of(s.symbol)[0] == coin and len(s):
            found[s.layer] = (s.ts, s.fields)
    return found


def _daily_grid(series: Series) -> tuple[np.ndarray, np.ndarray]:
    """A daily series on its own day grid, NaN on missing days (so a missing day stays missing)."""
    day = timeframe_ms("1d")
    lo = int(series.ts[0]) - int(series.ts[0]) % day
    grid = np.arange(lo, int(series.ts[-1]) + day, day, dtype=np.int64)
    v = np.full(grid.size, np.nan)
    idx = (series.ts - lo) // day
    keep = (series.ts - lo) % day == 0
    v[idx[keep]] = series.fields["value"][keep]
    return grid, v


def _market_features(block: FeatureBlock, clean: dict[str, Series], decision_ts: np.ndarray, fs: FeatureSet,
                     settings: Settings) -> dict[str, np.ndarray]:
    """Run a market block on each layer series' own day grid, then join as-of at each decision time."""
    quality = settings.quality
    wanted = [k for k in clean if k.split("/")[0] == block.layer]
    daily: dict[str, np.ndarray] = {}
    grids: dict[str, np.ndarray] = {}
    for key in wanted:
        s = clean[key]
        if len(s) == 0 or "value" not in s.fields:
            continue
        g, v = _daily_grid(s)
        grids[key], daily[key] = g, v
    names = block.outputs(fs, settings.features)
    out = {n: np.full(decision_ts.size, np.nan) for n in names}
    if not daily:
        return out
    # Blocks may combine series only on a shared grid: align all inputs of this block on one union grid.
    lo = min(g[0] for g in grids.values())
    hi = max(g[-1] for g in grids.values())
    day = timeframe_ms("1d")
    grid = np.arange(lo, hi + day, day, dtype=np.int64)
    aligned = {}
    for key, v in daily.items():
        a = np.full(grid.size, np.nan)
        a[((grids[key] - lo) // day).astype(np.int64)] = v
        aligned[key] = a
    values = block.fn(aligned, fs, settings.features)
    lag = publication_lag_ms(block.layer, "1d", quality)
    max_age = timeframe_ms(fs.market_max_age)
    for name, v in values.items():
        out[name] = join_as_of(grid + lag, v, decision_ts, max_age)
    return out


def build_frame(clean: dict[str, Series], unavailable: dict[str, list[str]], timeframe: str,
                settings: Settings) -> FeatureFrame:
    fst = settings.features
    if timeframe not in fst.sets:
        raise ValueError(f"no feature set declared for timeframe {timeframe!r}; declared: {sorted(fst.sets)}")
    fs = fst.sets[timeframe]
    blocks = blocks_for(fs)
    panel = build_panel(clean, unavailable, timeframe, settings)
    T, N = panel.fields["close"].shape
    names = [n for b in blocks for n in b.outputs(fs, fst)]
    declared = {"layers": list(fs.layers), "excluded_layers": dict(fs.excluded_layers), "series_notes": dict(panel.notes)}
    if N == 0:
        # No usable price series for this timeframe at this as-of (the quality report says why).
        return FeatureFrame(timeframe, np.zeros(0, np.int64), np.zeros(0, object), np.zeros((0, len(names)), np.float32),
                            names, declared, {}, {}, np.zeros(0))
    step = timeframe_ms(timeframe)
    decision = panel.open_ts + step
    feats: dict[str, np.ndarray] = {}
    layer_of: dict[str, str] = {}
    for b in blocks:
        for n in b.outputs(fs, fst):
            layer_of[n] = b.layer
            if b.kind in ("coin", "coin_join"):
                # float32 like the frame itself; coin blocks compute in float64 and store rounded once.
                feats[n] = np.full((T, N), np.nan, dtype=np.float32, order="F")

    has_price = np.ones((T, N), dtype=bool, order="F")
    for f in PRICE:
        has_price &= np.isfinite(panel.fields[f])
    coin_blocks = [b for b in blocks if b.kind == "coin"]
    for j, coin in enumerate(panel.coins):
        for b in coin_blocks:
            if any(f in panel.unavailable.get(coin, set()) for f in b.inputs):
                continue  # e.g. volume the source does not publish: these rows drop as volume_unavailable
            valid = has_price[:, j].copy()
            for f in b.inputs:
                valid &= np.isfinite(panel.fields[f][:, j])
            for a, z in segments(valid):
                seg = {f: panel.fields[f][a:z, j] for f in b.inputs}
                for n, v in b.fn(seg, fs, fst).items():
                    feats[n][a:z, j] = v

    join_blocks = [b for b in blocks if b.kind == "coin_join"]
    if join_blocks:
        for j, coin in enumerate(panel.coins):
            layers = _coin_layers(clean, coin)
            for b in join_blocks:
                for n, v in b.fn(layers, decision, step, fs, fst).items():
                    feats[n][:, j] = v
    for b in blocks:
        if b.kind == "market":
            for n, v in _market_features(b, clean, decision, fs, settings).items():
                feats[n] = np.broadcast_to(v[:, None], (T, N))
    for b in blocks:
        if b.kind == "cross":
            feats.update(b.fn(feats, panel.coins, fs, fst))

    member, rule = membership(panel, settings.universe)
    frame = _stack(panel, feats, names, layer_of, has_price, member, decision, fs, settings, declared)
    for code, name in enumerate(RULES):
        if code and (n := int((has_price & (rule == code)).sum())):
            frame.excluded[f"universe_{name}"] = n
    frame.universe = universe_at(panel, member, rule, T - 1, panel.venue)
    return frame


def _stack(panel: Panel, feats: dict[str, np.ndarray], names: list[str], layer_of: dict[str, str],
           has_price: np.ndarray, member: np.ndarray, decision: np.ndarray, fs: FeatureSet, settings: Settings,
           declared: dict) -> FeatureFrame:
    T, N = has_price.shape
    complete = has_price.copy()  # rows outside the universe are kept as history (member False)
    reasons = np.zeros((T, N), dtype=np.int8)  # 0: kept or no candle; k: index into reason_names
    reason_names = ["", "warmup", "gap_window"]
    layer_ok: dict[str, np.ndarray] = {}
    for n in names:
        f = feats[n]
        # Market-wide features are one column broadcast over coins: test the column once.
        ok = np.broadcast_to(np.isfinite(f[:, :1]), (T, N)) if f.strides[1] == 0 else np.isfinite(f)
        if layer_of[n] in layer_ok:
            layer_ok[layer_of[n]] &= ok
        else:
            layer_ok[layer_of[n]] = np.array(ok, order="F")
    # Price-window failures split into the start of a coin's history and windows touching a gap.
    first = np.argmax(has_price, axis=0) if T else np.zeros(N, dtype=np.int64)
    lookback = max(b.lookback(fs, settings.features) for b in blocks_for(fs) if b.layer == "price")
    in_warmup = np.arange(T)[:, None] < (first[None, :] + lookback)
    for layer in fs.layers:
        bad = complete & ~layer_ok.get(layer, np.ones((T, N), bool))
        if layer == "price":
            reasons[bad & in_warmup] = 1
            reasons[bad & ~in_warmup] = 2
        else:
            code = f"{layer}_unavailable" if layer == "volume" else f"{layer}_missing"
            if layer == "volume":
                # Volume the source does not publish vs. a volume window touching a gap or a zero.
                unpub = np.asarray([("volume" in panel.unavailable.get(c, set())) for c in panel.coins], bool)
                for code_i, mask in (("volume_unavailable", unpub[None, :] & bad), ("volume_window", ~unpub[None, :] & bad)):
                    if code_i not in reason_names:
                        reason_names.append(code_i)
                    reasons[mask & (reasons == 0)] = reason_names.index(code_i)
            else:
                if code not in reason_names:
                    reason_names.append(code)
                reasons[bad & (reasons == 0)] = reason_names.index(code)
        complete &= ~bad
    rows, cols = np.nonzero(complete)  # row-major: ordered by time, then coin
    flat = rows * N + cols if N else rows  # positions in a C-order T x N array
    X = np.empty((rows.size, len(names)), dtype=np.float32, order="F")
    for k, n in enumerate(names):
        f = feats[n]
        if f.strides[1] == 0:
            X[:, k] = f[:, 0][rows]
        else:
            X[:, k] = np.ravel(f, order="K")[flat] if f.flags.c_contiguous else f.ravel(order="F")[cols * T + rows]
    # Reasons are counted for the universe's rows only (the rest are counted under their universe rule).
    counts = np.bincount(reasons[has_price & member].ravel(), minlength=len(reason_names))
    excluded = {reason_names[i]: int(c) for i, c in enumerate(counts) if i > 0 and c > 0}
    coins = np.asarray(panel.coins, dtype=object)
    in_universe = member[rows, cols]
    per_coin = np.bincount(cols[in_universe], minlength=N)
    return FeatureFrame(
        timeframe=panel.timeframe,
        ts=decision[rows],
        coin=coins[cols] if N else np.zeros(0, dtype=object),
        X=X,
        names=names,
        declared=declared,
        excluded=excluded,
        rows_per_coin={c: int(per_coin[j]) for j, c in enumerate(panel.coins)},
        close=panel.fields["close"][rows, cols],
        member=in_universe,
    )
