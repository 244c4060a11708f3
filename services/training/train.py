"""Training entry points: `cst train` locally and the SageMaker training job (same function)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.features.frame import FeatureFrame, Panel, build_frame, build_panel
from services.ingest import logic
from services.ingest.sources.files import FileSource
from services.training.ensemble import Trained, train_horizon
from services.training.registry import publish
from shared.contracts import iso_to_ms, utcnow
from shared.errors import CstError
from shared.settings import Settings
from shared.storage import Lake, LocalLake

log = logging.getLogger(__name__)


@dataclass
class Market:
    """A source's feature frames and price panels per timeframe, as of one time."""

    frames: dict[str, FeatureFrame]
    panels: dict[str, Panel]


def load_market(settings: Settings, source: str | Path, timeframes: set[str], as_of_ms: int) -> Market:
    """Files judged as history at `as_of_ms`: nothing later is read, and a series that ended is a valid past
    (the staleness rule is skipped)."""
    fetched = asyncio.run(logic.fetch_sources([FileSource(source)], settings))
    gated = logic.gate(fetched, settings, as_of_ms, skip=frozenset({"stale"}))
    return Market({tf: build_frame(gated.clean, gated.unavailable, tf, settings) for tf in timeframes},
                  {tf: build_panel(gated.clean, gated.unavailable, tf, settings) for tf in timeframes})


def train(settings: Settings, source: str | Path, lake: Lake, *, until: str | None = None,
          horizons: list[str] | None = None, budget: str = "quick",
          tick: Callable[[str], None] | None = None,
          on_trained: Callable[[Trained], None] | None = None) -> dict[str, dict]:
    """Train every requested horizon on data published strictly before `until`; returns each version's metadata."""
    cfg = settings.training
    horizons = horizons or list(cfg.horizons)
    unknown = [h for h in horizons if h not in cfg.horizons]
    if unknown:
        raise CstError("unknown_horizon", f"unknown horizons {unknown}; known: {list(cfg.horizons)}")
    if budget not in cfg.budgets:
        raise CstError("unknown_budget", f"budget {budget!r}; known: {list(cfg.budgets)}")
    # Nothing at or after `until` is visible: candles, sentiment and labels alike (labels come from candles).
    # History is judged without the staleness rule: a series that ended is still a valid past.
    as_of = iso_to_ms(until) - 1 if until else int(utcnow().timestamp() * 1000)
    market = load_market(settings, source, {cfg.horizons[h].timeframe for h in horizons}, as_of)
    frames, panels, results = market.frames, market.panels, {}
    for h in horizons:
        tf = cfg.horizons[h].timeframe
        started = time.perf_counter()
        try:
            t = train_horizon(h, frames[tf], panels[tf], settings, cfg.budgets[budget], lake, tick)
        except CstError as exc:
            # One horizon without enough data must not stop the others; the result says why.
            log.error("horizon %s not trained: %s", h, exc)
            results[h] = {"error": exc.code, "message": exc.message}
            continue
        if on_trained is not None:
            on_trained(t)  # the in-memory models, e.g. for native-vs-ONNX comparisons
        meta = publish(t, t.ds, t.val_idx, frames[tf].declared, lake, cfg.gate_brier_tolerance)
        meta["wall_seconds"] = round(time.perf_counter() - started, 1)
        results[h] = meta
    return results


def sagemaker_main() -> int:
    """SageMaker training job: data from SM_CHANNEL_TRAINING, models to SM_MODEL_DIR, settings from hyperparameters."""
    channel = os.environ.get("SM_CHANNEL_TRAINING", "/opt/ml/input/data/training")
    model_dir = os.environ.get("SM_MODEL_DIR", "/opt/ml/model")
    hps = json.loads(os.environ.get("SM_HPS", "{}") or "{}")
    hp_file = Path(os.environ.get("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config")) / "hyperparameters.json"
    if not hps and hp_file.is_file():
        hps = json.loads(hp_file.read_text())
    horizons = [h for h in str(hps.get("horizons", "")).split(",") if h] or None
    results = train(Settings(), channel, LocalLake(model_dir), until=hps.get("until") or None,
                    horizons=horizons, budget=str(hps.get("budget", "quick")))
    out = Path(os.environ.get("SM_OUTPUT_DATA_DIR", model_dir))
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({h: m["metrics"] for h, m in results.items()}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(sagemaker_main())
