"""The column-at-a-time parse of plain files gives exactly what the line-by-line parse gives, on every recorded file
and on files that are almost plain; anything irregular falls back to the line-by-line parse and its parse_errors."""

from __future__ import annotations

import numpy as np
import pytest

from services.ingest.sources import files
from services.ingest.sources.files import BINANCE, BLOCKCHAIN, FEAR_GREED, YAHOO, discover, parse_csv


def both(text: str, fmt) -> tuple:
    """(column-at-a-time or its fallback, line by line), and whether the plain path took the file."""
    kw = dict(layer="ohlcv", timeframe="1d", symbol="X-USD", source="test")
    took = files._parse_plain(files._lines(text), files._cells(files._lines(text)[0]), fmt) is not None
    fast = parse_csv(text, fmt, **kw)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(files, "_parse_plain", lambda *a: None)
        slow = parse_csv(text, fmt, **kw)
    return fast, slow, took


def same(a, b) -> None:
    assert np.array_equal(a.ts, b.ts)
    assert a.fields.keys() == b.fields.keys()
    for k in a.fields:
        assert np.array_equal(a.fields[k], b.fields[k]), k
    assert a.origin == b.origin and a.parse_errors == b.parse_errors


def test_every_recorded_file_parses_the_same_and_price_files_take_the_plain_path(shared_data):
    specs, _ = discover(shared_data)
    assert specs
    took_plain = {}
    for spec in specs:
        text = spec.path.read_bytes().decode("utf-8", errors="surrogateescape")
        fast, slow, took = both(text, spec.fmt)
        same(fast, slow)
        took_plain[spec.layer] = took_plain.get(spec.layer, True) and took
    # Every price file (the ones that grow with the coins) is plain; the on-chain files quote every cell.
    assert took_plain == {"ohlcv": True, "sentiment": True, "onchain": False}


HEAD = "Date,Close,High,Low,Open,Volume\n"


@pytest.mark.parametrize("name,text,fmt,plain", [
    ("daily", HEAD + "2024-01-01,1.5,2,1,1.2,100\n2024-01-02,1.6,2.1,1.1,1.3,0\n", YAHOO, True),
    ("hourly +00:00", HEAD + "2024-11-14 00:00:00+00:00,1,2,0.5,1,3\n2024-11-14 01:00:00+00:00,1e3,2E+3,.5,1.,3\n",
     YAHOO, True),
    ("epoch seconds and ms", "timestamp,value\n1700000000,10\n1700000000123,11\n", FEAR_GREED, True),
    ("blockchain", "x,y\n1600000000,5.5\n", BLOCKCHAIN, True),
    ("binance iso T", "datetime,open,high,low,close,volume,quote_asset_volume,num_trades,taker_buy_base_vol,"
     "taker_buy_quote_vol\n2024-01-01T00:00:00Z,1,2,0.5,1.5,10,15,3,5,7\n", BINANCE, True),
    ("blank line", HEAD + "2024-01-01,1,2,1,1,1\n\n2024-01-02,1,2,1,1,1\n", YAHOO, False),
    ("quoted cell", HEAD + '2024-01-01,"1",2,1,1,1\n', YAHOO, False),
    ("short row", HEAD + "2024-01-01,1,2,1,1\n", YAHOO, False),
    ("empty cell", HEAD + "2024-01-01,,2,1,1,1\n", YAHOO, False),
    ("nan", HEAD + "2024-01-01,nan,2,1,1,1\n", YAHOO, False),
    ("overflow to inf", HEAD + "2024-01-01,1e400,2,1,1,1\n", YAHOO, False),
    ("spaces", HEAD + "2024-01-01, 1.5,2,1,1,1\n", YAHOO, True),  # float() reads them, either way
    ("underscore digits", HEAD + "2024-01-01,1_000,2,1,1,1\n", YAHOO, True),
    ("not a number", HEAD + "2024-01-01,1.5x,2,1,1,1\n", YAHOO, False),
    ("other offset", HEAD + "2024-11-14 00:00:00+02:00,1,2,1,1,1\n", YAHOO, False),
    ("fractional seconds", HEAD + "2024-11-14 00:00:00.5,1,2,1,1,1\n", YAHOO, False),
    ("bad date", HEAD + "2024-13-01,1,2,1,1,1\n", YAHOO, False),
    ("not UTF-8", HEAD + "2024-01-01,1\udcff,2,1,1,1\n", YAHOO, False),
    ("header only", HEAD, YAHOO, False),
    ("CRLF", HEAD.replace("\n", "\r\n") + "2024-01-01,1,2,1,1,1\r\n", YAHOO, True),
])
def test_almost_plain_files_parse_the_same_either_way(name, text, fmt, plain):
    fast, slow, took = both(text, fmt)
    assert took is plain, name
    same(fast, slow)
