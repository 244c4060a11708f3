"""The registered feature blocks: per-coin price and volume, market-wide sentiment and on-chain, cross-coin."""

from __future__ import annotations

import numpy as np

from services.features import indicators as ind
from services.features.joins import join_as_of
from services.features.registry import REGISTRY, FeatureBlock, feature_block
from shared.rolling import (
    log_return,
    rolling_beta_corr,
    rolling_mean,
    rolling_std,
    rolling_zscore,
)
from shared.settings import FeatureSet, FeatureSettings

# ---- per coin (1-D arrays of one contiguous history) ------------------------------------------------


@feature_block("returns", kind="coin", layer="price", inputs=("close",),
               lookback=lambda fs, fst: max(fs.return_lookbacks),
               outputs=lambda fs, fst: [f"ret_{k}" for k in fs.return_lookbacks],
               glossary={r"ret_(\d+)": 'log return of the close over the last {0} bars'})
def returns(seg: dict[str, np.ndarray], fs: FeatureSet, fst: FeatureSettings) -> dict[str, np.ndarray]:
    return {f"ret_{k}": log_return(seg["close"], k) for k in fs.return_lookbacks}


@feature_block("volatility", kind="coin", layer="price", inputs=("high", "low", "close"),
               lookback=lambda fs, fst: max(max(fs.vol_windows) + 1, fst.atr_period + 1, fst.parkinson_window),
               outputs=lambda fs, fst: [f"rvol_{w}" for w in fs.vol_windows] + ["atr", "parkinson"],
               glossary={r"rvol_(\d+)": 'standard deviation of one-bar log returns over the last {0} bars',
                         'atr': 'average true range as a share of the close',
                         'parkinson': "Parkinson volatility from each bar's high and low"})
def volatility(seg: dict[str, np.ndarray], fs: FeatureSet, fst: FeatureSettings) -> dict[str, np.ndarray]:
    r1 = log_return(seg["close"], 1)
    out = {f"rvol_{w}": rolling_std(r1, w) for w in fs.vol_windows}
    out["atr"] = ind.atr_ratio(seg["high"], seg["low"], seg["close"], fst.atr_period)
    out["parkinson"] = ind.parkinson(seg["high"], seg["low"], fst.parkinson_window)
    return out


@feature_block("har", kind="coin", layer="price", inputs=("high", "low"),
               lookback=lambda fs, fst: max(fst.har_windows),
               outputs=lambda fs, fst: [f"har_{w}" for w in fst.har_windows]
               + [f"har_long_{w}" for w in fst.har_long_windows],
               glossary={r"har_(\d+)": 'mean Parkinson variance of the last {0} bars (a HAR term of the volatility forecast)',
                         r"har_long_(\d+)": "mean Parkinson variance of up to the last {0} bars (the coin's long-run "
                                             "level; fewer bars for a younger coin)"})
def har(seg: dict[str, np.ndarray], fs: FeatureSet, fst: FeatureSettings) -> dict[str, np.ndarray]:
    out = {f"har_{w}": v for w, v in ind.har_terms(seg["high"], seg["low"], fst.har_windows).items()}
    long = ind.har_long_terms(seg["high"], seg["low"], fst.har_long_windows, max(fst.har_windows))
    return out | {f"har_long_{w}": v for w, v in long.items()}


@feature_block("oscillators", kind="coin", layer="price", inputs=("high", "low", "close"),
               lookback=lambda fs, fst: max(fst.macd[1] + fst.macd[2], fst.rsi_period + 1, sum(fst.stoch), fst.bollinger[0]),
               outputs=lambda fs, fst: ["rsi", "macd", "macd_signal", "macd_hist", "stoch_k", "stoch_d", "bb_pctb", "bb_width"],
               glossary={'rsi': 'relative strength index (0 to 100)',
                         'macd': 'MACD line: fast minus slow moving average of the close, as a share of the close',
                         'macd_signal': "the MACD line's signal (its own moving average)",
                         'macd_hist': 'MACD line minus its signal',
                         'stoch_k': 'stochastic %K: where the close sits in the recent high-low range',
                         'stoch_d': 'stochastic %D: %K smoothed',
                         'bb_pctb': 'Bollinger %B: where the close sits between the lower (0) and upper (1) band',
                         'bb_width': 'Bollinger band width as a share of the middle band'})
def oscillators(seg: dict[str, np.ndarray], fs: FeatureSet, fst: FeatureSettings) -> dict[str, np.ndarray]:
    h, l, c = seg["high"], seg["low"], seg["close"]
    line, sig, hist = ind.macd(c, *fst.macd)
    k, d = ind.stochastic(h, l, c, *fst.stoch)
    pctb, width = ind.bollinger(c, *fst.bollinger)
    return {"rsi": ind.rsi(c, fst.rsi_period), "macd": line, "macd_signal": sig, "macd_hist": hist,
            "stoch_k": k, "stoch_d": d, "bb_pctb": pctb, "bb_width": width}


@feature_block("volume", kind="coin", layer="volume", inputs=("close", "volume"),
               lookback=lambda fs, fst: fs.zscore_window + 1,
               outputs=lambda fs, fst: ["volume_z", "volume_rel", "obv_flow"],
               glossary={'volume_z': 'z-score of log volume against its trailing window',
                         'volume_rel': 'log volume minus its trailing mean',
                         'obv_flow': "on-balance volume flow: volume signed by the close's direction, over the trailing window"})
def volume(seg: dict[str, np.ndarray], fs: FeatureSet, fst: FeatureSettings) -> dict[str, np.ndarray]:
    v = seg["volume"]
    with np.errstate(divide="ignore"):
        lv = np.where(v > 0, np.log(np.where(v > 0, v, 1.0)), np.nan)  # zero volume has no log: the row drops
    w = fs.zscore_window
    return {
        "volume_z": rolling_zscore(lv, w),
        # Today's volume against the trailing mean, in logs: scale-free, so units (base or quote) do not matter.
        "volume_rel": lv - rolling_mean(lv, w),
        "obv_flow": ind.obv_flow(seg["close"], v, w),
    }


@feature_block("liquidity", kind="coin_join", layer="liquidity", inputs=("trades/*", "orderbook/snapshot/*"),
               lookback=lambda fs, fst: 1,
               outputs=lambda fs, fst: ["whale_share", "whale_buy_share", "spread_bps", "depth_imbalance"],
               glossary={'whale_share': "share of the bar's traded notional in large (whale) trades",
                         'whale_buy_share': 'share of the whale notional that bought',
                         'spread_bps': 'order book bid-ask spread in basis points',
                         'depth_imbalance': 'order book depth imbalance: (bids - asks) / (bids + asks)'})
def liquidity(layers: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]], decision: np.ndarray, step: int,
              fs: FeatureSet, fst: FeatureSettings) -> dict[str, np.ndarray]:
    """Whale-trade share of the bar (trades bucketed on the same timeframe) and the latest order book.

    `layers` maps "trades" / "orderbook" to (timestamps, fields) of this coin. A bar without its trade
    bucket, or without a book snapshot taken within one bar before the decision time, has no value.
    """
    out = {n: np.full(decision.size, np.nan) for n in ("whale_share", "whale_buy_share", "spread_bps", "depth_imbalance")}
    if "trades" in layers:
        ts, f = layers["trades"]
        # A trade bucket [open, open + step) is complete at its close: match it to that decision time.
        idx = np.searchsorted(decision, ts + step)
        hit = (idx < decision.size) & (decision[np.clip(idx, 0, decision.size - 1)] == ts + step)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(f["notional"] > 0, f["whale_notional"] / f["notional"], np.nan)
            buy = np.where(f["whale_notional"] > 0, f["whale_buy_notional"] / f["whale_notional"], 0.0)
        out["whale_share"][idx[hit]] = share[hit]
        out["whale_buy_share"][idx[hit]] = np.where(np.isfinite(share[hit]), buy[hit], np.nan)
    if "orderbook" in layers:
        ts, f = layers["orderbook"]
        with np.errstate(divide="ignore", invalid="ignore"):
            imbalance = (f["bid_depth_quote"] - f["ask_depth_quote"]) / (f["bid_depth_quote"] + f["ask_depth_quote"])
        out["spread_bps"] = join_as_of(ts, f["spread_bps"], decision, step)
        out["depth_imbalance"] = join_as_of(ts, imbalance, decision, step)
    return out


# ---- market-wide (computed on the layer's own daily grid, then joined as-of) ------------------------


@feature_block("fear_greed", kind="market", layer="sentiment", inputs=("sentiment/1d/market",),
               lookback=lambda fs, fst: fs.zscore_window,
               outputs=lambda fs, fst: ["fg_level", *[f"fg_chg_{k}" for k in fst.fear_greed_changes],
                                        "fg_extreme", "fg_z"],
               glossary={'fg_level': 'Fear & Greed index, scaled to 0 (extreme fear) to 1 (extreme greed)',
                         r"fg_chg_(\d+)": 'change of the Fear & Greed index over {0} days (scaled)',
                         'fg_extreme': '-1 in extreme fear, +1 in extreme greed, 0 between',
                         'fg_z': 'z-score of the Fear & Greed index against its trailing window'})
def fear_greed(daily: dict[str, np.ndarray], fs: FeatureSet, fst: FeatureSettings) -> dict[str, np.ndarray]:
    v = daily["sentiment/1d/market"]
    lo, hi = fst.fear_greed_extremes
    extreme = np.where(v <= lo, -1.0, np.where(v >= hi, 1.0, 0.0))
    # The index runs from 0 to 100: level and changes are scaled to [0, 1] and [-1, 1].
    return {
        "fg_level": v / 100.0,
        **{f"fg_chg_{k}": np.concatenate([np.full(k, np.nan), v[k:] - v[:-k]])[: v.size] / 100.0
           for k in fst.fear_greed_changes},
        "fg_extreme": np.where(np.isfinite(v), extreme, np.nan),
        "fg_z": rolling_zscore(v, fs.zscore_window),
    }


def _onchain_keys(fst: FeatureSettings) -> list[str]:
    return [f"onchain/1d/{name}" for name in fst.onchain_series]


def _onchain_name(key: str) -> str:
    return "oc_" + key.split("/")[-1].lower().replace(".", "_").replace("-", "_")


@feature_block("onchain", kind="market", layer="onchain", inputs=("onchain/1d/*",),
               lookback=lambda fs, fst: max(fst.onchain_growth) + fs.zscore_window,
               outputs=lambda fs, fst: [f"{_onchain_name(k)}_{s}" for k in _onchain_keys(fst)
                                        for s in (*[f"g{g}" for g in fst.onchain_growth], "z")],
               glossary={r"oc_(.+)_g(\d+)": 'on-chain series {0}: log growth over {1} days',
                         'oc_(.+)_z': 'on-chain series {0}: z-score of its log against the trailing window'})
def onchain(daily: dict[str, np.ndarray], fs: FeatureSet, fst: FeatureSettings) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key in _onchain_keys(fst):
        v = daily.get(key)
        name = _onchain_name(key)
        if v is None:
            continue  # absent layer: the frame marks these features missing, the rows drop with the reason
        with np.errstate(divide="ignore", invalid="ignore"):
            lv = np.where(v > 0, np.log(np.where(v > 0, v, 1.0)), np.nan)
        for g in fst.onchain_growth:
            out[f"{name}_g{g}"] = log_return(np.exp(lv), g)
        out[f"{name}_z"] = rolling_zscore(lv, fs.zscore_window)
    return out


# ---- cross-coin (T x N panel) ----------------------------------------------------------------------


def _market_columns(coins: list[str], fst: FeatureSettings) -> np.ndarray:
    return np.asarray([c not in fst.stablecoins for c in coins])


def _enough(valid: np.ndarray, fst: FeatureSettings) -> np.ndarray:
    return valid.sum(axis=1) >= fst.min_coins_for_market


def market_return(r1: np.ndarray, coins: list[str], fst: FeatureSettings) -> np.ndarray:
    """Equal-weight mean 1-bar log return of the non-stable coins present (NaN with too few coins)."""
    m = r1[:, _market_columns(coins, fst)]
    valid = np.isfinite(m)
    with np.errstate(invalid="ignore"):
        mean = np.where(valid, m, 0.0).sum(axis=1) / valid.sum(axis=1)
    return np.where(_enough(valid, fst), mean, np.nan)


@feature_block("market", kind="cross", layer="cross", inputs=("ret_1",),
               lookback=lambda fs, fst: 1,
               outputs=lambda fs, fst: ["mkt_ret", "breadth", "dispersion"],
               glossary={'mkt_ret': "equal-weight mean one-bar return of the market's coins (stablecoins out)",
                         'breadth': "share of the market's coins that rose over the bar",
                         'dispersion': "spread of the coins' one-bar returns around the market's"})
def market(panel: dict[str, np.ndarray], coins: list[str], fs: FeatureSet, fst: FeatureSettings) -> dict[str, np.ndarray]:
    r1 = panel["ret_1"]
    m = r1[:, _market_columns(coins, fst)]
    valid = np.isfinite(m)
    n = valid.sum(axis=1)
    enough = _enough(valid, fst)
    mean = market_return(r1, coins, fst)
    with np.errstate(invalid="ignore", divide="ignore"):
        breadth = (np.where(valid, m, 0.0) > 0).sum(axis=1) / n
        dev = np.where(valid, m - mean[:, None], 0.0)
        dispersion = np.sqrt((dev * dev).sum(axis=1) / n)
    shape = r1.shape
    return {name: np.broadcast_to(np.where(enough, col, np.nan)[:, None], shape)
            for name, col in (("mkt_ret", mean), ("breadth", breadth), ("dispersion", dispersion))}


@feature_block("beta", kind="cross", layer="cross", inputs=("ret_1",),
               lookback=lambda fs, fst: fs.beta_window + 1,
               outputs=lambda fs, fst: ["beta_btc", "corr_btc", "beta_mkt", "corr_mkt"],
               glossary={'beta_btc': "rolling beta of the coin's returns to BTC's",
                         'corr_btc': "rolling correlation of the coin's returns with BTC's",
                         'beta_mkt': "rolling beta of the coin's returns to the market's",
                         'corr_mkt': "rolling correlation of the coin's returns with the market's"})
def beta(panel: dict[str, np.ndarray], coins: list[str], fs: FeatureSet, fst: FeatureSettings) -> dict[str, np.ndarray]:
    r1 = panel["ret_1"]
    lead = fst.reference_coins[0]
    ref = r1[:, coins.index(lead)] if lead in coins else np.full(r1.shape[0], np.nan)
    b_btc, c_btc = rolling_beta_corr(r1, ref, fs.beta_window)
    b_mkt, c_mkt = rolling_beta_corr(r1, market_return(r1, coins, fst), fs.beta_window)
    return {"beta_btc": b_btc, "corr_btc": c_btc, "beta_mkt": b_mkt, "corr_mkt": c_mkt}


def cross_rank_z(x: np.ndarray, min_coins: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: percentile rank in [0, 1] and z-score among the coins with a value (NaN with too few)."""
    valid = np.isfinite(x)
    n = valid.sum(axis=1, keepdims=True)
    order = np.argsort(np.where(valid, x, np.inf), axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(x.shape[1]), x.shape), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = ranks / (n - 1)
        mean = np.where(valid, x, 0.0).sum(axis=1, keepdims=True) / n
        dev = np.where(valid, x - mean, 0.0)
        sd = np.sqrt((dev * dev).sum(axis=1, keepdims=True) / (n - 1))
        z = (x - mean) / sd
    ok = valid & (n >= min_coins) & (sd > 0)
    return np.where(ok, pct, np.nan), np.where(ok, z, np.nan)


@feature_block("cross_section", kind="cross", layer="cross", inputs=("ret_*", "rvol_*", "volume_rel"),
               lookback=lambda fs, fst: max(max(fs.return_lookbacks), max(fs.vol_windows) + 1),
               outputs=lambda fs, fst: ["mom_rank", "mom_z", "vol_rank", "vol_z"]
               + (["volume_rank", "volume_xz"] if "volume" in fs.layers else []),
               glossary={'mom_rank': "the coin's rank (0 to 1) among the coins by its longest return (momentum)",
                         'mom_z': "z-score of the coin's longest return among the coins",
                         'vol_rank': "the coin's rank (0 to 1) among the coins by its longest volatility",
                         'vol_z': "z-score of the coin's longest volatility among the coins",
                         'volume_rank': "the coin's rank (0 to 1) among the coins by relative volume",
                         'volume_xz': "z-score of the coin's relative volume among the coins"})
def cross_section(panel: dict[str, np.ndarray], coins: list[str], fs: FeatureSet, fst: FeatureSettings) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    sources = {"mom": f"ret_{max(fs.return_lookbacks)}", "vol": f"rvol_{max(fs.vol_windows)}"}
    if "volume" in fs.layers:
        sources["volume"] = "volume_rel"
    for name, col in sources.items():
        rank, z = cross_rank_z(panel[col], fst.min_coins_for_market)
        out[f"{name}_rank"] = rank
        out[f"{name}_z" if name != "volume" else "volume_xz"] = z
    return out


@feature_block("lead_lag", kind="cross", layer="cross", inputs=("ret_1",),
               lookback=lambda fs, fst: 2,
               outputs=lambda fs, fst: [f"{c.lower()}_ret_1{s}" for c in fst.reference_coins for s in ("", "_lag1")],
               glossary={'([a-z0-9]+)_ret_1': "one-bar return of the reference coin {0} (the same for every coin)",
                         '([a-z0-9]+)_ret_1_lag1': "one-bar return of the reference coin {0}, one bar earlier"})
def lead_lag(panel: dict[str, np.ndarray], coins: list[str], fs: FeatureSet, fst: FeatureSettings) -> dict[str, np.ndarray]:
    r1 = panel["ret_1"]
    out = {}
    for c in fst.reference_coins:
        ref = r1[:, coins.index(c)] if c in coins else np.full(r1.shape[0], np.nan)
        lag = np.concatenate([[np.nan], ref[:-1]])
        out[f"{c.lower()}_ret_1"] = np.broadcast_to(ref[:, None], r1.shape)
        out[f"{c.lower()}_ret_1_lag1"] = np.broadcast_to(lag[:, None], r1.shape)
    return out


# ---- selection (here, below every registration: asking for blocks means they are registered) --------


def blocks_for(fs: FeatureSet) -> list[FeatureBlock]:
    """The blocks of the declared layers, in registration order (the column order of the frame)."""
    unknown = set(fs.layers) - {b.layer for b in REGISTRY.values()}
    if unknown:
        raise ValueError(f"feature set names layers no block provides: {sorted(unknown)}")
    return [b for b in REGISTRY.values() if b.layer in fs.layers]


def feature_names(fs: FeatureSet, fst: FeatureSettings) -> list[str]:
    return [n for b in blocks_for(fs) for n in b.outputs(fs, fst)]
