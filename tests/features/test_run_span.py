"""A run judges and builds over its span (`exchange.history`), and the rows it stores equal a build over the whole
history: the run's cost stays flat as the lake grows, and nothing it stores depends on where its span began."""

from __future__ import annotations

import numpy as np
import pytest

from services.features.frame import build_frame
from services.features.quality.gate import judge, run_gate
from services.features.steps import quality_report, staged_series
from services.features.store import read_frame
from services.orchestrator import runner
from shared import runs
from shared.contracts import Series, iso_to_ms
from shared.errors import CstError
from shared.pipeline.context import StepContext
from shared.settings import QualitySettings, Settings
from shared.storage import LocalLake

HOUR = 3_600_000


def _steps(ctx: StepContext, source: str, as_of: str):
    ref = runs.new_ref(ctx.settings, source, iso_to_ms(as_of))
    runs.save_ref(ctx.lake, ref)
    return ref, [runner.run_step(ctx, name, ref) for name in ("ingest", "validate", "features")]


def test_rows_before_the_span_are_not_read_and_are_counted():
    ts = np.arange(10, dtype=np.int64) * HOUR
    s = Series("ohlcv", "1h", "AAA-USD", "t", ts, {f: np.linspace(1.0, 2.0, 10) for f in ("open", "high", "low", "close")},
               [])
    s.fields["high"] = s.fields["high"] * 1.01
    s.fields["low"] = s.fields["low"] * 0.99
    report, state, _ = judge(s, 10 * HOUR, QualitySettings(), since_ms=6 * HOUR)
    assert (report.rows, report.before_span, report.after_as_of, report.status) == (4, 6, 0, "ok")
    assert state.series.ts[0] == 6 * HOUR
    # The whole history without a span; nothing in the span: no data, said so.
    assert judge(s, 10 * HOUR, QualitySettings())[0].rows == 10
    empty = judge(s, 10 * HOUR, QualitySettings(), since_ms=11 * HOUR)[0]
    assert (empty.status, empty.before_span) == ("excluded", 10)
    assert [e.detail for e in empty.examples["no_data"]] == ["no rows in the run's span"]


def test_a_span_too_short_to_settle_the_indicators_is_refused():
    short = Settings(exchange={"history": {"1h": "P10D", "1d": "P720D"}})
    with pytest.raises(CstError, match=r"exchange.history\['1h'\] is 240 bars.*settle_bars \(400\)") as err:
        short.settled_from_ms("1h", 0)
    assert err.value.code == "span_too_short"
    assert short.settled_from_ms("1d", 0) == (400 - 720) * 24 * HOUR
    assert Settings().run_span_ms("snapshot") == Settings().run_span_ms("1d")  # other timeframes: the longest span


@pytest.mark.parametrize(("first", "tf"), [("2024-12-31T00:00:00Z", "1h"), ("2024-05-01T00:00:00Z", "1d")])
def test_stored_rows_equal_a_build_over_the_whole_history(tmp_path, shared_data, first, tf):
    """Two consecutive runs over the recorded files: every stored row is the row a build over all of the history
    up to the as-of makes (to float32 rounding: one unit in the last place), none is missing from the stored
    partitions, and the second run rewrites only the partitions its new candle touched."""
    cfg = Settings()
    ctx = StepContext(cfg, LocalLake(tmp_path))
    step = 24 * HOUR if tf == "1d" else HOUR
    _steps(ctx, str(shared_data), first)
    later = np.datetime_as_string(np.datetime64(iso_to_ms(first) + step, "ms"), unit="s") + "Z"
    ref, (_, _, again) = _steps(ctx, str(shared_data), later)
    assert again.written == 2  # this timeframe's last feature partition and its last panel partition

    as_of = iso_to_ms(ref.as_of)
    report = quality_report(ctx, ref.run_id)
    btc = report.series[f"ohlcv/{tf}/BTC-USD"]
    span_start = as_of - cfg.run_span_ms(tf)
    assert btc.before_span > 0 and btc.first >= np.datetime_as_string(np.datetime64(span_start, "ms"), unit="s")
    # The whole history, gated without a span, built into one frame.
    whole = run_gate(staged_series(ctx.lake, ref.run_id), as_of, cfg.quality)
    assert whole.report.series[f"ohlcv/{tf}/BTC-USD"].rows > btc.rows
    unavailable = {k: v.unavailable_fields for k, v in whole.report.series.items() if v.unavailable_fields}
    full = build_frame(whole.clean, unavailable, tf, cfg)

    stored = read_frame(ctx.lake, tf)
    first_settled = cfg.settled_from_ms(tf, iso_to_ms(first))
    assert stored is not None and stored.ts.min() >= first_settled  # nothing before the first run's settled rows
    index = {(int(t), c): i for i, (t, c) in enumerate(zip(full.ts, full.coin, strict=True))}
    keys = [(int(t), c) for t, c in zip(stored.ts, stored.coin, strict=True)]
    assert all(k in index for k in keys), "a stored row the whole-history build does not make"
    assert sorted(keys) == sorted(k for k in index if k[0] >= stored.ts.min()), "a row missing from the store"
    assert len(keys) > 1000
    np.testing.assert_array_max_ulp(full.X[[index[k] for k in keys]], stored.X, maxulp=1)
