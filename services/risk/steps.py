"""The risk step of the pipeline: consensus over the served horizons, then each signal sized and guarded exactly as
the backtest enters it.

The step reads the run's served predictions (the prediction log, through the predict service's reader) and the
daily panel (the features store); everything it decides comes from the numpy-only modules beside it.
"""

from __future__ import annotations

from services.features.frame import Panel
from services.features.store import read_panel
from services.predict.signals import consensus
from services.predict.steps import served_predictions
from services.risk.gate import live_gate
from services.risk.history import price_history_from_panel
from services.risk.orders import orders_from_signals
from shared.contracts import iso_to_ms
from shared.pipeline.context import StepContext
from shared.pipeline.contracts import RiskOutput, RunRef
from shared.records import GuardDecision, RiskDecision, Signal
from shared.settings import Settings, timeframe_ms


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
    """Consensus over the served horizons, then each signal sized and guarded exactly as the backtest enters it."""
    settings = ctx.settings
    preds = served_predictions(ctx, ref)
    signals = consensus(preds, settings.consensus_min_horizons)
    if signals:
        as_of = iso_to_ms(ref.as_of)
        rcfg = settings.risk
        need = max(rcfg.vol_window, rcfg.corr_window, rcfg.adv_window) + 2
        panel = read_panel(ctx.lake, "1d", since_ms=as_of - need * timeframe_ms("1d"), until_ms=as_of)
        gate_signals(settings, panel, signals)
    return RiskOutput(run_id=ref.run_id, predictions=len(preds), actionable=sum(p.actionable for p in preds),
                      signals=signals, tradable=sum(s.tradable for s in signals))
