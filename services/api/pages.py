"""The dashboard: server-rendered pages over the lake (signals, ranges, a coin, performance, runs, data quality,
models), with Chart.js charts served by the app itself and the operator's buttons shown to operators only.

Pages take the browser's session cookie (or a bearer token); without one they send the browser to `/login`. Charts
are Chart.js configurations rendered here into `data-chart` attributes and drawn by `/static/charts.js`: no inline
script, so the Content-Security-Policy stays `default-src 'self'`. The forms post with the CSRF token of the cookie.
"""

import json
import math
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import numpy as np
from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.api import reads
from services.api.auth import Identity, Unauthorized
from services.api.login import CSRF_COOKIE
from services.api.models import QualityView
from services.predict.board import price_text
from shared.audit import load_watchlist, save_watchlist
from shared.metrics import wilson
from shared.records import DriftVerdict, RunSummary
from shared.settings import Settings
from shared.storage import Lake

HERE = Path(__file__).resolve().parent
# The charting library, installed from the npm registry by `npm ci --prefix services/api` (package-lock.json pins it).
CHART_JS = HERE / "node_modules" / "chart.js" / "dist" / "chart.umd.min.js"
NAV = [("/", "Signals"), ("/board", "Board"), ("/ranges", "Ranges"), ("/performance", "Performance"), ("/runs", "Runs"),
       ("/track-record", "Track record"), ("/quality", "Data quality"), ("/models", "Models"), ("/alerts", "Alerts")]
UP, DOWN, BAND, GREY = "#1b7f3b", "#b3261e", "rgba(54, 110, 201, 0.18)", "#5d6673"
COLORS = ["#366ec9", "#d9822b", "#1b7f3b", "#8e44ad", "#b3261e", "#2c9aa0", "#7a6a2a", "#c2185b", "#455a64"]
PAGE = 50

_env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                   trim_blocks=True, lstrip_blocks=True)


def pct(x: float | None, digits: int = 1, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{100 * x:{'+' if signed else ''}.{digits}f}%"


def num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def day(ms: int, timeframe: str = "1d") -> str:
    t = datetime.fromtimestamp(ms / 1000, UTC)
    return t.strftime("%Y-%m-%d") if timeframe == "1d" else t.strftime("%Y-%m-%d %H:%M")


def _chart(kind: str, labels: list, datasets: list[dict], *, x: str = "", y: str = "", horizontal: bool = False,
           legend: bool = True, extra: dict | None = None) -> dict:
    scales = {"x": {"title": {"display": bool(x), "text": x}}, "y": {"title": {"display": bool(y), "text": y}}}
    options: dict[str, Any] = {"scales": scales, "plugins": {"legend": {"display": legend}}}
    if horizontal:
        options["indexAxis"] = "y"
    if extra:
        for k, v in extra.items():
            options[k] = {**options.get(k, {}), **v} if isinstance(v, dict) else v
    return {"type": kind, "data": {"labels": labels, "datasets": datasets}, "options": options}


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


# --- page builders: plain functions of lake contents, so each is testable without a browser ----------------------


def human(value) -> str:
    """A reason stored as a mapping (e.g. {"code": ..., "message": ...}) as one line of text."""
    if isinstance(value, dict):
        msg = value.get("message") or value.get("reason")
        code = value.get("code") or value.get("error")
        if msg:
            return f"{msg} ({code})" if code else str(msg)
        return "; ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def signals_page(settings: Settings, summary: RunSummary | None) -> dict:
    if summary is None:
        return {"signals": [], "why": [], "nothing": "No run has completed yet.",
                "min_horizons": settings.consensus_min_horizons, "cross_section": [], "cross_why": [],
                "basket": None, "basket_note": "no run has completed yet"}
    order = {h: k for k, h in enumerate(settings.training.horizons)}

    def in_order(d: dict) -> list[tuple[str, str]]:
        return sorted(((h, reason if isinstance(reason, str) else human(reason)) for h, reason in d.items()),
                      key=lambda kv: order.get(kv[0], len(order)))

    why = in_order({**summary.uncertified_horizons, **summary.horizons_without_model})
    if summary.status != "complete":
        # A failed run judged only some horizons (or none): never call the others certified.
        steps = ", ".join(sorted({f.step for f in summary.failures})) or "a step"
        nothing = (f"This run did not complete ({steps} failed): horizons it did not judge are not certified, and "
                   "its signals, if any, are partial.")
    else:
        nothing = "" if why else "Every horizon is certified, and no coin reached 80% on enough agreeing horizons."
    return {"signals": summary.signals, "why": why, "nothing": nothing,
            "min_horizons": settings.consensus_min_horizons,
            "cross_section": summary.cross_section_signals,
            "cross_why": in_order(summary.cross_section_uncertified),
            "basket": summary.basket, "basket_note": summary.basket_note,
            "basket_decision": day(summary.basket.decision_ts, "1h" if summary.basket.horizon == "1h" else "1d")
            if summary.basket else None}


def ranges_page(lake: Lake, horizons: list[str], summary: RunSummary | None) -> dict:
    out = []
    for h in horizons:
        rows = reads.latest_rows(lake, h)
        table, labels, bands, medians = [], [], [], []
        for r in rows:
            lo, hi = r.range_low, r.range_high
            has = lo is not None and hi is not None
            table.append({"coin": r.coin, "range": f"{pct(lo, signed=True)} to {pct(hi, signed=True)}" if has else "–",
                          "median": pct(r.q50, signed=True), "p_up": pct(r.p_up), "skill": r.skill or "",
                          "vol": pct(r.vol_forecast) if r.vol_forecast is not None else "–"})
            if has:
                labels.append(r.coin)
                bands.append([round(100 * lo, 3), round(100 * hi, 3)])
                medians.append(_finite(100 * r.q50) if r.q50 is not None else None)
        chart = _chart("bar", labels, [
            {"type": "bar", "label": "80% range (%)", "data": bands, "backgroundColor": "rgba(54, 110, 201, 0.45)"},
            {"type": "scatter", "label": "median (%)", "data": medians, "backgroundColor": "#1d2330", "pointRadius": 3},
        ], x="return over the horizon (%)", horizontal=True)
        why = summary.horizons_without_model.get(h) if summary else None
        out.append({"horizon": h, "rows": table, "chart": chart, "why": why,
                    "decision": day(rows[0].decision_ts, "1h" if h == "1h" else "1d") if rows else None})
    return {"horizons": out}


def board_page(lake: Lake, settings: Settings, horizons: list[str], summary: RunSummary | None,
               watched: list[str], only_watched: bool) -> dict:
    """Every coin and horizon of the newest decisions: P(up), P(beats), the range as prices, volatility, the verdict
    and how P(up) moved since the coin's previous forecast of the horizon; the user's watched coins first."""
    uncertified = summary.uncertified_horizons if summary else {}
    rows = [r for r in reads.board(lake, settings, horizons, summary) if not only_watched or r.coin in watched]
    seen = set(watched)
    table = [{"coin": r.coin, "horizon": r.horizon, "order": horizons.index(r.horizon), "watched": r.coin in seen,
              "decision": r.decision.replace("T", " ")[:16],
              "p_up": r.p_up, "p_up_text": f"{pct(r.p_up)} [{pct(r.p_up_low)}, {pct(r.p_up_high)}]",
              "p_beats": r.p_beats, "vol": r.vol_forecast, "change": r.change,
              "range": (f"{pct(r.range_low, signed=True)} to {pct(r.range_high, signed=True)}"
                        if r.range_low is not None else "not calibrated yet"),
              "prices": (f"{price_text(r.price_low)} – {price_text(r.price_high)}" if r.price_low is not None
                         else "–"),
              "close": price_text(r.close), "actionable": r.actionable,
              "verdict": "actionable" if r.actionable else
              ("horizon not certified" if not r.horizon_certified else f"confidence {pct(r.confidence)}")}
             for r in rows]
    table.sort(key=lambda r: (not r["watched"], r["order"], r["coin"]))
    notes = [(h, why) for h, why in uncertified.items() if h in horizons]
    return {"rows": table, "watched": sorted(seen), "only_watched": only_watched, "notes": notes,
            "refresh_seconds": settings.api.board_refresh_seconds}


def coin_page(lake: Lake, settings: Settings, horizons: list[str], coin: str, horizon: str,
              summary: RunSummary | None) -> dict | None:
    from services.features.store import read_panel

    latest = reads.latest_per_horizon(lake, horizons, coin)
    if not latest:
        return None
    uncertified = summary.uncertified_horizons if summary else {}
    forecasts = [{
        "horizon": h, "p_up": pct(r.p_up),
        "interval": (f"{pct(r.p_low)} – {pct(r.p_high)}" if round(r.p_high - r.p_low, 4) > 0 else
                     "none: the base rate is served, not a forecast"),
        "range": (f"{pct(r.range_low, signed=True)} to {pct(r.range_high, signed=True)}"
                  if r.range_low is not None else "not calibrated yet"),
        "vol": pct(r.vol_forecast) if r.vol_forecast is not None else "no forecast in this model",
        "decision": day(r.decision_ts, "1h" if h == "1h" else "1d"), "model_version": r.model_version,
        "certified": h not in uncertified, "why": uncertified.get(h, "")} for h, r in latest.items()]
    spec = settings.training.horizons[horizon]
    tf, step = spec.timeframe, spec.length_ms // max(1, spec.bars)
    preds = [r for r in reads.predictions(lake, [horizon], coin=coin)][:120][::-1]
    outcomes = reads.coin_outcomes(lake, horizon, coin)
    by_decision = {o.decision_ts: o for o in outcomes}
    page: dict[str, Any] = {"forecasts": forecasts, "horizon_tabs": list(latest), "horizon": horizon,
                            "price_chart": None, "p_chart": None, "shap_chart": None, "shap_note": ""}
    if preds:
        first = preds[0].decision_ts - 30 * step
        last_maturity = preds[-1].decision_ts + spec.length_ms
        panel = read_panel(lake, tf, since_ms=first - step)
        if panel is not None and coin in panel.coins and panel.open_ts.size:
            j = panel.coins.index(coin)
            # A candle opened at t closes at t + step: the price known at decision time t is the close of t - step.
            ts = panel.open_ts + step
            grid = np.arange(ts[0], max(int(ts[-1]), last_maturity) + step, step, dtype=np.int64)
            ohlc = {}
            for f in ("open", "high", "low", "close"):
                ohlc[f] = np.full(grid.size, np.nan)
                ohlc[f][(ts - grid[0]) // step] = panel.fields[f][:, j]
            close = ohlc["close"]
            lo, hi, reached, colors = [None] * grid.size, [None] * grid.size, [None] * grid.size, [None] * grid.size
            for p in preds:
                k0 = (p.decision_ts - grid[0]) // step
                k1 = k0 + spec.length_ms // step
                if not (0 <= k0 < grid.size and 0 <= k1 < grid.size) or not np.isfinite(close[k0]):
                    continue
                if p.range_low is not None:
                    lo[k1] = _finite(close[k0] * math.exp(p.range_low))
                    hi[k1] = _finite(close[k0] * math.exp(p.range_high))
                o = by_decision.get(p.decision_ts)
                if o is not None and np.isfinite(close[k1]):
                    reached[k1] = _finite(close[k1])
                    # Judged only where a range was served: grey where there was none to be in or out of.
                    colors[k1] = GREY if o.in_range is None else (UP if o.in_range else DOWN)
            labels = [day(int(t), tf) for t in grid]
            # Candles as floating bars (Chart.js draws [low, high] pairs): a thin wick and the open-close body,
            # green when the candle closed above its open.
            known = np.isfinite(ohlc["open"]) & np.isfinite(close) & np.isfinite(ohlc["high"]) & np.isfinite(ohlc["low"])
            pair = lambda a, b: [[_finite(x), _finite(y)] if ok else None  # noqa: E731
                                 for x, y, ok in zip(a, b, known, strict=True)]
            body_colors = [UP if c >= o else DOWN for o, c in zip(ohlc["open"], close, strict=True)]
            page["price_chart"] = _chart("bar", labels, [
                {"type": "bar", "label": "candle (high-low)", "data": pair(ohlc["low"], ohlc["high"]),
                 "backgroundColor": "#5d6673", "barPercentage": 0.15, "grouped": False, "order": 3},
                {"type": "bar", "label": "candle (open-close)", "data": pair(ohlc["open"], close),
                 "backgroundColor": body_colors, "barPercentage": 0.7, "grouped": False, "order": 2},
                {"type": "line", "label": "80% range (high)", "data": hi, "borderColor": "rgba(54, 110, 201, 0.7)",
                 "pointRadius": 2, "borderWidth": 1, "fill": "+1", "backgroundColor": BAND, "spanGaps": False,
                 "order": 1},
                {"type": "line", "label": "80% range (low)", "data": lo, "borderColor": "rgba(54, 110, 201, 0.7)",
                 "pointRadius": 2, "borderWidth": 1, "spanGaps": False, "order": 1},
                {"type": "line", "label": "price reached", "data": reached, "showLine": False, "pointRadius": 4,
                 "pointBackgroundColor": [c or GREY for c in colors], "borderColor": "transparent", "order": 0},
            ], y="price", extra={"scales": {"x": {"ticks": {"maxTicksLimit": 12}},
                                            "y": {"beginAtZero": False, "title": {"display": True, "text": "price"}}}})
        # One slot per decision step, so a gap in the record is a gap on the axis, not two days drawn side by side.
        slots = np.arange(preds[0].decision_ts, preds[-1].decision_ts + step, step, dtype=np.int64)[-2000:]
        at = {p.decision_ts: p for p in preds}

        def series(fn):
            return [_finite(fn(at[int(t)])) if int(t) in at else None for t in slots]

        realized = [(1.0 if by_decision[int(t)].realized_return > 0 else 0.0) if int(t) in by_decision and int(t) in at
                    else None for t in slots]
        page["p_chart"] = _chart("line", [day(int(t), tf) for t in slots], [
            {"label": "P(up)", "data": series(lambda p: p.p_up), "borderColor": COLORS[0], "pointRadius": 1,
             "spanGaps": False},
            {"label": "interval low", "data": series(lambda p: p.p_low), "borderColor": BAND,
             "pointRadius": 0, "fill": "+1", "backgroundColor": BAND, "spanGaps": False},
            {"label": "interval high", "data": series(lambda p: p.p_high), "borderColor": BAND,
             "pointRadius": 0, "spanGaps": False},
            {"label": "went up (1) / down (0)", "data": realized, "showLine": False, "pointRadius": 3,
             "borderColor": GREY, "backgroundColor": GREY},
        ], y="probability", x="decision time", extra={"scales": {"y": {"min": 0, "max": 1},
                                                                 "x": {"ticks": {"maxTicksLimit": 12}}}})
    newest = latest.get(horizon)
    if newest is not None:
        feats = json.loads(newest.top_features or "[]")
        page["shap_terms"] = [{"feature": f["feature"], "meaning": meaning(f["feature"]),
                               "contribution": f"{f['contribution']:+.3f}"} for f in feats]
        if feats:
            page["shap_chart"] = _chart("bar", [f["feature"] for f in feats], [{
                "label": "contribution to the log-odds", "data": [_finite(f["contribution"]) for f in feats],
                "backgroundColor": [UP if f["contribution"] > 0 else DOWN for f in feats]}],
                x="log-odds", horizontal=True, legend=False)
        if newest.skill == "no demonstrated skill":
            page["shap_note"] = ("No skill was demonstrated out of sample for this horizon, so the served probability "
                                 "is the base rate: these features move the model's raw score, not what is served.")
    page["outcomes"] = [{"decision": day(o.decision_ts, tf), "p_up": pct(o.p_up),
                         "ret": pct(o.realized_return, 2, signed=True), "hit": "yes" if o.hit else "no",
                         "in_range": "–" if o.in_range is None else ("yes" if o.in_range else "no")}
                        for o in outcomes[::-1][:30]]
    return page


def drift_text(d: DriftVerdict | None, none: str = "–") -> str:
    if d is None:
        return none
    if d.retrain:
        return "retrain: " + "; ".join(d.reasons)
    return "stable" + (f" ({d.psi_note or d.note})" if d.psi_note or d.note else "")


def rate(hits: int, n: int) -> str:
    """A hit rate as people should read it: the rate, the count it rests on and its 95% Wilson interval."""
    if n == 0:
        return "–"
    lo, hi = wilson(hits, n)
    return f"{pct(hits / n)} ({hits}/{n}; 95% {100 * lo:.0f}–{100 * hi:.0f}%)"


def mean_interval(x: np.ndarray, digits: int = 3) -> str:
    """A mean with its 95% normal interval (the sd of the mean), or the mean alone from fewer than two values."""
    if x.size < 2:
        return num(float(x.mean()) if x.size else None, digits)
    half = 1.959964 * float(x.std(ddof=1)) / math.sqrt(x.size)
    return f"{x.mean():.{digits}f} (95% {x.mean() - half:.{digits}f}–{x.mean() + half:.{digits}f}, n {x.size})"


def performance_page(lake: Lake, horizons: list[str], summary: RunSummary | None) -> dict:
    drift = summary.drift if summary else {}
    out = []
    for h in horizons:
        rows = reads.recent_outcomes(lake, h)
        entry: dict[str, Any] = {"horizon": h, "n": len(rows), "coins": []}
        entry["drift"] = drift_text(drift.get(h), none="no model")
        if rows:
            p = np.array([r.p_up for r in rows])
            y = np.array([1.0 if r.realized_return > 0 else 0.0 for r in rows])
            entry.update(hit=rate(sum(1 for r in rows if r.hit), len(rows)), brier=mean_interval((p - y) ** 2),
                         mean_p=pct(float(p.mean())), up_rate=rate(int(y.sum()), len(rows)))
            pts = [{"x": round(b.mean_p, 4), "y": round(b.up_rate, 4)} for b in reads.reliability(rows)]
            entry["reliability"] = _chart("scatter", [], [
                {"label": "realized up-rate per P(up) bin (≥5 outcomes)", "data": pts, "backgroundColor": COLORS[0],
                 "pointRadius": 5, "showLine": True, "borderColor": COLORS[0]},
                {"label": "perfect calibration", "data": [{"x": 0, "y": 0}, {"x": 1, "y": 1}], "showLine": True,
                 "pointRadius": 0, "borderColor": GREY, "borderDash": [4, 4]},
            ], x="forecast P(up)", y="realized up-rate",
                extra={"scales": {"x": {"min": 0, "max": 1, "type": "linear"}, "y": {"min": 0, "max": 1}}})
        perf = reads.latest_performance(lake, h)
        entry["coins"] = [{"coin": r.coin, "window": r.window,
                           "hit_rate": rate(round(r.hit_rate * r.window), r.window),
                           "brier": num(r.brier), "ece": num(r.ece),
                           "actionable_hit_rate": (
                               rate(round(r.actionable_hit_rate * r.actionable_outcomes), r.actionable_outcomes)
                               if r.actionable_outcomes else pct(r.actionable_hit_rate))} for r in perf]
        entry["hits"] = _chart("bar", [f"{r.coin} (n {r.window})" for r in perf], [
            {"label": "hit rate (%)", "data": [round(100 * r.hit_rate, 2) for r in perf],
             "backgroundColor": COLORS[1]}], y="hit rate over the coin's recent window (%)", legend=False,
            extra={"scales": {"y": {"min": 0, "max": 100}}})
        entry["few"] = [r.coin for r in perf if r.window < 20]
        out.append(entry)
    return {"horizons": out}


def money(x: float) -> str:
    """To the cent; a gap of -1e-10 reads 0.00, not -0.00."""
    return f"{round(x, 2) + 0.0:,.2f}"


def track_record_page(lake: Lake, settings: Settings) -> dict:
    """The paper books against BTC and the equal-weight universe, their drawdown, hits and costs, the last
    reconciliation with the backtest and the alerts sent."""
    from services.books.record import track_record

    tr = track_record(lake, settings)
    books = []
    for b in tr.books:
        labels = [day(t) for t in b.ts]
        line = lambda name, ys, c, dash=None: {  # noqa: E731
            "label": name, "data": [None if y is None else round(y, 6) for y in ys], "borderColor": c,
            "backgroundColor": c, "pointRadius": 0, "borderWidth": 2, "spanGaps": False,
            **({"borderDash": dash} if dash else {})}
        sets = [line(f"{b.book} book", b.growth, COLORS[0])]
        if any(v is not None for v in b.btc):
            sets.append(line("BTC (buy and hold)", b.btc, COLORS[1], [6, 3]))
        if any(v is not None for v in b.equal_weight):
            sets.append(line("equal-weight universe", b.equal_weight, GREY, [2, 3]))
        unit = "positions closed" if b.book == "signals" else "days"
        books.append({
            "book": b.book, "label": b.label, "venue": b.venue or "–", "since": day(b.start_ts),
            "until": day(b.last_close_ts), "total_return": pct(b.total_return, signed=True),
            "max_drawdown": pct(b.max_drawdown), "equity": money(b.equity[-1]),
            "hits": f"{rate(b.wins, b.closed)} of {b.closed} {unit}" if b.closed else f"no {unit} yet",
            "fills": b.fills, "fees": money(b.fees), "impact": money(b.impact), "funding": money(b.funding),
            "equity_chart": _chart("line", labels, sets, y="growth of 1 since the book's first close"),
            "drawdown_chart": _chart("line", labels, [{
                "label": "drawdown (%)", "data": [round(-100 * d, 3) for d in b.drawdown], "borderColor": DOWN,
                "backgroundColor": "rgba(179, 38, 30, 0.15)", "fill": True, "pointRadius": 0}],
                y="below the running peak (%)", legend=False),
            "positions": [{"coin": p.coin, "side": "long" if p.direction == 1 else "short", "since": day(p.entry_ts),
                           "until": day(p.exit_ts), "entry": price_text(p.entry_price),
                           "notional": money(p.entry_notional)} for p in b.positions],
            "holdings": [{"coin": c, "side": "long" if u > 0 else "short", "units": f"{abs(u):,.4g}"}
                         for c, u in sorted(b.holdings.items(), key=lambda kv: -kv[1])],
        })
    rec = tr.reconciliation
    return {"books": books, "benchmark_note": tr.benchmark_note,
            "alerts_sent": [(k.replace("_", " "), v) for k, v in tr.alerts_sent.items()],
            "reconciliation": None if rec is None else {
                "verdict": rec.verdict, "ok": rec.unexplained == 0, "made_at": rec.made_at.replace("T", " ")[:16],
                "period": f"{day(rec.from_ts)} to {day(rec.to_ts)}",
                "books": [(name, money(f["equity"]), money(f["replay_equity"]), money(f["gap"]),
                           ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in f["by_cause"].items()) or "none")
                          for name, f in rec.books.items()]}}


def age_text(ms: int) -> str:
    hours = ms / 3_600_000
    if hours < 1:
        return f"{max(0, round(ms / 60_000))} min"
    return f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.0f} days"


def freshness(latest: RunSummary | None, newest_decision_ms: int | None, fresh_ms: int,
              now_ms: int | None = None) -> dict:
    """What every page says about the data behind it: the newest decision time any forecast was made at, its age,
    whether that is older than the shortest horizon's bar allows (two bars: a missed run, or a run on old data), and
    whether the latest run finished."""
    status = None if latest is None or latest.status == "complete" else latest.status
    run_id = latest.run_id if latest is not None else None
    if newest_decision_ms is None:
        return {"text": "no forecast yet", "stale": True, "status": status, "run_id": run_id}
    now_ms = now_ms if now_ms is not None else int(datetime.now(UTC).timestamp() * 1000)
    age = now_ms - newest_decision_ms
    return {"text": f"newest forecasts made at {day(newest_decision_ms, '1h')} UTC, {age_text(age)} ago",
            "stale": age > fresh_ms, "status": status, "run_id": run_id}


def runs_page(lake: Lake, offset: int) -> dict:
    ids = reads.run_ids(lake)
    docs = [d for d in (reads.summary(lake, r) for r in ids[offset:offset + PAGE]) if d]
    rows = [{"as_of": d.as_of.replace("T", " ")[:16], "run_id": d.run_id, "status": d.status,
             "coins_predicted": d.coins_predicted, "excluded": len(d.excluded), "predictions": d.predictions,
             "actionable": d.actionable, "seconds": num(sum(d.timings.values()), 1), "failures": len(d.failures)}
            for d in docs]
    steps = sorted({s for d in docs for s in d.timings})
    chrono = docs[::-1]
    chart = _chart("bar", [d.as_of[:16] for d in chrono], [
        {"label": s, "data": [d.timings.get(s, 0) for d in chrono],
         "backgroundColor": COLORS[i % len(COLORS)], "stack": "t"} for i, s in enumerate(steps)],
        y="seconds per step", extra={"scales": {"x": {"stacked": True, "ticks": {"maxTicksLimit": 12}},
                                                "y": {"stacked": True}}}) if docs else None
    return {"runs": rows, "total": len(ids), "timing_chart": chart,
            "prev_offset": max(0, offset - PAGE) if offset > 0 else None,
            "next_offset": offset + PAGE if offset + PAGE < len(ids) else None}


def run_page(doc: RunSummary, horizons: list[str]) -> dict:
    timings = doc.timings
    chart = _chart("bar", list(timings), [{"label": "seconds", "data": list(timings.values()),
                                            "backgroundColor": COLORS[0]}], y="seconds", legend=False)
    rows = []
    for h in horizons:
        drift = doc.drift.get(h)
        rows.append({"horizon": h,
                     "cert": doc.uncertified_horizons.get(h) or
                     ("no model" if h in doc.horizons_without_model else "certified"),
                     "model": doc.horizons_without_model.get(h) or doc.trained.get(h) or doc.retrained.get(h)
                     or "current",
                     "drift": drift_text(drift)})
    return {"doc": doc, "timing_chart": chart, "horizons": rows}


def quality_page(report: QualityView | None) -> dict:
    if report is None:
        return {"report": None}
    series = [{"name": name, "status": s.status, "source": s.source, "rows": s.rows, "first": s.first or "–",
               "last": s.last or "–", "rejected": s.rejected_rows,
               "issues": "; ".join(f"{k} ×{v}" for k, v in sorted(s.issues.items())) or "–"}
              for name, s in sorted(report.series.items(), key=lambda kv: (kv[1].status == "ok", kv[0]))]
    counts = {"ok": sum(s["status"] == "ok" for s in series), "excluded": sum(s["status"] == "excluded" for s in series)}
    counts["other"] = len(series) - counts["ok"] - counts["excluded"]
    return {"report": report, "series": series, "counts": counts, "ignored": sorted(report.files_ignored.items()),
            "as_of": report.as_of, "run_id": report.run_id}


def models_page(lake: Lake, horizons: list[str]) -> dict:
    out = []
    every = reads.models(lake, horizons)
    for h, m in every.items():
        out.append({"horizon": h, "versions": [{
            "version": v.version, "current": v.current, "created": (v.created or "")[:19],
            "window": f"{v.training_window.first[:10]} – {v.training_window.last[:10]}" if v.training_window else "–",
            "skill": (v.skill or {}).get("verdict", "–"), "brier_skill": num(v.brier_skill, 4), "ece": num(v.ece),
            "gate": v.gate.reason if v.gate else "–"} for v in m.versions]})
    used = sorted({f for m in every.values() for v in m.versions if v.current
                   for f in v.features})
    return {"horizons": out, "glossary": [{"feature": f, "meaning": meaning(f)} for f in used]}


def meaning(feature: str) -> str:
    from services.features.registry import describe
    import services.features.blocks  # noqa: F401  (registers the blocks and their glossaries)

    return describe(feature) or "not described in the feature registry"


# --- routes ----------------------------------------------------------------------------------------------------


def add_pages(app: FastAPI, settings: Settings, lake: Lake, horizons: list[str],
              identify: Callable[[Request], Identity], act: Callable[[Identity, str, dict], str], *,
              secure_cookies: bool = True) -> None:
    """The page routes. `identify` verifies the request's token; `act` starts a run or a retrain and audits it."""
    from shared.settings import timeframe_ms

    fresh_ms = 2 * min(timeframe_ms(settings.training.horizons[h].timeframe) for h in horizons)

    class SignIn(Exception):
        """A page asked without a valid session: the browser goes to the sign-in form and comes back."""

        def __init__(self, target: str):
            self.target = target

    @app.exception_handler(SignIn)
    async def sign_in(_request: Request, exc: SignIn) -> RedirectResponse:
        return RedirectResponse(f"/login?next={quote(exc.target, safe='/')}", status_code=303)

    def page_viewer(request: Request) -> Identity:
        try:
            who = identify(request)
        except (Unauthorized, HTTPException):
            raise SignIn(request.url.path + (f"?{request.url.query}" if request.url.query else "")) from None
        if not who.is_viewer:
            raise HTTPException(403, detail={"error": "forbidden", "message": "no dashboard group"})
        return who

    Viewer = Annotated[Identity, Depends(page_viewer)]

    def render(request: Request, who: Identity, template: str, title: str, active: str, **ctx: Any) -> HTMLResponse:
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        summary = ctx.pop("summary", None)
        newest = [rows[0].decision_ts for h in horizons if (rows := reads.latest_rows(lake, h))]
        latest = summary if summary is not None else reads.latest_summary(lake)  # pages pass the latest summary
        ctx["freshness"] = freshness(latest, max(newest, default=None), fresh_ms)
        ctx.setdefault("as_of", summary.as_of if summary else None)
        ctx.setdefault("run_id", summary.run_id if summary else None)
        body = _env.get_template(template).render(title=title, nav=NAV, active=active, who=who, csrf=csrf,
                                                  flash=ctx.pop("flash", None), **ctx)
        response = HTMLResponse(body)
        if CSRF_COOKIE not in request.cookies:
            response.set_cookie(CSRF_COOKIE, csrf, httponly=False, samesite="strict", secure=secure_cookies, path="/")
        return response

    def page(path: str, **kwargs: Any):
        def wrap(fn):
            app.get(path, include_in_schema=False, response_class=HTMLResponse, **kwargs)(fn)
            return fn
        return wrap

    @page("/")
    @page("/signals")
    def signals(request: Request, who: Viewer):
        summary = reads.latest_summary(lake)
        return render(request, who, "signals.html", "Signals", "/", summary=summary, **signals_page(settings, summary))

    @page("/board")
    def board(request: Request, who: Viewer, watched: bool = False):
        summary = reads.latest_summary(lake)
        mine = load_watchlist(lake, who.username)
        return render(request, who, "board.html", "Board", "/board", summary=summary,
                      **board_page(lake, settings, horizons, summary, mine, watched))

    @app.post("/board/watch", include_in_schema=False)
    def watch(request: Request, coin: str = Form(max_length=15), action: str = Form("add", max_length=8),
              csrf: str = Form("", max_length=128)):
        who = _form_user(request, csrf)
        target = coin.strip().upper()
        if not target.isascii() or not target.isalnum() or action not in ("add", "remove"):
            raise HTTPException(400, detail={"error": "bad_watch", "message": "a coin name (letters and digits) "
                                                                              "and add or remove"})
        mine = load_watchlist(lake, who.username)
        save_watchlist(lake, who.username, [*mine, target] if action == "add" else [c for c in mine if c != target])
        return RedirectResponse("/board", status_code=303)

    @page("/ranges")
    def ranges(request: Request, who: Viewer):
        summary = reads.latest_summary(lake)
        return render(request, who, "ranges.html", "Ranges", "/ranges", summary=summary,
                      **ranges_page(lake, horizons, summary))

    @page("/coin")
    def coin_search(request: Request, coin: str = ""):
        target = coin.strip().upper()
        if not target.isalnum() or len(target) > 15:
            return RedirectResponse("/ranges", status_code=303)
        return RedirectResponse(f"/coins/{target}", status_code=303)

    @page("/coins/{coin}")
    def coin(request: Request, who: Viewer, coin: str, horizon: str | None = None):
        if not coin.isascii() or not coin.isalnum() or len(coin) > 15 or (horizon and horizon not in horizons):
            raise HTTPException(404, detail={"error": "unknown_coin", "message": "no such coin or horizon"})
        if coin != coin.upper():  # coins are named in capitals; /coins/btc is BTC's page
            return RedirectResponse(f"/coins/{coin.upper()}" + (f"?horizon={horizon}" if horizon else ""), 307)
        summary = reads.latest_summary(lake)
        chosen = horizon or next((h for h in ("24h", *horizons) if h in horizons), horizons[0])
        ctx = coin_page(lake, settings, horizons, coin, chosen, summary)
        if ctx is None:
            raise HTTPException(404, detail={"error": "unknown_coin", "message": f"no forecast for {coin}"})
        if chosen not in ctx["horizon_tabs"]:
            ctx["horizon_tabs"].append(chosen)
        return render(request, who, "coin.html", coin, "", summary=summary, coin=coin, **ctx)

    @page("/performance")
    def performance(request: Request, who: Viewer):
        summary = reads.latest_summary(lake)
        return render(request, who, "performance.html", "Performance", "/performance", summary=summary,
                      **performance_page(lake, horizons, summary))

    @page("/runs")
    def runs(request: Request, who: Viewer, offset: int = 0, started: str | None = None):
        flash = f"Started {started}." if started and reads.RUN_ID.match(started.rsplit(":", 1)[-1]) else None
        return render(request, who, "runs.html", "Runs", "/runs", all_horizons=horizons, flash=flash,
                      summary=reads.latest_summary(lake), **runs_page(lake, max(0, min(offset, 10_000_000))))

    @page("/runs/{run_id}")
    def run(request: Request, who: Viewer, run_id: str):
        doc = reads.summary(lake, run_id) if reads.RUN_ID.match(run_id) else None
        if doc is None:
            raise HTTPException(404, detail={"error": "unknown_run", "message": "no such run"})
        return render(request, who, "run.html", f"Run {run_id}", "/runs", as_of=doc.as_of, run_id=None,
                      as_of_label="Judged at",
                      **run_page(doc, horizons))

    @page("/alerts")
    def alerts_page(request: Request, who: Viewer, sent: str | None = None):
        from services.alerts import store

        rows = [{"event": a.event.replace("_", " "), "subject": a.subject, "as_of": a.as_of.replace("T", " ")[:16],
                 "title": a.title, "body": a.body, "link": a.link,
                 "deliveries": [(d.channel, d.ok, d.detail) for d in a.deliveries]} for a in store.recent(lake, 50)]
        flash = {"ok": "Test alert sent: its deliveries are listed below.",
                 "published": "Test alert published to the alerts topic: the alerts function delivers it."}.get(sent or "")
        return render(request, who, "alerts.html", "Alerts", "/alerts", alerts=rows, flash=flash,
                      channels=len(settings.alerts.urls), cloud=bool(settings.alerts.topic_arn))

    @page("/track-record")
    def track_record(request: Request, who: Viewer):
        return render(request, who, "track_record.html", "Track record", "/track-record",
                      **track_record_page(lake, settings))

    @app.post("/actions/test-alert", include_in_schema=False)
    def page_test_alert(request: Request, csrf: str = Form("", max_length=128)):
        who = _operator_form(request, csrf)
        published = isinstance(request.app.state.cst.send_test_alert(who), str)
        return RedirectResponse("/alerts?sent=" + ("published" if published else "ok"), status_code=303)

    @page("/quality")
    def quality(request: Request, who: Viewer):
        return render(request, who, "quality.html", "Data quality", "/quality", **quality_page(reads.quality(lake)))

    @page("/models")
    def models(request: Request, who: Viewer):
        return render(request, who, "models.html", "Models", "/models", **models_page(lake, horizons))

    @page("/models/{horizon}/{version}")
    def card(request: Request, who: Viewer, horizon: str, version: str):
        text = (reads.model_card(lake, horizon, version)
                if horizon in horizons and reads.RUN_ID.match(version) else None)
        if text is None:
            raise HTTPException(404, detail={"error": "unknown_model", "message": "no such model version"})
        return render(request, who, "card.html", f"Model {horizon} {version}", "/models", card=text)

    def _form_user(request: Request, csrf: str) -> Identity:
        """A signed-in dashboard user posting a form with the CSRF token of the session."""
        who = identify(request)  # a missing or bad token answers 401 with its code
        expected = request.cookies.get(CSRF_COOKIE, "")
        if not expected or not secrets.compare_digest(csrf, expected):
            raise HTTPException(403, detail={"error": "csrf", "message": "missing or wrong CSRF token"})
        if not who.is_viewer:
            raise HTTPException(403, detail={"error": "forbidden", "message": "no dashboard group"})
        return who

    def _operator_form(request: Request, csrf: str) -> Identity:
        who = _form_user(request, csrf)
        if not who.is_operator:
            raise HTTPException(403, detail={"error": "forbidden", "message": "operators only"})
        return who

    @app.post("/actions/run", include_in_schema=False)
    def start_run(request: Request, csrf: str = Form("", max_length=128)):
        who = _operator_form(request, csrf)
        started = act(who, "start_run", {})
        return RedirectResponse(f"/runs?started={quote(started, safe='')}", status_code=303)

    @app.post("/actions/retrain", include_in_schema=False)
    def retrain(request: Request, horizon: str = Form(max_length=8), csrf: str = Form("", max_length=128)):
        who = _operator_form(request, csrf)
        started = act(who, "retrain", {"horizon": horizon})
        return RedirectResponse(f"/runs?started={quote(started, safe='')}", status_code=303)

    @app.get("/static/vendor/chart.umd.min.js", include_in_schema=False)
    def chart_js():
        if not CHART_JS.is_file():
            return JSONResponse({"error": "charts_not_installed", "message": "run npm ci --prefix services/api"},
                                status_code=404)
        return FileResponse(CHART_JS, media_type="text/javascript")
