"""Evaluation and backtest report: PNG plots (matplotlib's Agg canvas, imported only when drawing) and one HTML page."""

from __future__ import annotations

import html
import math
import os
from pathlib import Path

import numpy as np

from services.evaluation.backtest import drawdown
from shared.errors import CstError
from shared.metrics import brier, ece, reliability

DPI = 110
PANEL_W, PANEL_H = 3.6, 4.0  # inches per small-multiple panel
WIDE = (10.0, 4.0)  # time-series plots
MAX_COLS = 4
MISSING = "–"  # how None is shown in tables


def _panels(n: int):
    """A figure with `n` small multiples (rows of at most MAX_COLS) on the Agg canvas; no pyplot global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols, rows = min(max(n, 1), MAX_COLS), max(1, math.ceil(n / MAX_COLS))
    fig = Figure(figsize=(max(WIDE[0], PANEL_W * cols), PANEL_H * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:max(n, 1)]


def _wide():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=WIDE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _no_data(ax, name: str) -> None:
    ax.set_title(name)
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")


def reliability_png(path, per_horizon: dict[str, tuple[np.ndarray, np.ndarray]], bins: int = 10) -> Path:
    """One reliability diagram per horizon: observed frequency against mean prediction per bin, the diagonal,
    and the rows per bin as bars (a well-calibrated point on an empty bin says nothing)."""
    fig, axes = _panels(len(per_horizon))
    fig.suptitle("Reliability: predicted P(up) vs observed frequency")
    for ax, (name, (p, y)) in zip(axes, per_horizon.items(), strict=False):
        p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
        if len(p) == 0:
            _no_data(ax, name)
            continue
        mean_p, freq, counts = reliability(p, y, bins)
        width = 1.0 / bins
        centres = (np.arange(bins) + 0.5) * width
        bars = ax.twinx()
        bars.bar(centres, counts, width=width * 0.9, color="0.85", zorder=0)
        bars.set_ylabel("rows per bin", color="0.45")
        bars.tick_params(axis="y", colors="0.45")
        bars.set_ylim(0, counts.max() * 3)  # bars in the lower third, under the curve
        ax.set_zorder(bars.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.plot([0, 1], [0, 1], ls="--", color="0.4", lw=1, label="perfectly calibrated")
        seen = counts > 0
        ax.plot(mean_p[seen], freq[seen], marker="o", color="C0", label="observed")
        for x, f, c in zip(mean_p[seen], freq[seen], counts[seen], strict=True):
            ax.annotate(f"{c}", (x, f), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7,
                        annotation_clip=True)
        ax.set(xlim=(0, 1), ylim=(0, 1.08), xlabel="predicted P(up)", ylabel="observed frequency of up",
               title=f"{name}: n={len(p)}, ECE {ece(p, y, bins):.3f}, Brier {brier(p, y):.3f}")
        ax.title.set_fontsize(9)
        ax.legend(loc="upper left", fontsize=7)
    return _save(fig, path)


def confidence_hist_png(path, per_horizon: dict[str, np.ndarray], threshold: float = 0.8) -> Path:
    """Histogram of confidence per horizon with the actionable threshold and the share at or above it."""
    fig, axes = _panels(len(per_horizon))
    fig.suptitle("Confidence per horizon")
    for ax, (name, conf) in zip(axes, per_horizon.items(), strict=False):
        conf = np.asarray(conf, dtype=float)
        conf = conf[np.isfinite(conf)]
        if len(conf) == 0:
            _no_data(ax, name)
            continue
        lo = 0.5 if conf.min() >= 0.5 else 0.0  # confidence = max(p, 1 - p) lives in [0.5, 1]
        ax.hist(conf, bins=np.linspace(lo, 1.0, 21), color="C0", alpha=0.8)
        above = int((conf >= threshold).sum())
        ax.axvline(threshold, color="C3", ls="--", label=f"threshold {threshold:.0%}")
        ax.set(xlim=(lo, 1.0), xlabel="confidence", ylabel="predictions",
               title=f"{name}: {above} of {len(conf)} at or above ({above / len(conf):.1%})")
        ax.title.set_fontsize(9)
        ax.legend(loc="upper right", fontsize=7)
    return _save(fig, path)


def range_coverage_png(path, per_horizon: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]],
                       nominal: float, window: int = 30) -> Path:
    """Per horizon (a column): the share of outcomes inside each kind of range over the last `window` decision
    times against the nominal level (top), and the range's median width per decision time over the same window
    (bottom). `per_horizon[h] = {label: (decision ts, inside, width)}` over the rows where that range exists."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = max(len(per_horizon), 1)
    fig = Figure(figsize=(max(WIDE[0], PANEL_W * n), 2 * PANEL_H), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, n, squeeze=False)
    fig.suptitle(f"{nominal:.0%} return ranges: realized coverage and median width (rolling {window} decision times)")
    for k, (name, kinds) in enumerate(per_horizon.items()):
        cov_ax, width_ax = axes[0, k], axes[1, k]
        if not any(len(v[0]) for v in kinds.values()):
            _no_data(cov_ax, name)
            width_ax.set_visible(False)
            continue
        for label, (ts, inside, width) in kinds.items():
            if not len(ts):
                continue
            times, which = np.unique(ts, return_inverse=True)
            hits = np.bincount(which, weights=inside.astype(float), minlength=times.size)
            counts = np.bincount(which, minlength=times.size).astype(float)
            kern = np.ones(min(window, times.size))
            with np.errstate(invalid="ignore", divide="ignore"):
                rolled = np.convolve(hits, kern, "valid") / np.convolve(counts, kern, "valid")
            mid = np.asarray([np.median(width[which == i]) for i in range(times.size)])
            x = times[kern.size - 1:].astype("datetime64[ms]")
            cov_ax.plot(x, rolled, lw=1.1, label=f"{label}: {inside.mean():.3f}")
            width_ax.plot(x, np.convolve(mid, kern, "valid") / kern.size, lw=1.1,
                          label=f"{label}: {np.median(width):.3f}")
        cov_ax.axhline(nominal, ls="--", color="0.3", lw=1)
        cov_ax.set(ylim=(0, 1.02), title=f"{name}: coverage (overall in legend)", ylabel="share inside the range")
        width_ax.set(title=f"{name}: median width (overall in legend)", ylabel="width, log return")
        for ax in (cov_ax, width_ax):
            ax.title.set_fontsize(9)
            _date_axis(ax)
            ax.legend(loc="lower left", fontsize=6)
    return _save(fig, path)


def _dates(ts_ms: np.ndarray, curves: dict[str, np.ndarray]) -> np.ndarray:
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    for name, c in curves.items():
        if len(c) != len(ts_ms):
            raise CstError("curve_length", f"curve {name!r} has {len(c)} points for {len(ts_ms)} timestamps")
    return ts_ms.astype("datetime64[ms]")


def _date_axis(ax) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.grid(alpha=0.3)


def equity_png(path, ts_ms: np.ndarray, curves: dict[str, np.ndarray], normalize: bool = True,
               title: str = "Equity: strategy vs benchmarks") -> Path:
    """Curves against dates (UTC); `normalize` divides each by its first value so they start at 1 and compare."""
    x = _dates(ts_ms, curves)
    fig, ax = _wide()
    for k, (name, c) in enumerate(curves.items()):
        c = np.asarray(c, dtype=float)
        ax.plot(x, c / c[0] if normalize and len(c) else c, label=name, lw=2.0 if k == 0 else 1.2)
    if normalize:
        ax.axhline(1.0, color="0.5", lw=0.8)
    ax.set(title=title, xlabel="date (UTC)", ylabel="growth of 1" if normalize else "equity")
    _date_axis(ax)
    ax.legend(loc="best")
    return _save(fig, path)


def drawdown_png(path, ts_ms: np.ndarray, curves: dict[str, np.ndarray],
                 title: str = "Drawdown from the running peak") -> Path:
    x = _dates(ts_ms, curves)
    fig, ax = _wide()
    for k, (name, c) in enumerate(curves.items()):
        dd = -100.0 * drawdown(c) if len(c) else np.zeros(0)
        ax.plot(x, dd, label=f"{name} (max {-dd.min() if len(dd) else 0:.1f}%)", lw=1.5 if k == 0 else 1.0,
                color=f"C{k}")
        if k == 0:
            ax.fill_between(x, dd, 0, color="C0", alpha=0.2)
    ax.set(title=title, xlabel="date (UTC)", ylabel="drawdown (%)")
    _date_axis(ax)
    ax.legend(loc="best", framealpha=0.9)
    return _save(fig, path)


def cross_section_png(path, per_horizon: dict[str, dict[str, dict]]) -> Path:
    """Per horizon, three panels: rank IC through time (mean over the last 30 decisions), decile mean forward
    returns, and the top-minus-bottom decile spread cumulated over non-overlapping horizon windows; one line or
    bar group per score."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    horizons = [h for h, scores in per_horizon.items() if any(r.get("series") for r in scores.values())]
    rows = max(len(horizons), 1)
    fig = Figure(figsize=(max(WIDE[0], 3 * PANEL_W), PANEL_H * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(rows, 3, squeeze=False)
    if not horizons:
        for ax in grid[0][1:]:
            ax.set_visible(False)
        _no_data(grid[0][0], "cross-section")
        return _save(fig, path)
    for k, h in enumerate(horizons):
        ic_ax, q_ax, s_ax = grid[k]
        scores = {name: r for name, r in per_horizon[h].items() if r.get("series")}
        width = 0.8 / len(scores)
        for n, (name, r) in enumerate(scores.items()):
            t = np.asarray(r["series"]["ts"], dtype=np.int64).astype("datetime64[ms]")
            ic = np.asarray(r["series"]["ic"], dtype=float)
            rolling = np.convolve(np.nan_to_num(ic), np.ones(30) / 30, mode="full")[: ic.size]
            ic_ax.plot(t, rolling, label=name, lw=1.2, color=f"C{n}")
            dec = np.asarray(r["decile_mean_fwd"], dtype=float)
            q_ax.bar(np.arange(dec.size) + n * width, 100 * dec, width=width, label=name, color=f"C{n}")
            spread = np.asarray(r["series"]["spread"], dtype=float)
            step = max(1, int(r.get("decisions_per_window", 1)))
            s_ax.plot(t[::step], 100 * np.cumsum(np.nan_to_num(spread[::step])), label=name, lw=1.2, color=f"C{n}")
        ic_ax.axhline(0, color="0.5", lw=0.8)
        ic_ax.set(title=f"{h}: rank IC (30-decision mean)", ylabel="IC")
        q_ax.set(title=f"{h}: mean forward return by score decile", xlabel="decile (lowest score first)",
                 ylabel="% log return")
        s_ax.axhline(0, color="0.5", lw=0.8)
        s_ax.set(title=f"{h}: top - bottom decile, summed", ylabel="% log return (sum over windows)")
        for ax in (ic_ax, s_ax):
            _date_axis(ax)
        ic_ax.legend(loc="best", fontsize="small")
    return _save(fig, path)


# -- HTML ----------------------------------------------------------------------------------------------------------

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1.2em 0}img{max-width:100%;border:1px solid #eee}figcaption{color:#666;font-size:.85em}
"""


def _fmt(v) -> str:
    """One table cell's text: None as a dash, floats to 4 significant digits (thousands grouped)."""
    if v is None:
        return MISSING
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, float | np.floating):
        v = float(v)
        if not math.isfinite(v):
            return "NaN" if math.isnan(v) else ("∞" if v > 0 else "-∞")
        return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:,.2f}" if abs(v) >= 100 else f"{v:.4g}"
    return str(v)


def _cell(v) -> str:
    if isinstance(v, dict | list | tuple) and v:
        return f"<td>{_render(v)}</td>"
    numeric = isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_)
    return f'<td class="num">{html.escape(_fmt(v))}</td>' if numeric else f"<td>{html.escape(_fmt(v))}</td>"


def _render(content) -> str:
    """A section body: text as paragraphs, a dict as a key/value table, a list of dicts as a table with one
    column per key, other lists as rows (or a bullet list of plain values)."""
    if content is None:
        return f"<p>{MISSING}</p>"
    if isinstance(content, str):
        return "".join(f"<p>{html.escape(p.strip())}</p>" for p in content.split("\n\n") if p.strip())
    if isinstance(content, dict):
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th>{_cell(v)}</tr>" for k, v in content.items())
        return f"<table><tbody>{rows}</tbody></table>"
    if isinstance(content, list | tuple):
        if content and all(isinstance(r, dict) for r in content):
            cols = list(dict.fromkeys(k for r in content for k in r))
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
            body = "".join("<tr>" + "".join(_cell(r.get(c)) for c in cols) + "</tr>" for r in content)
            return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        if content and all(isinstance(r, list | tuple) for r in content):
            body = "".join("<tr>" + "".join(_cell(v) for v in r) + "</tr>" for r in content)
            return f"<table><tbody>{body}</tbody></table>"
        return "<ul>" + "".join(f"<li>{html.escape(_fmt(v))}</li>" for v in content) + "</ul>"
    return f"<p>{html.escape(_fmt(content))}</p>"


def html_report(path, title: str, sections: list[tuple[str, str | dict | list]], images: list[Path]) -> Path:
    """One HTML page: the sections in order, then the images, linked by paths relative to the page."""
    path = Path(path)
    parts = [f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for heading, content in sections:
        parts.append(f"<section><h2>{html.escape(heading)}</h2>{_render(content)}</section>")
    if images:
        parts.append("<section><h2>Figures</h2>")
        for img in images:
            rel = Path(os.path.relpath(Path(img).resolve(), path.resolve().parent)).as_posix()
            name = html.escape(Path(img).stem.replace("_", " "))
            parts.append(f'<figure><img src="{html.escape(rel, quote=True)}" alt="{name}">'
                         f"<figcaption>{name}</figcaption></figure>")
        parts.append("</section>")
    parts.append("</body></html>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
