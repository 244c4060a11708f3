"""The main job's cycle after ingest: predict every coin x horizon, filter, consensus, log, outcomes, drift."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from services.features.frame import FeatureFrame, Panel
from services.features.sequences import sequence_index, sequences
from services.predict import drift as drift_mod
from services.predict.backtest import BacktestConfig, live_gate, market_from_panel
from services.predict.model import HorizonModel, current_version, top_features
from services.predict.pool import explain_rows
from services.predict.signals import actionable, consensus, orders_from_signals
from shared.contracts import ms_to_iso
from shared.errors import CstError, LakeKeyNotFound
from shared.metrics import brier, ece
from shared.settings import Settings, timeframe_ms
from shared.storage import Lake

log = logging.getLogger(__name__)

PRED_KEY = re.compile(r"^predictions/run_id=(?P<run>[^/]+)/horizon=(?P<h>[^/]+)/coin=(?P<c>[^/]+)/part\.parquet$")


@dataclass
class CycleInput:
    run_id: str
    as_of_ms: int
    frames: dict[str, FeatureFrame]
    panels: dict[str, Panel]
    quality: dict  # series key -> SeriesReport (as dict)
    coins: list[str]  # every coin the source delivered a price series for


@dataclass
class CycleResult:
    predictions: list[dict] = field(default_factory=list)
    excluded: dict[str, dict[str, str]] = field(default_factory=dict)  # coin -> horizon -> reason
    signals: list[dict] = field(default_factory=list)
    outcomes_recorded: int = 0
    drift: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # Horizons whose confidences are not backed by held-out data: logged, never actionable.
    uncertified: dict[str, str] = field(default_factory=dict)


def horizon_ms(settings: Settings, h: str) -> int:
    spec = settings.training.horizons[h]
    return spec.bars * timeframe_ms(spec.timeframe)


def _why_missing(coin: str, tf: str, inp: CycleInput, t_now: int, row_exists: bool) -> str:
    reports = {k: v for k, v in inp.quality.items() if k.startswith(f"ohlcv/{tf}/{coin}-")}
    if not reports:
        return f"no {tf} price series"
    if all(r["status"] == "excluded" for r in reports.values()):
        codes = sorted({c for r in reports.values() for c in r["issues"] if c in ("stale", "no_data")})
        return f"{tf} series excluded by the quality gate ({', '.join(codes) or 'excluded'})"
    if not row_exists:
        panel = inp.panels[tf]
        if coin not in panel.coins:
            return f"{tf} series not used"
        j = panel.coins.index(coin)
        slot = (t_now - timeframe_ms(tf) - panel.open_ts[0]) // timeframe_ms(tf) if panel.open_ts.size else -1
        if slot < 0 or slot >= panel.open_ts.size or not np.isfinite(panel.fields["close"][slot, j]):
            return f"no candle closing at {ms_to_iso(t_now)}"
        return "features incomplete at as-of (warm-up, a gap in a window, or a missing layer)"
    return "sequence window incomplete (a missing row among the last L)"


def certification(model: HorizonModel, threshold: float, min_n: int) -> str | None:
    """None when the model's held-out confident bucket backs its confidences; otherwise why not."""
    conf = model.metadata.get("metrics", {}).get("confident", {})
    n, hit = int(conf.get("n") or 0), conf.get("hit_rate")
    if n < min_n:
        return f"held-out evidence at confidence >= {threshold}: {n} rows (< {min_n})"
    if hit is None or hit < threshold:
        return f"held-out hit rate at confidence >= {threshold} is {hit:.3f} over {n} rows"
    return None


@dataclass
class _HorizonOut:
    records: list[dict] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)  # coin -> reason
    uncertified: str | None = None


def _predict_horizon(settings: Settings, lake: Lake, inp: CycleInput, h: str, model: HorizonModel) -> _HorizonOut:
    out = _HorizonOut()
    thr = settings.confidence_threshold
    out.uncertified = certification(model, thr, settings.run.certify_min_n)
    spec = settings.training.horizons[h]
    tf, step = spec.timeframe, timeframe_ms(spec.timeframe)
    frame = inp.frames.get(tf)
    t_now = (inp.as_of_ms // step) * step  # the latest candle close at or before as-of
    if frame is None or len(frame) == 0:
        out.excluded = {c: _why_missing(c, tf, inp, t_now, False) for c in inp.coins}
        return out
    if frame.names != model.names:
        raise CstError("feature_mismatch", f"model {h}/{model.version} was trained on other features; retrain")
    idx, full = sequence_index(frame.ts, frame.coin, step, spec.sequence_length)
    now_rows = np.flatnonzero(frame.ts == t_now)
    have = {frame.coin[i]: i for i in now_rows}
    rows = [i for i in now_rows if full[i]]
    for c in inp.coins:
        if c not in have or not full[have[c]]:
            out.excluded[c] = _why_missing(c, tf, inp, t_now, c in have)
    if not rows:
        return out
    rows = np.asarray(rows)
    X, S = frame.X[rows], sequences(frame.X, idx[rows])
    pred = model.predict(X, S)
    phi, base = explain_rows(model, lake.uri, X, S, permutations=settings.training.shap_permutations,
                             seed=settings.training.seed, workers=settings.run.process_workers,
                             min_rows=settings.run.pool_min_rows)
    tops = top_features(phi, model.names, settings.training.shap_top_k)
    for k, i in enumerate(rows):
        out.records.append({
            "run_id": inp.run_id, "coin": str(frame.coin[i]), "horizon": h, "as_of": ms_to_iso(inp.as_of_ms),
            "decision_ts": int(frame.ts[i]), "p_up": float(pred.p_up[k]), "p_low": float(pred.low[k]),
            "p_high": float(pred.high[k]), "direction": int(pred.direction[k]),
            "confidence": float(pred.confidence[k]), "q10": float(pred.quantiles[k, 0]),
            "q50": float(pred.quantiles[k, 1]), "q90": float(pred.quantiles[k, 2]),
            "model_version": model.version,
            "actionable": out.uncertified is None and actionable(float(pred.confidence[k]), thr),
            "shap_base": float(base[k]), "top_features": json.dumps(tops[k]),
        })
    return out


def predict_all(settings: Settings, lake: Lake, inp: CycleInput, models: dict[str, HorizonModel],
                tick: Callable[[str], None]) -> CycleResult:
    """Every horizon side by side (ONNX and SHAP release the GIL); results merged in horizon order."""
    res = CycleResult()
    tick(f"predicting {', '.join(models)}")
    with ThreadPoolExecutor(max(1, settings.run.horizon_workers)) as pool:
        outs = list(pool.map(lambda hm: _predict_horizon(settings, lake, inp, *hm), models.items()))
    for h, out in zip(models, outs, strict=True):
        if out.uncertified:
            res.uncertified[h] = out.uncertified
        for c, why in out.excluded.items():
            res.excluded.setdefault(c, {})[h] = why
        res.predictions.extend(out.records)
    res.signals = consensus(res.predictions, settings.consensus_min_horizons)
    return res


def write_predictions(lake: Lake, run_id: str, predictions: list[dict]) -> int:
    """One part per (run, horizon, coin); create-if-absent, so a re-run never rewrites a prediction."""
    written = 0
    for p in predictions:
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist([p]), buf)
        key = f"predictions/run_id={run_id}/horizon={p['horizon']}/coin={p['coin']}/part.parquet"
        written += lake.put(key, buf.getvalue(), if_absent=True)
    return written


def record_outcomes(settings: Settings, lake: Lake, inp: CycleInput) -> list[tuple[str, str]]:
    """Every logged prediction whose horizon has passed and whose prices are known gets its outcome, once."""
    done = set(lake.list("outcomes/"))
    touched = []
    for key in lake.list("predictions/"):
        m = PRED_KEY.match(key)
        if not m or m["h"] not in settings.training.horizons:
            continue
        out_key = f"outcomes/horizon={m['h']}/coin={m['c']}/run_id={m['run']}.json"
        if out_key in done:
            continue
        row = pq.read_table(io.BytesIO(lake.get(key))).to_pylist()[0]
        spec = settings.training.horizons[m["h"]]
        tf, step = spec.timeframe, timeframe_ms(spec.timeframe)
        end = row["decision_ts"] + horizon_ms(settings, m["h"])
        panel = inp.panels.get(tf)
        if end > inp.as_of_ms or panel is None or m["c"] not in panel.coins or not panel.open_ts.size:
            continue
        j = panel.coins.index(m["c"])
        a = (row["decision_ts"] - step - panel.open_ts[0]) // step
        b = a + spec.bars
        if a < 0 or b >= panel.open_ts.size:
            continue
        c0, c1 = panel.fields["close"][a, j], panel.fields["close"][b, j]
        if not (np.isfinite(c0) and np.isfinite(c1)):
            continue  # a missing price is never guessed: the outcome waits or stays unknown
        r = float(np.log(c1 / c0))
        doc = {"run_id": m["run"], "coin": m["c"], "horizon": m["h"], "decision_ts": row["decision_ts"],
               "matured_ts": int(end), "recorded_as_of": ms_to_iso(inp.as_of_ms), "realized_return": r,
               "direction": row["direction"], "hit": bool((r > 0 and row["direction"] == 1) or (r < 0 and row["direction"] == -1)),
               "p_up": row["p_up"], "confidence": row["confidence"], "actionable": row["actionable"],
               "model_version": row["model_version"]}
        if lake.put_json(out_key, doc, if_absent=True):
            touched.append((m["h"], m["c"]))
    return touched


def outcomes_of(lake: Lake, horizon: str, coin: str | None = None) -> list[dict]:
    prefix = f"outcomes/horizon={horizon}/" + (f"coin={coin}/" if coin else "")
    docs = [lake.get_json(k) for k in lake.list(prefix)]
    return sorted(docs, key=lambda d: (d["decision_ts"], d["coin"]))


def update_performance(settings: Settings, lake: Lake, run_id: str, touched: list[tuple[str, str]]) -> None:
    w = settings.run.performance_window
    for h, c in sorted(set(touched)):
        docs = outcomes_of(lake, h, c)[-w:]
        p = np.array([d["p_up"] for d in docs])
        y = np.array([1.0 if d["realized_return"] > 0 else 0.0 for d in docs])
        lake.put_json(f"performance/horizon={h}/coin={c}/run_id={run_id}.json", {
            "horizon": h, "coin": c, "run_id": run_id, "window": len(docs),
            "hit_rate": float(np.mean([d["hit"] for d in docs])), "brier": brier(p, y), "ece": ece(p, y),
            "actionable_hit_rate": (float(np.mean([d["hit"] for d in docs if d["actionable"]]))
                                    if any(d["actionable"] for d in docs) else None),
        })


def check_drift(settings: Settings, lake: Lake, inp: CycleInput, models: dict[str, HorizonModel]) -> dict:
    report = {}
    for h, model in models.items():
        tf = settings.training.horizons[h].timeframe
        frame = inp.frames.get(tf)
        if frame is None or len(frame) == 0:
            report[h] = {"retrain": False, "reasons": [], "note": f"no {tf} rows at this as-of"}
            continue
        # Only rows the model never saw can drift from what it saw: after its last label window.
        from shared.contracts import iso_to_ms

        seen = iso_to_ms(model.metadata["training_window"]["last"]) + horizon_ms(settings, h)
        unseen = frame.ts[(frame.ts > seen) & (frame.ts <= inp.as_of_ms)]
        window = settings.run.drift_window.get(tf, 60)
        times = np.unique(unseen)[-window:]
        # Slow features (30-day volatility, sentiment level) barely move within a few weeks: a window
        # shorter than the configured one would compare one regime snapshot with a year and always "drift".
        recent = frame.X[np.isin(frame.ts, times)] if times.size >= window else frame.X[:0]
        report[h] = drift_mod.judge(model.names, model.metadata["drift_reference"], recent, outcomes_of(lake, h),
                                    float(model.metadata["metrics"]["cv_brier"]), settings.run)
    return report


def load_models(lake: Lake, horizons: list[str]) -> dict[str, HorizonModel]:
    return {h: HorizonModel.load(lake, h) for h in horizons if current_version(lake, h) is not None}


def risk_gate(settings: Settings, inp: CycleInput, res: CycleResult) -> None:
    """Size and guard each consensus signal as the backtest enters it; the outcome rides on the signal.

    A signal is tradable only when its risk entry allows it; every guard decision is kept with its reason.
    """
    if not res.signals:
        return
    panel = inp.panels.get("1d")
    orders = orders_from_signals(res.signals, settings.training.horizons)
    gated = {}
    if panel is not None and panel.open_ts.size and orders:
        for o, g in zip(orders, live_gate(market_from_panel(panel), orders, BacktestConfig(**settings.risk.model_dump())),
                        strict=True):
            gated[o.coin] = g
    for sig in res.signals:
        sig["risk"] = gated.get(sig["coin"]) or {
            "coin": sig["coin"], "allow": False, "size_fraction": 0.0, "notional": 0.0, "cost_bps": None,
            "decisions": [{"guard": "risk", "allow": False, "scale": 0.0,
                           "reason": "no daily horizon or no daily prices: the order cannot be sized"}]}
        sig["tradable"] = bool(sig["risk"]["allow"])


def summary(inp: CycleInput, res: CycleResult, trained: dict, extra: dict) -> dict:
    predicted = sorted({p["coin"] for p in res.predictions})
    excluded = {c: "; ".join(f"{h}: {why}" for h, why in sorted(hs.items()))
                for c, hs in sorted(res.excluded.items()) if c not in predicted}
    return {
        "run_id": inp.run_id, "as_of": ms_to_iso(inp.as_of_ms), "coins_total": len(inp.coins),
        "coins_predicted": len(predicted), "excluded": excluded,
        "partially_excluded": {c: hs for c, hs in sorted(res.excluded.items()) if c in predicted},
        "predictions": len(res.predictions), "actionable": sum(p["actionable"] for p in res.predictions),
        "uncertified_horizons": res.uncertified,
        "signals": res.signals, "tradable_signals": sum(bool(s.get("tradable")) for s in res.signals),
        "outcomes_recorded": res.outcomes_recorded, "drift": res.drift,
        "trained": trained, "timings": {k: round(v, 3) for k, v in res.timings.items()}, **extra,
    }


class Timer:
    def __init__(self, timings: dict[str, float], step: str):
        self.timings, self.step = timings, step

    def __enter__(self):
        self.t = time.perf_counter()

    def __exit__(self, *exc):
        self.timings[self.step] = self.timings.get(self.step, 0.0) + time.perf_counter() - self.t


def existing_summary(lake: Lake, run_id: str) -> dict | None:
    try:
        return lake.get_json(f"runs/run_id={run_id}/summary.json")
    except LakeKeyNotFound:
        return None
