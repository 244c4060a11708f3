"""Risk guards and execution cost: registered guards judge a sized order against the book.

The cost comes from walking an order book or, where none exists (history), from the labelled square-root impact
model. Each guard is one small class with a name, its parameters and one check (freqtrade-protection style);
a decision carries the guard's reason, so every rejection or scale-down can be logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np


@dataclass
class Fill:
    """Walking the book for a market order of `notional` (quote currency)."""

    vwap: float
    filled_notional: float
    slippage_bps: float  # vs the touch (best ask for a buy, best bid for a sell)
    complete: bool
    model: str = "order_book"


def walk_book(levels: list[list[float]], notional: float, side: str) -> Fill:
    """VWAP of consuming `levels` ([price, amount] best first: asks for a buy, bids for a sell) for `notional`."""
    if not levels:
        raise ValueError("empty book side")
    touch = float(levels[0][0])
    left, cost, qty = notional, 0.0, 0.0
    for price, amount in levels:
        take = min(left, price * amount)
        cost += take
        qty += take / price
        left -= take
        if left <= 1e-12:
            break
    vwap = cost / qty
    sign = 1.0 if side == "buy" else -1.0
    return Fill(vwap, cost, sign * (vwap - touch) / touch * 1e4, left <= 1e-12 * max(1.0, notional))


def impact_bps(notional, adv_quote, daily_vol, half_spread_bps: float = 5.0, k: float = 1.0):
    """The square-root impact model's cost in bps: half spread + k * daily vol * sqrt(notional / average daily quote
    volume). Scalars or numpy arrays alike."""
    return half_spread_bps + k * daily_vol * np.sqrt(notional / adv_quote) * 1e4


def liquidity(close: np.ndarray, quote_volume: np.ndarray, step: int, days: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Per panel cell (times x coins), from the `days` before it: average daily quote volume and daily volatility
    of log returns (NaN until the window is complete): what the impact model reads."""
    per_day = max(1, 86_400_000 // step)
    n = days * per_day
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.vstack([np.full((1, close.shape[1]), np.nan), np.diff(np.log(close), axis=0)])

    def window_sum(v: np.ndarray) -> np.ndarray:
        """Sum over the last n rows (NaN where the window is incomplete or holds a NaN)."""
        c = np.vstack([np.zeros((1, v.shape[1])), np.cumsum(np.nan_to_num(v), axis=0)])
        bad = np.vstack([np.zeros((1, v.shape[1])), np.cumsum(~np.isfinite(v), axis=0)])
        out = np.full(v.shape, np.nan)
        out[n - 1:] = np.where(bad[n:] - bad[:-n] > 0, np.nan, c[n:] - c[:-n])
        return out

    mean = window_sum(r) / n
    var = np.maximum(window_sum(r * r) / n - mean * mean, 0.0)
    return window_sum(quote_volume) / n * per_day, np.sqrt(var) * np.sqrt(per_day)


def impact_model(notional: float, adv_quote: float, daily_vol: float, half_spread_bps: float = 5.0,
                 k: float = 1.0) -> Fill:
    """Square-root impact where no book exists (history): cost = half spread + k * vol * sqrt(participation).

    A MODEL, labelled as such in every Fill it returns; it is never presented as an observed fill.
    """
    if not adv_quote > 0:
        raise ValueError(f"impact model needs a positive average daily volume, got {adv_quote}")
    bps = float(impact_bps(notional, adv_quote, daily_vol, half_spread_bps, k))
    return Fill(float("nan"), notional, bps, True, model="sqrt_impact")


@dataclass
class SizedOrder:
    """An order sized to a notional, with what the guards judge it by (an `Order` once the gate has sized it)."""

    coin: str
    direction: int
    notional: float
    expected_edge_bps: float
    returns: np.ndarray | None = None  # recent daily log returns, for correlation
    adv_quote: float | None = None  # average daily quote volume; None = unknown
    daily_vol: float | None = None
    book_side: list[list[float]] | None = None  # levels the order would consume


@dataclass
class Book:
    """The portfolio the guards judge against."""

    equity: float
    peak_equity: float
    positions: dict[str, SizedOrder] = field(default_factory=dict)
    halted: bool = False


@dataclass
class Decision:
    guard: str
    allow: bool
    scale: float = 1.0
    reason: str = ""


class Guard:
    name: ClassVar[str]

    def check(self, order: SizedOrder, book: Book) -> Decision:
        raise NotImplementedError


GUARDS: dict[str, type[Guard]] = {}


def register(cls: type[Guard]) -> type[Guard]:
    GUARDS[cls.name] = cls
    return cls


@register
class LiquidityGuard(Guard):
    """Minimum 24h quote volume and maximum participation; unknown volume is not tradable."""

    name = "liquidity"

    def __init__(self, min_adv_quote: float = 1e6, max_participation: float = 0.01):
        self.min_adv_quote, self.max_participation = min_adv_quote, max_participation

    def check(self, order: SizedOrder, book: Book) -> Decision:
        if order.adv_quote is None or not np.isfinite(order.adv_quote):
            return Decision(self.name, False, 0.0, "volume unavailable: not tradable")
        if order.adv_quote < self.min_adv_quote:
            return Decision(self.name, False, 0.0, f"24h volume {order.adv_quote:,.0f} < {self.min_adv_quote:,.0f}")
        limit = self.max_participation * order.adv_quote
        if order.notional > limit:
            return Decision(self.name, True, limit / order.notional,
                            f"scaled to {self.max_participation:.1%} of average daily volume")
        return Decision(self.name, True)


@register
class CorrelationGuard(Guard):
    """A new position too correlated with the book is scaled down; beyond the cluster cap it is rejected."""

    name = "correlation"

    def __init__(self, threshold: float = 0.8, cluster_cap: int = 2):
        self.threshold, self.cluster_cap = threshold, cluster_cap

    def check(self, order: SizedOrder, book: Book) -> Decision:
        """`order.returns` and every position's returns must end on the same day (the caller aligns them)."""
        if order.returns is None or not book.positions:
            return Decision(self.name, True)
        close = []
        for coin, pos in book.positions.items():
            if pos.returns is None:
                continue
            n = min(len(pos.returns), len(order.returns))
            with np.errstate(invalid="ignore", divide="ignore"):
                c = float(np.corrcoef(order.returns[-n:], pos.returns[-n:])[0, 1]) if n >= 2 else float("nan")
            if not np.isfinite(c):
                return Decision(self.name, False, 0.0, f"correlation with {coin} unknown (too short or constant series)")
            same_way = c * order.direction * pos.direction  # a long and a short on correlated coins hedge
            if same_way > self.threshold:
                close.append((coin, same_way))
        if not close:
            return Decision(self.name, True)
        if len(close) >= self.cluster_cap:
            return Decision(self.name, False, 0.0, f"cluster of {len(close)} positions with correlation > {self.threshold}")
        coin, worst = max(close, key=lambda kv: kv[1])
        if worst >= 1.0:
            return Decision(self.name, False, 0.0, f"correlation {worst:.2f} with {coin}: the same bet twice")
        # Linear from full size at the threshold down to zero at correlation 1; never above 1.
        return Decision(self.name, True, min(1.0, (1 - worst) / (1 - self.threshold)),
                        f"correlation {worst:.2f} with {coin}: scaled down")


@register
class DrawdownGuard(Guard):
    """Portfolio drawdown beyond `max_drawdown` halts new entries until equity recovers to `resume_at` of the peak."""

    name = "drawdown"

    def __init__(self, max_drawdown: float = 0.2, resume_at: float = 0.9):
        self.max_drawdown, self.resume_at = max_drawdown, resume_at

    def update(self, book: Book) -> None:
        """Called whenever equity is marked (not only when an order arrives)."""
        if book.halted and book.equity >= self.resume_at * book.peak_equity:
            book.halted = False
        if 1 - book.equity / book.peak_equity >= self.max_drawdown:
            book.halted = True

    def check(self, order: SizedOrder, book: Book) -> Decision:
        self.update(book)
        if book.halted:
            dd = 1 - book.equity / book.peak_equity
            return Decision(self.name, False, 0.0, f"drawdown {dd:.1%}: entries halted until equity is back to "
                                                    f"{self.resume_at:.0%} of its peak")
        return Decision(self.name, True)


def _positive(x: float | None) -> bool:
    return x is not None and bool(np.isfinite(x)) and x > 0


@register
class CostGuard(Guard):
    """Expected execution cost (book walk, or the labelled impact model) must stay below the expected edge.

    It prices one side; `expected_edge_bps` must therefore be the edge net of fees and the exit's cost
    (the backtest and `cst run` pass gross edge - 2 * fee - exit impact).
    """

    name = "cost"

    def check(self, order: SizedOrder, book: Book) -> Decision:
        if order.book_side:
            fill = walk_book(order.book_side, order.notional, "buy" if order.direction == 1 else "sell")
            if not fill.complete:
                return Decision(self.name, False, 0.0, "order larger than the visible book")
        elif _positive(order.adv_quote) and _positive(order.daily_vol):
            fill = impact_model(order.notional, order.adv_quote, order.daily_vol)
        else:
            return Decision(self.name, False, 0.0, "no book and no known volume or volatility: cost unknown")
        if fill.slippage_bps >= order.expected_edge_bps:
            return Decision(self.name, False, 0.0, f"expected cost {fill.slippage_bps:.1f} bps ({fill.model}) >= "
                                                    f"edge {order.expected_edge_bps:.1f} bps")
        return Decision(self.name, True, 1.0, f"cost {fill.slippage_bps:.1f} bps ({fill.model})")


def apply_guards(order: SizedOrder, book: Book, guards: list[Guard]) -> tuple[float, list[Decision]]:
    """Every guard's decision, in order; the final scale (0 when any guard rejects)."""
    decisions = [g.check(order, book) for g in guards]
    if not all(d.allow for d in decisions):
        return 0.0, decisions
    return float(np.prod([d.scale for d in decisions])), decisions
