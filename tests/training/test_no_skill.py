"""Mechanics: on seeded prices whose future moves are independent of everything the features can see, the served
probabilities collapse to the base rate, every prediction says so, and the horizon is never certified.

The prices are a seeded random walk: a test of the machinery, not a claim about markets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.predict.model import HorizonModel
from services.predict.steps import certification
from services.training.ensemble import label_rows
from services.training.train import load_history, train
from shared.contracts import iso_to_ms
from shared.metrics import brier
from shared.records import ModelMetadata
from shared.storage import LocalLake

pytest.importorskip("torch")
pytest.importorskip("lightgbm")

DAY = 86_400_000
START = np.datetime64("2019-01-01")
DAYS = 1500
UNTIL = "2022-07-01"


def random_walk_source(dest: Path, coins=("BTC", "ETH", "XRP", "LTC", "ADA"), seed: int = 21) -> Path:
    """Yahoo-style daily files: iid log returns (sd 3%), so no past value tells the next move. Real tickers only
    because the cross-coin block measures each coin against BTC; the prices are generated."""
    rng = np.random.default_rng(seed)
    (dest / "ohlcv" / "1d").mkdir(parents=True)
    dates = START + np.arange(DAYS)
    for coin in coins:
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.03, DAYS)))
        open_ = np.r_[close[0], close[:-1]]
        high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.01, DAYS)))
        low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.01, DAYS)))
        volume = rng.lognormal(15, 0.5, DAYS)
        lines = ["Date,Close,High,Low,Open,Volume"] + [
            f"{d},{c:.6f},{h:.6f},{lo:.6f},{o:.6f},{v:.0f}" for d, c, h, lo, o, v in
            zip(dates.astype(str), close, high, low, open_, volume, strict=True)]
        (dest / "ohlcv" / "1d" / f"{coin}-USD.csv").write_text("\n".join(lines) + "\n")
    # The daily feature set requires the sentiment layer: a seeded index, as uninformative as the prices.
    (dest / "sentiment").mkdir()
    values = rng.integers(5, 95, DAYS)
    (dest / "sentiment" / "fear_greed.csv").write_text("value,value_classification,timestamp\n" + "".join(
        f"{v},Neutral,{d}\n" for v, d in zip(values, dates.astype(str), strict=True)))
    return dest


def test_features_without_information_serve_the_base_rate_and_are_never_certified(tmp_path):
    from tests.training.test_training import import_files, tiny_settings

    src = random_walk_source(tmp_path / "data")
    lake = LocalLake(tmp_path / "lake")
    cfg = tiny_settings()
    run_id = import_files(cfg, lake, src)
    results = train(cfg, lake, run_id, until=UNTIL, horizons=["24h"], budget="tiny")
    meta = results["24h"]
    assert isinstance(meta, ModelMetadata), meta
    assert meta.skill["demonstrated"] is False and meta.skill["strength"] == 0.0
    assert certification(meta, cfg.confidence_threshold, cfg.run.certify_min_n) == "no demonstrated skill"
    card = (lake.root / "models" / "horizon=24h" / f"version={meta.version}" / "MODEL_CARD.md").read_text()
    assert "**no demonstrated skill**" in card

    # Served on the rows after the training data (never seen), through the exported ONNX graphs.
    market = load_history(cfg, lake, run_id, {"1d"}, iso_to_ms("2030-01-01"))
    frame, panel = market.frames["1d"], market.panels["1d"]
    spec = cfg.training.horizons["24h"]
    r = label_rows(frame, panel, spec, cfg.training.dead_zone)
    rows = np.flatnonzero((frame.ts >= iso_to_ms(UNTIL)) & r.full & np.isfinite(r.y))
    assert rows.size > 500
    from services.features.sequences import sequences

    model = HorizonModel.load(lake, "24h")
    pred = model.predict(frame.X[rows], sequences(frame.X, r.idx[rows]))
    base = meta.metrics["base_rate_train"]
    assert np.allclose(pred.p_up, base, atol=1e-6)  # float32 graphs
    y = r.y[rows]
    skill = 1 - brier(pred.p_up, y) / brier(np.full(y.size, base), y)
    assert abs(skill) <= 0.005
    # And the confidence filter can never pass: the larger side of the base rate is far below 80%.
    assert pred.confidence.max() < cfg.confidence_threshold

    # The cross-sectional target alike: no skill, strength 0, P(beats) the base rate (about one half) for every
    # coin, never certified; its score ranks the coins no better than chance (rank IC within noise of zero).
    beats = meta.beats
    assert beats is not None, meta.beats_note
    assert beats.skill["demonstrated"] is False and beats.skill["strength"] == 0.0
    assert certification(beats, cfg.confidence_threshold, cfg.run.certify_min_n) == "no demonstrated skill"
    assert np.allclose(pred.beats, beats.metrics["base_rate_train"], atol=1e-6)
    assert abs(beats.metrics["base_rate_train"] - 0.5) < 0.05
    assert pred.beats_confidence.max() < cfg.confidence_threshold
    from services.evaluation.cross_section import decisions, rank_ic

    fwd = r.fwd[rows]
    d = decisions(frame.ts[rows], pred.beats_logit, fwd, min_coins=5)
    ic = rank_ic(d, pred.beats_logit, fwd)
    ic = ic[np.isfinite(ic)]
    assert ic.size > 100 and np.abs(ic).mean() > 0.1  # five coins: each IC is noisy; the mean is not
    assert abs(ic.mean()) < 3 * ic.std() / np.sqrt(ic.size), (ic.mean(), ic.std(), ic.size)
