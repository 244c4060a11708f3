"""parse_csv edge cases: every malformed line is a counted parse_error with its own text."""

from __future__ import annotations

from services.ingest.sources.files import YAHOO, parse_csv

HEADER = "Date,Close,High,Low,Open,Volume"


def test_blank_lines_are_skipped_but_empty_records_are_errors():
    text = "\n".join([HEADER, "2024-01-01,2,3,1,2,10", "", ",,,,,", "2024-01-02,2,3,1,2,11", ""])
    s = parse_csv(text, YAHOO, layer="ohlcv", timeframe="1d", symbol="X-USD", source="t")
    assert len(s) == 2
    assert [(e.rule, e.row) for e in s.parse_errors] == [("parse_error", ",,,,,")]


def test_undecodable_bytes_fail_their_line_only():
    raw = (HEADER + "\n2024-01-01,2,3,1,2,10\n2024-01-02,\xff,3,1,2,10\n").encode("latin-1")
    text = raw.decode("utf-8", errors="surrogateescape")
    s = parse_csv(text, YAHOO, layer="ohlcv", timeframe="1d", symbol="X-USD", source="t")
    assert len(s) == 1 and len(s.parse_errors) == 1
    assert "UTF-8" in s.parse_errors[0].detail
