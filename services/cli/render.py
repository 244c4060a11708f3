"""The tables the `cst` commands print: quality, signals, training, evaluation and backtest."""

from __future__ import annotations

from collections import Counter

from rich.table import Table

from services.predict.board import price_text
from shared.contracts import QualityReport
from shared.records import Basket, Forecast, Prediction, Signal, TrainingFailure, TrainingResult


def quality_table(report: QualityReport, compact: bool = False) -> Table:
    """Every series on its own line; `compact` (what a run prints): one line per status and kind of issue, the
    series named once (ok series only counted), so a wide universe's usual exclusions are said once, not per series."""
    colour = {"ok": "green", "quarantined": "yellow", "excluded": "red"}
    if compact:
        table = Table(title=f"quality at as-of {report.as_of} (by status and issue; `cst validate` lists every series)")
        for col in ("status", "issues", "series", "names"):
            table.add_column(col)
        groups: dict[tuple[str, str], list[str]] = {}
        for key, s in report.series.items():
            groups.setdefault((s.status, ", ".join(sorted(s.issues)) or "-"), []).append(key)
        for (status, issues), keys in sorted(groups.items(), key=lambda kv: (kv[0][0] != "ok", kv[0])):
            names = "" if status == "ok" else ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")
            table.add_row(f"[{colour[status]}]{status}[/]", issues, str(len(keys)), names)
        return table
    table = Table(title=f"quality at as-of {report.as_of}")
    table.add_column("series", no_wrap=True)
    table.add_column("status")
    table.add_column("rows", justify="right")
    table.add_column("rejected", justify="right")
    table.add_column("issues")
    for key, s in report.series.items():
        issues = ", ".join(f"{k}={v}" for k, v in s.issues.items())
        table.add_row(key, f"[{colour[s.status]}]{s.status}[/]", str(s.rows), str(s.rejected_rows), issues)
    return table


def summary_line(report: QualityReport) -> str:
    counts = Counter(s.status for s in report.series.values())
    return f"{len(report.series)} series: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in ("ok", "quarantined", "excluded"))


def signals_table(predictions: list[Prediction], signals: list[Signal]) -> Table:
    table = Table(title="actionable predictions (confidence >= threshold) and consensus signals")
    for col in ("coin", "horizon", "direction", "p_up", "interval", "confidence", "q10 / q50 / q90", "top features", "signal"):
        table.add_column(col)
    signalled = {s.coin: s for s in signals}
    for p in sorted((p for p in predictions if p.actionable), key=lambda p: (p.coin, p.horizon)):
        tops = ", ".join(f"{t.feature} {t.contribution:+.2f}" for t in p.tops()[:3])
        table.add_row(p.coin, p.horizon, "up" if p.direction == 1 else "down", f"{p.p_up:.3f}",
                      f"[{p.p_low:.3f}, {p.p_high:.3f}]", f"{p.confidence:.3f}",
                      f"{p.q10:+.3f} / {p.q50:+.3f} / {p.q90:+.3f}", tops, signal_cell(signalled.get(p.coin)))
    return table


def basket_table(basket: Basket, cross_section: list[Signal]) -> Table:
    """The market-neutral basket, under its label, with the cross-sectional candidates beside its names."""
    table = Table(title=basket.label)
    for col in ("side", "coin", "score", "P(beats)", "weight", "notional", "entry impact", "candidate"):
        table.add_column(col)
    cand = {s.coin: f"{s.direction} ({', '.join(s.horizons)})" for s in cross_section}
    for x in basket.long + basket.short:
        table.add_row(x.side, x.coin, f"{x.score:+.3f}", "-" if x.p_beats is None else f"{x.p_beats:.3f}",
                      f"{x.weight:+.1%}", f"{x.notional:,.0f}", f"{x.impact_bps:.1f} bps", cand.get(x.coin, ""))
    return table


def signal_cell(sig: Signal | None) -> str:
    if not sig:
        return ""
    head = f"[bold]{sig.direction} ({', '.join(sig.horizons)})[/]"
    risk = sig.risk
    if risk is None:
        return head
    if risk.allow:
        return f"{head} size {risk.size_fraction:.1%} of equity, cost {risk.cost_bps:.1f} bps"
    return f"{head} [red]not traded[/]: {risk.refusal}"


def evaluation_table(metrics: dict) -> Table:
    table = Table(title=f"out of sample after {metrics['train_until']} (1h after {metrics['train_until_1h']}); "
                        "[90% block-bootstrap intervals]")
    for col in ("horizon", "n", "base rate", "skill", "ECE", "plain GBT skill", "outside cal.", "80% range cov. / width",
                "naive cov. / width", "conf n / hit", "skill verdicts"):
        table.add_column(col)

    def f(v, spec=".4f"):
        return "-" if v is None else format(v, spec)

    def ci(v, iv, spec):
        return f"{f(v, spec)} [{f(iv[0], spec)}, {f(iv[1], spec)}]" if iv else f(v, spec)

    for h, m in metrics["horizons"].items():
        c = m["confident"]
        plain = m.get("references", {}).get("plain_gbt", {})
        verdicts = sorted({str(x.get("skill")) for x in m.get("models", [])})
        table.add_row(h, str(m["n"]), f(m["base_rate"], ".3f"), ci(m["brier_skill"], m.get("brier_skill_interval"), "+.3f"),
                      ci(m["ece"], m.get("ece_interval"), ".3f"),
                      ci(plain.get("brier_skill"), plain.get("brier_skill_interval"), "+.3f"),
                      f((m["scores"] or {}).get("served_outside_calibration_range"), ".3f"),
                      f"{f(m.get('range_coverage'), '.3f')} / {f(m.get('range_median_width'), '.3f')}",
                      f"{f(m.get('range_naive_coverage'), '.3f')} / {f(m.get('range_naive_median_width'), '.3f')}",
                      f"{c['n']} / {f(c['hit_rate'], '.3f')}", ", ".join(verdicts))
    return table


def backtest_table(bt: dict) -> Table:
    table = Table(title=f"backtest {bt['from'][:10]} to {bt['to'][:10]}, threshold {bt['threshold']}, "
                        f"{bt['signals']} consensus signals")
    cols = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "calmar", "trades", "hit_rate", "turnover",
            "exposure")
    table.add_column("curve")
    for c in cols:
        table.add_column(c)
    for name, m in bt["table"].items():
        table.add_row(name, *["-" if m.get(c) is None else (f"{m[c]:.3f}" if isinstance(m[c], float) else str(m[c]))
                              for c in cols])
    return table


def training_table(results: dict[str, TrainingResult]) -> Table:
    table = Table(title="training (held-out: later half of out-of-fold stacked predictions)")
    for col in ("horizon", "version", "rows", "CV Brier", "Brier skill", "ECE", "calibrator", "conf>=thr n / hit",
                "CURRENT", "wall s"):
        table.add_column(col)
    for h, m in results.items():
        if isinstance(m, TrainingFailure):
            table.add_row(h, f"[red]not trained[/]: [{m.error}] {m.message}", *[""] * 8)
            continue
        mt, conf = m.metrics, m.metrics["confident"]
        hit = "-" if conf["hit_rate"] is None else f"{conf['hit_rate']:.3f}"
        table.add_row(h, m.version, str(m.training_window.rows), f"{mt['cv_brier']:.4f}",
                      f"{mt['brier_skill']:+.4f}", f"{mt['ece']:.4f}", m.calibration["method"],
                      f"{conf['n']} / {hit}", "moved" if m.promoted else f"kept ({m.gate.reason if m.gate else 'no gate decision'})",
                      "" if m.wall_seconds is None else str(m.wall_seconds))
    return table


def forecasts_table(rows: list[Forecast], uncertified: dict[str, str] | None = None) -> Table:
    """The board: one line per forecast; why a horizon is not certified is said once, under the table."""
    table = Table(title=f"every forecast of this run ({len(rows)})")
    for col in ("horizon", "coin", "P(up) [interval]", "P(beats)", "volatility", "80% range (return)",
                "80% range (price)", "actionable?"):
        table.add_column(col)
    for r in rows:
        rng = f"{r.range_low:+.1%} to {r.range_high:+.1%}" if r.range_low is not None else "none yet"
        prices = f"{price_text(r.price_low)} to {price_text(r.price_high)}" if r.price_low is not None else "-"
        if r.actionable:
            verdict = "[green]yes[/]"
        elif not r.horizon_certified:
            verdict = "[dim]no: horizon not certified[/]"
        else:
            verdict = f"[dim]no: confidence {r.confidence:.2f}[/]"
        table.add_row(r.horizon, r.coin, f"{r.p_up:.1%} [{r.p_up_low:.1%}, {r.p_up_high:.1%}]",
                      "-" if r.p_beats is None else f"{r.p_beats:.1%}",
                      "-" if r.vol_forecast is None else f"{r.vol_forecast:.1%}", rng, prices, verdict)
    notes = [f"{h}: not certified: {why}" for h, why in (uncertified or {}).items() if any(r.horizon == h for r in rows)]
    if any(r.range_low is None for r in rows):
        notes.append("range 'none yet': neither held-out scores nor an outcome has calibrated that horizon's range")
    if notes:
        table.caption = "\n".join(notes)
    return table
