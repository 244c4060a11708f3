"""Feature fusion on the real files: point-in-time correctness, exclusion instead of filling, new listings."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st

from services.features.blocks import blocks_for, feature_names
from services.features.frame import build_frame
from services.features.joins import join_as_of
from services.features.registry import REGISTRY
from services.features.store import read_frame, write_frame
from services.ingest import logic
from services.ingest.sources.files import FileSource
from shared.contracts import iso_to_ms
from shared.settings import Settings
from shared.storage import LocalLake

DAILY_END = "2024-07-01T00:00:00Z"
HOURLY_END = "2025-01-11T00:00:00Z"
HOUR = 3_600_000
DAY = 24 * HOUR


@pytest.fixture(scope="module")
def cfg() -> Settings:
    return Settings(_env_file=None)


@pytest.fixture(scope="module")
def fetched(shared_data, cfg):
    return asyncio.run(logic.fetch_sources([FileSource(shared_data)], cfg))


def frame_at(fetched, cfg, as_of: str | int, tf: str):
    ms = iso_to_ms(as_of) if isinstance(as_of, str) else as_of
    gated = logic.gate(fetched, cfg, ms)
    return build_frame(gated.clean, gated.unavailable, tf, cfg)


@pytest.fixture(scope="module")
def full(fetched, cfg):
    return {"1d": frame_at(fetched, cfg, DAILY_END, "1d"), "1h": frame_at(fetched, cfg, HOURLY_END, "1h")}


def test_declared_sets_match_the_registry(cfg):
    for tf, fs in cfg.features.sets.items():
        names = feature_names(fs, cfg.features)
        assert len(names) == len(set(names)), f"{tf}: duplicate feature names"
        assert {b.layer for b in blocks_for(fs)} == set(fs.layers)
        # A layer is either declared or named as excluded with a reason: nothing dropped silently.
        all_layers = {b.layer for b in REGISTRY.values()} | {"liquidity"}
        assert all_layers <= set(fs.layers) | set(fs.excluded_layers), tf
    assert "volume" in cfg.features.sets["1h"].excluded_layers


def test_every_feature_has_words_in_the_glossary(cfg):
    """The dashboard explains every feature it names (Models page, SHAP bars): each output of each block, of every
    block whether a set uses it or not, matches its block's glossary and no other block's."""
    from services.features.registry import describe

    every = {b.name: b.outputs(fs, cfg.features) for fs in cfg.features.sets.values() for b in REGISTRY.values()}
    for block, names in every.items():
        for n in names:
            owners = [b.name for b in REGISTRY.values() if any(re.fullmatch(p, n) for p in b.glossary)]
            assert owners == [block], (n, owners)
            assert describe(n) and "{" not in describe(n), n
    assert describe("not_a_feature") is None
    assert describe("ret_7") == "log return of the close over the last 7 bars"


def test_real_frames_have_rows_and_no_missing_values(full):
    for frame in full.values():
        assert len(frame) > 10_000
        assert np.isfinite(frame.X).all()
        assert set(frame.rows_per_coin) >= {"BTC", "ETH", "SOL", "USDT"}
        # The stablecoins are in the panel but outside the universe whenever they behave like one (by their prices):
        # at the last decision, and on most days (daily USDT left its 1% band in some months of 2018-2020).
        assert frame.universe.excluded == {"USDC": "stablecoin", "USDT": "stablecoin"}
        assert frame.rows_per_coin["USDT"] < frame.rows_per_coin["BTC"] / 3
        assert frame.rows_per_coin["USDC"] < frame.rows_per_coin["BTC"] / 3
        # Time-ordered, one row per coin per decision time.
        assert (np.diff(frame.ts) >= 0).all()
        pairs = frame.ts.astype(np.int64) * 1000 + np.unique(frame.coin, return_inverse=True)[1]
        assert np.unique(pairs).size == len(frame)
    daily, hourly = full["1d"], full["1h"]
    # SOL lists in 2020: fewer daily rows than BTC; the hourly span is the same for every coin.
    assert daily.rows_per_coin["SOL"] < daily.rows_per_coin["BTC"]
    assert len({n for c, n in hourly.rows_per_coin.items() if c not in ("USDT", "USDC")}) == 1
    # Hourly volume is unavailable at source, so no hourly feature uses it.
    assert not any("volume" in n for n in hourly.names)
    assert "fg_level" in daily.names and "fg_level" not in hourly.names


def test_exclusions_are_counted_by_reason(full):
    daily, hourly = full["1d"], full["1h"]
    # BTC and LTC daily candles start in 2014; the index starts 2018-02-01: those rows lack sentiment, or are outside
    # the universe first (LTC traded below the liquidity floor on some days of 2014-2015).
    assert daily.excluded["sentiment_missing"] + daily.excluded.get("universe_illiquid", 0) > 2 * 1200
    assert daily.excluded["universe_stablecoin"] > 0
    assert daily.excluded["warmup"] > 0
    # Every hourly series has exactly one missing candle: its windows drop, counted as gap_window.
    coins = sum(1 for n in hourly.rows_per_coin.values() if n)  # the stablecoins have no hourly rows
    assert hourly.excluded["gap_window"] > 0 and hourly.excluded["gap_window"] % coins == 0


@hyp_settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_point_in_time_truncation_changes_nothing(fetched, cfg, full, data):
    """Features at time t from data truncated at t equal those computed on the full history."""
    tf = data.draw(st.sampled_from(["1d", "1h"]), label="timeframe")
    frame = full[tf]
    step = DAY if tf == "1d" else HOUR
    # Decision times with rows; truncate exactly there (the latest candle closing at t is visible).
    times = np.unique(frame.ts)
    t = int(data.draw(st.sampled_from(times[:: max(1, times.size // 200)].tolist()), label="t"))
    cut = frame_at(fetched, cfg, t, tf)
    assert cut.ts.max() == t, "the truncated frame must reach t itself"
    keep = frame.ts <= t
    assert np.array_equal(cut.ts, frame.ts[keep])
    assert np.array_equal(cut.coin, frame.coin[keep])
    assert np.array_equal(cut.X, frame.X[keep]), np.argwhere(cut.X != frame.X[keep])[:5]
    assert step  # noqa: S101 - documents the grid the draw used


def test_a_gap_excludes_only_windows_touching_it(shared_data, tmp_path, cfg):
    src = tmp_path / "data"
    (src / "ohlcv" / "1d").mkdir(parents=True)
    for coin in ("BTC", "ETH", "XRP", "ADA"):
        shutil.copy(shared_data / "ohlcv" / "1d" / f"{coin}-USD.csv", src / "ohlcv" / "1d")
    shutil.copytree(shared_data / "sentiment", src / "sentiment")
    before = _frame_from(src, cfg)
    lines = (src / "ohlcv/1d/XRP-USD.csv").read_text().splitlines(keepends=True)
    victim = next(i for i, line in enumerate(lines) if line.startswith("2023-03-15"))
    (src / "ohlcv/1d/XRP-USD.csv").write_text("".join(lines[:victim] + lines[victim + 1:]))
    after = _frame_from(src, cfg)
    gap = iso_to_ms("2023-03-15T00:00:00Z")
    lost = before.rows_per_coin["XRP"] - after.rows_per_coin["XRP"]
    # XRP loses the windows that contain the missing day, no more: the longest per-coin lookback
    # (MACD 26+9 bars) plus the day itself, and never a row before the gap.
    assert 1 < lost <= 36, lost
    xrp_before = before.ts[before.coin == "XRP"]
    xrp_after = after.ts[after.coin == "XRP"]
    assert np.array_equal(xrp_before[xrp_before <= gap], xrp_after[xrp_after <= gap])
    assert after.excluded.get("gap_window", 0) > before.excluded.get("gap_window", 0)
    # Other coins keep every row: XRP's hole is not in their windows (market needs >= 3 coins; 3 remain).
    for coin in ("BTC", "ETH", "ADA"):
        assert after.rows_per_coin[coin] == before.rows_per_coin[coin]


def test_a_new_listing_gets_the_same_features(shared_data, tmp_path, cfg):
    """Nothing depends on a fixed coin list: a coin never seen before is featurized like any other."""
    src = tmp_path / "data"
    (src / "ohlcv" / "1h").mkdir(parents=True)
    for coin in ("BTC", "ETH", "XRP", "ADA"):
        shutil.copy(shared_data / "ohlcv" / "1h" / f"{coin}-USD.csv", src / "ohlcv" / "1h")
    # "NEWC": DOGE's real candles, listed from 2024-12-10 only.
    lines = (shared_data / "ohlcv/1h/DOGE-USD.csv").read_text().splitlines(keepends=True)
    body = [ln for ln in lines[1:] if ln >= "2024-12-10"]
    (src / "ohlcv/1h/NEWC-USD.csv").write_text(lines[0] + "".join(body))
    frame = _frame_from(src, cfg, HOURLY_END, "1h")
    # 744 hourly candles: the first `universe.min_history` are before it may enter the universe (longer than the
    # features' warm-up), and the one gap costs another window.
    fs = cfg.features.sets["1h"]
    lookback = max(b.lookback(fs, cfg.features) for b in blocks_for(fs))
    entry = max(lookback, cfg.universe.min_history["1h"] - 1)
    assert 744 - entry - lookback - 2 <= frame.rows_per_coin["NEWC"] <= 744 - entry
    assert frame.universe.excluded.get("NEWC") is None and "NEWC" in frame.universe.members
    # Its first row comes after its own warm-up: the longest return window needs that many candles.
    assert frame.ts[frame.coin == "NEWC"].min() > iso_to_ms("2024-12-10T00:00:00Z") + max(fs.return_lookbacks) * HOUR
    assert np.isfinite(frame.X[frame.coin == "NEWC"]).all()


def _frame_from(src: Path, cfg: Settings, as_of: str = DAILY_END, tf: str = "1d"):
    fetched = asyncio.run(logic.fetch_sources([FileSource(src)], cfg))
    return frame_at(fetched, cfg, as_of, tf)


def test_stale_sentiment_is_not_carried_forward():
    pub = np.array([0, 10, 20], dtype=np.int64)  # three publications, 10 ms apart
    vals = np.array([1.0, np.nan, 3.0])  # the second is missing
    at = np.array([-1, 0, 5, 12, 25, 40], dtype=np.int64)
    got = join_as_of(pub, vals, at, max_age_ms=10)
    # before any publication: nothing; at 12 the latest publication (10) is missing: NaN, not 1.0;
    # at 40 the latest (20) is 20 old > 10: NaN.
    assert np.array_equal(np.isnan(got), [True, False, False, True, False, True])
    assert got[1] == 1.0 and got[2] == 1.0 and got[4] == 3.0


def test_parquet_roundtrip_partitions_by_timeframe_and_date(full, tmp_path):
    frame = full["1h"]
    lake = LocalLake(tmp_path)
    written = write_frame(lake, frame)
    keys = [k for k in lake.list("features/") if k.endswith(".parquet")]
    days = {str(d) for d in frame.ts.astype("datetime64[ms]").astype("datetime64[D]")}
    assert written == len(keys) == len(days)
    assert keys == sorted(f"features/timeframe=1h/date={d}/part.parquet" for d in days)
    back = read_frame(lake, "1h")
    assert np.array_equal(back.X, frame.X) and np.array_equal(back.ts, frame.ts)
    assert back.names == frame.names and back.declared["excluded_layers"] == frame.declared["excluded_layers"]
    # Re-writing the same frame writes nothing: every partition's content is unchanged.
    assert write_frame(lake, frame) == 0
    assert len(read_frame(lake, "1h")) == len(frame)
    # A time range reads only its partitions' rows, and the rows equal the frame's.
    lo, hi = int(frame.ts[len(frame) // 2]), int(frame.ts[len(frame) // 2]) + 6 * 3_600_000
    part = read_frame(lake, "1h", since_ms=lo, until_ms=hi)
    sel = (frame.ts >= lo) & (frame.ts <= hi)
    assert np.array_equal(part.X, frame.X[sel]) and list(part.coin) == list(frame.coin[sel])


def test_panel_roundtrip_keeps_the_grid_and_its_gaps(fetched, cfg, tmp_path):
    from services.features.frame import build_panel
    from services.features.store import read_panel, write_panel
    from services.ingest import logic

    gated = logic.gate(fetched, cfg, iso_to_ms(HOURLY_END))
    panel = build_panel(gated.clean, gated.unavailable, "1h", cfg)
    lake = LocalLake(tmp_path)
    assert write_panel(lake, panel) > 0
    back = read_panel(lake, "1h")
    assert back.coins == panel.coins and np.array_equal(back.open_ts, panel.open_ts)
    for f in ("open", "high", "low", "close", "volume"):
        assert np.array_equal(back.fields[f], panel.fields[f], equal_nan=True), f
    assert back.unavailable == panel.unavailable
    # The recorded hourly files miss the 2025-01-02 14:00 candle: it stays missing, never filled.
    gap = int(np.flatnonzero(panel.open_ts == iso_to_ms("2025-01-02T14:00:00Z"))[0])
    assert np.isnan(back.fields["close"][gap]).all()


def test_liquidity_joins_whale_buckets_and_fresh_books(fetched, cfg):
    """Hand-made trade buckets and book snapshots for BTC on the real hourly candles.

    Buckets 20:00 and 21:00 on 2025-01-10 (decision times 21:00 and 22:00):
      20:00: notional 1000, whale 200 (buy 150) -> whale_share 0.2, whale_buy_share 0.75
      21:00: notional 500, whale 0             -> whale_share 0.0, whale_buy_share 0.0
    Books: 20:45 spread 5 bps, bid depth 300 / ask 100 -> imbalance (300-100)/400 = 0.5
           21:50 spread 8 bps, bid 100 / ask 100       -> imbalance 0
    The 21:00 row takes the 20:45 book (15 min old); the 22:00 row the 21:50 one (10 min old).
    """
    from shared.contracts import Series

    gated = logic.gate(fetched, cfg, iso_to_ms(HOURLY_END))
    b0 = iso_to_ms("2025-01-10T20:00:00Z")
    trades = Series("trades", "1h", "BTC-USD", "test", np.array([b0, b0 + HOUR]),
                    {"trades": np.array([10.0, 4.0]), "notional": np.array([1000.0, 500.0]),
                     "whale_trades": np.array([1.0, 0.0]), "whale_notional": np.array([200.0, 0.0]),
                     "whale_buy_notional": np.array([150.0, 0.0])}, [])
    book = Series("orderbook", "snapshot", "BTC-USD", "test",
                  np.array([b0 + 45 * 60_000, b0 + 110 * 60_000]),
                  {"spread_bps": np.array([5.0, 8.0]), "bid_depth_quote": np.array([300.0, 100.0]),
                   "ask_depth_quote": np.array([100.0, 100.0])}, [])
    clean = dict(gated.clean, **{"trades/1h/BTC-USD": trades, "orderbook/snapshot/BTC-USD": book})
    with_liq = cfg.model_copy(deep=True)
    fs = with_liq.features.sets["1h"]
    fs.layers = [*fs.layers, "liquidity"]
    fs.excluded_layers.pop("liquidity")
    frame = build_frame(clean, gated.unavailable, "1h", with_liq)
    assert list(frame.coin) == ["BTC", "BTC"]
    assert list(frame.ts) == [b0 + HOUR, b0 + 2 * HOUR]
    col = {n: frame.X[:, i] for i, n in enumerate(frame.names)}
    np.testing.assert_allclose(col["whale_share"], [0.2, 0.0], rtol=1e-6)
    np.testing.assert_allclose(col["whale_buy_share"], [0.75, 0.0], rtol=1e-6)
    np.testing.assert_allclose(col["spread_bps"], [5.0, 8.0], rtol=1e-6)
    np.testing.assert_allclose(col["depth_imbalance"], [0.5, 0.0], atol=1e-7)
    # Every other row lacks the layer and is counted, not filled.
    assert frame.excluded["liquidity_missing"] > 10_000
