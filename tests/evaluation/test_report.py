"""Report plots are real PNGs, reliability bins match hand counts, and the HTML escapes text and links the images."""

from __future__ import annotations

import numpy as np
import pytest

from services.evaluation.report import (
    confidence_hist_png,
    drawdown_png,
    equity_png,
    html_report,
    reliability_png,
)
from shared.errors import CstError
from shared.metrics import reliability

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = 1_704_153_600_000  # 2024-01-02 00:00 UTC


def is_png(path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 5_000  # a blank 10x4 in canvas alone is a few kB


def test_reliability_bins_by_hand():
    # 4 bins of width 0.25. 0.1 and 0.2 fall in bin 0 (mean 0.15, one up of two); 0.6 in bin 2; 0.9 and 1.0 in
    # bin 3 (1.0 is clipped into the last bin, as in shared.metrics.ece); bin 1 is empty.
    mean_p, freq, counts = reliability(np.array([0.1, 0.2, 0.6, 0.9, 1.0]), np.array([0, 1, 1, 1, 1]), bins=4)
    np.testing.assert_array_equal(counts, [2, 0, 1, 2])
    np.testing.assert_allclose(mean_p, [0.15, np.nan, 0.6, 0.95])
    np.testing.assert_allclose(freq, [0.5, np.nan, 1.0, 1.0])


def test_every_plot_writes_a_png(tmp_path):
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 1, 400)
    y = (rng.uniform(0, 1, 400) < p).astype(float)
    rel = reliability_png(tmp_path / "plots" / "reliability.png", {"24h": (p, y), "7d": (p[:50], y[:50]),
                                                                  "30d": (np.zeros(0), np.zeros(0))})
    conf = confidence_hist_png(tmp_path / "plots" / "confidence.png", {"24h": np.maximum(p, 1 - p)}, threshold=0.8)
    ts = T0 + 86_400_000 * np.arange(120)
    strat = 1e5 * np.exp(np.cumsum(rng.normal(0, 0.01, 120)))
    bench = np.exp(np.cumsum(rng.normal(0, 0.02, 120)))
    eq = equity_png(tmp_path / "plots" / "equity.png", ts, {"strategy": strat, "BTC buy & hold": bench})
    dd = drawdown_png(tmp_path / "plots" / "drawdown.png", ts, {"strategy": strat, "BTC buy & hold": bench})
    assert all(is_png(f) for f in (rel, conf, eq, dd))
    with pytest.raises(CstError, match="curve_length"):
        equity_png(tmp_path / "bad.png", ts, {"strategy": strat[:-1]})


def test_html_escapes_text_renders_tables_and_links_images(tmp_path):
    img = tmp_path / "plots" / "equity.png"
    img.parent.mkdir()
    img.write_bytes(PNG_MAGIC)
    out = html_report(tmp_path / "report.html", "Backtest <BTC & ETH>", [
        ("Summary", "Out-of-sample <script>alert(1)</script> period.\n\nSecond paragraph."),
        ("Metrics", {"sharpe": 1.23456, "hit_rate": None, "trades": 7, "final_equity": 123456.7}),
        ("Trades", [{"coin": "BTC", "pnl": 12.5}, {"coin": "ETH", "pnl": -3.0, "note": "a<b"}]),
    ], [img])
    text = out.read_text()
    assert "<title>Backtest &lt;BTC &amp; ETH&gt;</title>" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>" not in text
    assert text.count("<p>") == 2
    assert "<th>hit_rate</th><td>–</td>" in text  # None is a dash, never "None"
    assert "None" not in text
    assert '<td class="num">1.235</td>' in text and '<td class="num">123,457</td>' in text
    # The list of dicts is one table with the union of the keys as columns; a missing cell is a dash too.
    assert "<th>coin</th><th>pnl</th><th>note</th>" in text and "<td>a&lt;b</td>" in text
    assert text.count("<td>–</td>") == 2
    assert '<img src="plots/equity.png"' in text  # relative to the page, so the folder can move
