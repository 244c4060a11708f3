"""How the forecasts fared: per horizon, each coin's recent record, the reliability of the recent outcomes and the
latest drift verdict."""

from typing import Annotated

from fastapi import APIRouter, Query

from services.api import reads
from services.api.context import Context, Viewer
from services.api.models import HORIZON, HorizonPerformance, errors

router = APIRouter(prefix="/api", tags=["performance"])


@router.get("/performance", responses=errors(404))
def performance(ctx: Context, _: Viewer,
                horizon: Annotated[str | None, Query(pattern=HORIZON)] = None) -> dict[str, HorizonPerformance]:
    """Per horizon: each coin's hit rate, Brier and ECE over its recent outcomes, the reliability of the recent
    outcomes (mean P(up) against the realized up-rate per bin) and the latest drift verdict."""
    ctx.known_horizon(horizon)
    drift = doc.drift if (doc := reads.latest_summary(ctx.lake)) else {}
    out = {}
    for h in [horizon] if horizon else ctx.horizons:
        recent = reads.recent_outcomes(ctx.lake, h)
        out[h] = HorizonPerformance(outcomes=len(recent), reliability=reads.reliability(recent),
                                    coins=reads.latest_performance(ctx.lake, h), drift=drift.get(h))
    return out
