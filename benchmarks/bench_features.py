"""Feature-frame throughput and peak memory: the real files, and a 500-coin x 17,520-hour scale case.

The scale case tiles the real hourly series (each repeat continues from the last price, every coin
offset differently); it is a SPEED TEST ONLY, its values mean nothing about markets.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _real_series():
    from services.ingest import logic
    from services.ingest.sources.files import FileSource
    from shared.settings import Settings

    cfg = Settings(_env_file=None)
    return cfg, asyncio.run(logic.fetch_sources([FileSource(DATA)], cfg))


def real_case(tf: str, as_of: str) -> dict:
    from services.features.frame import build_frame
    from services.ingest import logic
    from shared.contracts import iso_to_ms

    cfg, fetched = _real_series()
    gated = logic.gate(fetched, cfg, iso_to_ms(as_of))
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        frame = build_frame(gated.clean, gated.unavailable, tf, cfg)
        best = min(best, time.perf_counter() - t)
    coins = len(frame.rows_per_coin)
    return {"timeframe": tf, "coins": coins, "rows": len(frame), "features": len(frame.names),
            "seconds": round(best, 3), "rows_per_s": int(len(frame) / best)}


def tiled_hourly(n_coins: int, n_rows: int):
    """Real hourly candles tiled to n_rows per coin; each repeat is scaled to continue from the last close."""
    from shared.contracts import Series

    cfg, fetched = _real_series()
    base = [s for _, r in fetched.results for s in r.series if s.layer == "ohlcv" and s.timeframe == "1h"]
    start = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000
    ts = start + 3_600_000 * np.arange(n_rows, dtype=np.int64)
    out = []
    for j in range(n_coins):
        s = base[j % len(base)]
        roll = (j * 37) % len(s)
        fields = {k: np.roll(s.fields[k], roll) for k in ("open", "high", "low", "close")}
        reps = -(-n_rows // len(s))
        cols = {k: [] for k in fields}
        scale = 1.0
        for _ in range(reps):
            for k in fields:
                cols[k].append(fields[k] * scale)
            scale *= fields["close"][-1] / fields["open"][0]
        tiled = {k: np.concatenate(v)[:n_rows] for k, v in cols.items()}
        tiled["volume"] = np.zeros(n_rows)
        out.append(Series("ohlcv", "1h", f"C{j:03d}-USD", "bench", ts, tiled, []))
    # Two of them named as the reference coins so the lead-lag features exist.
    out[0].symbol, out[1].symbol = "BTC-USD", "ETH-USD"
    return cfg, out


def scale_case(n_coins: int = 500, n_rows: int = 17_520) -> dict:
    from services.features.frame import build_frame

    cfg, series = tiled_hourly(n_coins, n_rows)
    clean = {s.key: s for s in series}
    unavailable = {s.key: ["volume"] for s in series}
    t = time.perf_counter()
    frame = build_frame(clean, unavailable, "1h", cfg)
    seconds = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"coins": n_coins, "rows_in": n_coins * n_rows, "rows_out": len(frame), "features": len(frame.names),
            "seconds": round(seconds, 2), "rows_per_s": int(n_coins * n_rows / seconds),
            "peak_rss_mb": round(peak_mb), "goal_seconds": 20}


def main() -> dict:
    if not DATA.is_dir():
        return {"skipped": f"{DATA} absent"}
    figures = {"real_1d": real_case("1d", "2024-07-01T00:00:00Z"), "real_1h": real_case("1h", "2025-01-11T00:00:00Z")}
    # The scale case runs in a fresh process so its peak memory is its own.
    proc = subprocess.run([sys.executable, "-c", "import json, benchmarks.bench_features as b; print(json.dumps(b.scale_case()))"],
                          capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    figures["scale_500x17520_speed_test_only"] = json.loads(proc.stdout.strip().splitlines()[-1])
    return figures


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
