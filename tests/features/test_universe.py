"""The point-in-time universe on real candles: who enters, who is left out and by which rule, and that a decision's
universe is the same whatever came after it (nothing chooses a coin by its future)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from services.features.frame import build_frame, build_panel
from services.features.quality.gate import run_gate
from services.features.universe import RULES, membership, universe_at
from services.ingest.sources.files import parse_csv
from services.ingest.sources.layouts import recognize
from shared.contracts import iso_to_ms
from shared.settings import Settings

WIDE = ("BTCUSDT", "ETHUSDT", "SAHARAUSDT", "DENTUSDT", "HOTUSDT")  # SAHARA lists 2025-06-26; DENT, HOT trade thinly


def _series(root: Path, under: str = "") -> dict:
    out = {}
    for path in sorted((root / under).rglob("*.csv")):
        spec = recognize(root, path)
        s = parse_csv(path.read_text(), spec.fmt, layer=spec.layer, timeframe=spec.timeframe, symbol=spec.symbol,
                      source=spec.source)
        out[s.key] = s
    return out


@pytest.fixture(scope="module")
def wide(wide_data, tmp_path_factory):
    src = wide_data / "binance-futures" / "1d"
    if not src.is_dir():
        pytest.skip(f"{src} is absent")
    dest = tmp_path_factory.mktemp("wide") / "binance-futures" / "1d"
    dest.mkdir(parents=True)
    for c in WIDE:
        shutil.copy(src / f"{c}.csv", dest)
    return build_panel(_series(dest.parents[1]), {}, "1d", Settings(_env_file=None))


def _row(panel, day: str) -> int:
    return int(np.flatnonzero(panel.open_ts == np.datetime64(day, "ms").astype(np.int64))[0])


def test_a_wide_universe_admits_by_listing_age_and_liquidity(wide):
    # A floor of 5M USDT a day (the default, 1M, is a floor against dust that these two clear).
    cfg = Settings(_env_file=None).universe.model_copy(update={"min_quote_volume": {"1d": 5e6}})
    member, rule = membership(wide, cfg)
    last = wide.open_ts.size - 1
    u = universe_at(wide, member, rule, last, wide.venue)
    assert wide.venue == "binance-perp" and u.timeframe == "1d"
    assert u.members == ["BTC", "ETH"]
    assert u.excluded == {"DENT": "illiquid", "HOT": "illiquid", "SAHARA": "listing_age"}
    # Before SAHARA's first candle it is not a coin of that decision at all.
    early = universe_at(wide, member, rule, _row(wide, "2025-06-01"), wide.venue)
    assert "SAHARA" not in early.excluded and "SAHARA" not in early.members
    # At most max_coins, the most liquid.
    capped, why = membership(wide, cfg.model_copy(update={"max_coins": 1, "min_quote_volume": {"1d": 0.0}}))
    assert capped[last].sum() == 1 and capped[last, wide.coins.index("BTC")]
    assert RULES[why[last, wide.coins.index("ETH")]] == "max_coins"


def test_a_decisions_universe_is_the_same_whatever_came_after_it(wide):
    cfg = Settings(_env_file=None).universe
    member, rule = membership(wide, cfg)
    for day in ("2024-03-15", "2024-11-01", "2025-06-28"):
        i = _row(wide, day)
        cut = type(wide)(wide.timeframe, wide.open_ts[: i + 1], wide.coins,
                         {f: v[: i + 1] for f, v in wide.fields.items()}, wide.unavailable, wide.notes, wide.venue)
        m, r = membership(cut, cfg)
        assert np.array_equal(m[i], member[i]) and np.array_equal(r[i], rule[i]), day


def test_stablecoins_leave_by_price_behaviour_and_their_rows_are_history_only(shared_data):
    cfg = Settings(_env_file=None)
    raw = {**_series(shared_data, "ohlcv/1d"), **_series(shared_data, "sentiment")}
    clean = run_gate(list(raw.values()), iso_to_ms("2024-07-01T00:00:00Z"), cfg.quality).clean
    panel = build_panel(clean, {}, "1d", cfg)
    member, rule = membership(panel, cfg.universe)
    u = universe_at(panel, member, rule, panel.open_ts.size - 1, panel.venue)
    assert u.excluded == {"USDC": "stablecoin", "USDT": "stablecoin"} and len(u.members) == 10
    frame = build_frame(clean, {}, "1d", cfg)
    last = frame.ts == frame.ts.max()
    # Their rows stay in the frame as history (a coin entering later has its past for the sequence window), but
    # none is a decision of the universe.
    assert {"USDT", "USDC"} <= set(frame.coin[last])
    assert not ({"USDT", "USDC"} & set(frame.coin[last & frame.members()]))
    assert frame.universe == u and frame.excluded["universe_stablecoin"] > 0
    assert frame.rows_per_coin["USDT"] < np.sum(frame.coin == "USDT")


def test_a_coin_entering_the_universe_has_its_past_for_the_sequence_window(shared_data):
    """USDT's real prices leave the 1% band in some months of 2018-2020 and it enters the universe then: its first
    decision inside is predicted from a full window of its rows before it entered (rows outside a decision's
    universe are its history, never decisions)."""
    from services.features.sequences import sequence_index

    cfg = Settings(_env_file=None)
    raw = {**_series(shared_data, "ohlcv/1d"), **_series(shared_data, "sentiment")}
    clean = run_gate(list(raw.values()), iso_to_ms("2024-07-01T00:00:00Z"), cfg.quality).clean
    frame = build_frame(clean, {}, "1d", cfg)
    usdt = np.flatnonzero(frame.coin == "USDT")
    inside = frame.members()[usdt]
    entries = usdt[1:][inside[1:] & ~inside[:-1]]  # a decision inside right after one outside
    assert entries.size > 0
    L = cfg.training.horizons["24h"].sequence_length
    idx, full = sequence_index(frame.ts, frame.coin, 86_400_000, L)
    assert full[entries].all()
    assert not frame.members()[idx[entries[0]][:-1]].all()  # its window reaches rows from outside the universe
