"""The risk step of the pipeline: consensus over the served horizons, then each signal sized and guarded exactly as
the backtest enters it.

The step reads the run's served predictions (the prediction log, through the predict service's reader) and the
daily panel (the features store); everything it decides comes from the numpy-only modules beside it.
"""

from __future__ import annotations

import numpy as np

from services.features.frame import Panel
from services.features.store import read_panel
from services.predict.signals import consensus, cross_section_consensus
from services.predict.steps import served_predictions
from services.risk import basket as basket_mod
from services.risk.gate import live_gate
from services.risk.guards import liquidity
from services.risk.history import price_history_from_panel
from services.risk.orders import orders_from_signals
from shared.contracts import iso_to_ms
from shared.pipeline.context import StepContext
from shared.pipeline.contracts import RiskOutput, RunRef
from shared.records import Basket, BasketLeg, GuardDecision, Prediction, RiskDecision, Signal
from shared.registry import load_metadata
from shared.settings import Settings, timeframe_ms
from shared.storage import Lake


def gate_signals(settings: Settings, panel: Panel | None, signals: list[Signal]) -> None:
    """Size and guard each consensus signal as the backtest enters it; the outcome rides on the signal.

    A signal is tradable only when its risk entry allows it; every guard decision is kept with its reason.
    """
    orders = orders_from_signals(signals, settings.training.horizons)
    gated = {}
    if panel is not None and panel.open_ts.size and orders:
        for o, g in zip(orders, live_gate(price_history_from_panel(panel), orders, settings.risk), strict=True):
            gated[o.coin] = g
    for sig in signals:
        sig.risk = gated.get(sig.coin) or RiskDecision(
            coin=sig.coin, allow=False, size_fraction=0.0, notional=0.0, cost_bps=None,
            decisions=[GuardDecision(guard="risk", allow=False, scale=0.0,
                                     reason="no daily horizon or no daily prices: the order cannot be sized")])
        sig.tradable = sig.risk.allow


def risk(ctx: StepContext, ref: RunRef) -> RiskOutput:
    """Consensus over the served horizons, then each signal sized and guarded exactly as the backtest enters it;
    the cross-sectional candidates under the same rule, and the market-neutral basket."""
    settings = ctx.settings
    preds = served_predictions(ctx, ref)
    signals = consensus(preds, settings.consensus_min_horizons)
    as_of = iso_to_ms(ref.as_of)
    rcfg = settings.risk
    need = max(rcfg.vol_window, rcfg.corr_window, rcfg.adv_window, 30) + 2
    panel = read_panel(ctx.lake, "1d", since_ms=as_of - need * timeframe_ms("1d"), until_ms=as_of)
    if signals:
        gate_signals(settings, panel, signals)
    out = RiskOutput(run_id=ref.run_id, predictions=len(preds), actionable=sum(p.actionable for p in preds),
                     signals=signals, tradable=sum(s.tradable for s in signals),
                     cross_section=cross_section_consensus(preds, settings.consensus_min_horizons))
    out.basket, out.basket_note = market_neutral_basket(ctx.lake, settings, preds, panel)
    return out


BASKET_GUARDS = {
    "liquidity": "a name needs a complete 30-day average daily quote volume and volatility, and an entry impact at "
                 "its weight within risk.basket.max_impact_bps; otherwise the next name in rank takes its place",
    "position cap": "no name above risk.max_position of equity",
    "correlation": "the basket is dollar-neutral: equal long and short notional hedge the market factor; pairwise "
                   "correlation between names is not capped",
    "drawdown": "not applied: the basket has no record of its own yet to measure a drawdown on",
}


def market_neutral_basket(lake: Lake, settings: Settings, preds: list[Prediction],
                          panel: Panel | None) -> tuple[Basket | None, str | None]:
    """Long the top `risk.basket.quantile` of the basket horizon's cross-sectional score, short the bottom, within
    the guards; labelled with the held-out rank IC and skill verdict of the stack that ranked them."""
    cfg = settings.risk.basket
    rows = [p for p in preds if p.horizon == cfg.horizon and p.beats_score is not None]
    if not rows:
        return None, f"no {cfg.horizon} predictions with a cross-sectional score in this run"
    if panel is None or not panel.open_ts.size:
        return None, "no daily prices to judge liquidity"
    coins = [p.coin for p in rows]
    adv, vol = liquidity(panel.fields["close"], price_history_from_panel(panel).quote_volume, timeframe_ms("1d"))
    col = {c: j for j, c in enumerate(panel.coins)}
    last = panel.open_ts.size - 1
    pick = lambda a: np.asarray([a[last, col[c]] if c in col else np.nan for c in coins])  # noqa: E731
    built = basket_mod.build(coins, np.asarray([p.beats_score for p in rows], float), pick(adv), pick(vol),
                             quantile=cfg.quantile, gross=cfg.gross, equity=settings.risk.initial_equity,
                             max_position=settings.risk.max_position, max_impact_bps=cfg.max_impact_bps,
                             half_spread_bps=cfg.half_spread_bps, impact_k=cfg.impact_k)
    if not built.per_leg:
        return None, f"{built.ranked} coins ranked: too few for a long and a short leg"
    version = rows[0].model_version
    meta = load_metadata(lake, cfg.horizon, version)
    beats = meta.beats if meta is not None else None
    ic = (beats.metrics.get("rank_ic") if beats is not None else None) or None
    skill = (beats.skill or {}).get("verdict") if beats is not None else None
    p_of = {p.coin: p.p_beats for p in rows}
    legs = lambda xs: [BasketLeg(coin=x.coin, side=x.side, score=x.score, p_beats=p_of.get(x.coin),  # noqa: E731
                                 weight=x.weight, notional=x.notional, impact_bps=x.impact_bps) for x in xs]
    ic_said = (f"held-out rank IC {ic['mean']:+.3f} [{ic['interval'][0]:+.3f}, {ic['interval'][1]:+.3f}]"
               if ic and ic.get("mean") is not None and ic["interval"][0] is not None else "held-out rank IC not measured")
    demonstrated = bool(beats is not None and (beats.skill or {}).get("demonstrated"))
    label = (f"{'Market-neutral' if demonstrated else 'Research (no demonstrated skill)'} basket by the {cfg.horizon} "
             f"cross-sectional score: {ic_said}; {skill or 'skill not assessed'}; "
             f"{len(built.long)} long / {len(built.short)} short of {built.ranked} ranked")
    guards = dict(BASKET_GUARDS)
    if built.capped:
        guards["position cap"] += f": applied, each leg holds less than {cfg.gross / 2:.0%} of equity"
    return Basket(horizon=cfg.horizon, decision_ts=rows[0].decision_ts, model_version=version, skill=skill,
                  held_out_ic=ic, long=legs(built.long), short=legs(built.short), ranked=built.ranked,
                  left_out=built.left_out, guards=guards, label=label), None
