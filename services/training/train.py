"""Training entry points: `cst train` locally and the SageMaker training job (same function), both reading the lake."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.features.frame import FeatureFrame, Panel, build_frame, build_panel
from services.features.quality.gate import run_gate
from services.features.steps import staged_series
from services.training.ensemble import Rows, Trained, label_rows, train_horizon
from services.training.registry import publish
from shared.contracts import iso_to_ms, utcnow
from shared.datasets import get_series, history_parts, merge_series
from shared.errors import CstError
from shared.records import TrainingFailure, TrainingResult
from shared.settings import Settings
from shared.storage import Lake

log = logging.getLogger(__name__)


@dataclass
class History:
    """Feature frames and price panels per timeframe built from the lake's stored series, as of one time."""

    frames: dict[str, FeatureFrame]
    panels: dict[str, Panel]
    _labels: dict[str, Rows] = field(default_factory=dict, repr=False)

    def labels(self, settings: Settings, horizon: str) -> Rows:
        """Every frame row's forward return, label and sequence window for `horizon`, computed once per history."""
        if horizon not in self._labels:
            spec = settings.training.horizons[horizon]
            self._labels[horizon] = label_rows(self.frames[spec.timeframe], self.panels[spec.timeframe], spec,
                                               settings.training.dead_zone, settings.training.beats_min_coins)
        return self._labels[horizon]


def load_history(settings: Settings, lake: Lake, run_id: str, timeframes: set[str], as_of_ms: int) -> History:
    """The series a run stored, with the lake's backfilled history, judged as history at `as_of_ms`: nothing later
    is read, and a series that ended is a valid past (the staleness rule, which guards live serving, is skipped)."""
    series = merge_series(get_series(lake, history_parts(lake)) + staged_series(lake, run_id))
    gated = run_gate(series, as_of_ms, settings.quality, skip=frozenset({"stale"}))
    return History({tf: build_frame(gated.clean, gated.unavailable, tf, settings) for tf in timeframes},
                   {tf: build_panel(gated.clean, gated.unavailable, tf, settings) for tf in timeframes})


def train(settings: Settings, lake: Lake, run_id: str, *, until: str | None = None,
          horizons: list[str] | None = None, budget: str = "quick",
          tick: Callable[[str], None] | None = None,
          on_trained: Callable[[Trained], None] | None = None) -> dict[str, TrainingResult]:
    """Train every requested horizon on the series stored by run `run_id`, using only data published strictly
    before `until`; each version goes through the registry's gate in `lake`. Returns each version's metadata."""
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
    history = load_history(settings, lake, run_id, {cfg.horizons[h].timeframe for h in horizons}, as_of)
    frames, panels, results = history.frames, history.panels, {}
    for h in horizons:
        tf = cfg.horizons[h].timeframe
        started = time.perf_counter()
        try:
            t = train_horizon(h, frames[tf], panels[tf], settings, cfg.budgets[budget], lake, tick,
                              rows=history.labels(settings, h))
        except CstError as exc:
            # One horizon without enough data must not stop the others; the result says why.
            log.error("horizon %s not trained: %s", h, exc)
            results[h] = TrainingFailure(error=exc.code, message=exc.message)
            continue
        except Exception as exc:  # noqa: BLE001 - a failed search or fit must not cost the other horizons
            log.exception("horizon %s: training failed", h)
            # CURRENT stays where it is: nothing of this horizon was published.
            results[h] = TrainingFailure(error="training_failed", message=f"{type(exc).__name__}: {exc}", failed=True)
            continue
        if on_trained is not None:
            on_trained(t)  # the in-memory models, e.g. for native-vs-ONNX comparisons
        meta = publish(t, frames[tf].declared, lake, settings)
        results[h] = meta.model_copy(update={"wall_seconds": round(time.perf_counter() - started, 1)})
    return results
