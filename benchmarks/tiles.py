"""Tiled sources for scale benchmarks: the real recorded series copied under new coin names (a SPEED TEST ONLY)."""

from __future__ import annotations

import os
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tiled_source(dest: Path, coins: int, data: Path = DATA) -> Path:
    """`coins` daily and hourly price files: the real coins under their names (the cross-coin features need BTC and
    ETH), then links to them cycled under new names T0000.., plus the real sentiment.

    Every tile is a real series under another name: the figures measured on it are speeds, never forecasts.
    """
    dest = Path(dest)
    for tf in ("1d", "1h"):
        real = sorted((data / "ohlcv" / tf).glob("*.csv"))
        folder = dest / "ohlcv" / tf
        folder.mkdir(parents=True, exist_ok=True)
        names = [f.name for f in real] + [f"T{i:04d}-USD.csv" for i in range(max(0, coins - len(real)))]
        for i, name in enumerate(names[:coins]):
            if not (folder / name).exists():
                os.symlink(real[i % len(real)], folder / name)
    (dest / "sentiment").mkdir(exist_ok=True)
    for f in (data / "sentiment").glob("*.csv"):
        if not (dest / "sentiment" / f.name).exists():
            os.symlink(f, dest / "sentiment" / f.name)
    return dest
