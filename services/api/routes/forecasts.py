"""The logged predictions, filtered and paged, one coin's latest forecast per horizon, and the board of every
coin's newest forecasts."""

import json
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query

from services.api import reads
from services.api.context import Context, Viewer
from shared.records import Forecast
from services.api.models import (
    COIN,
    HORIZON,
    MAX_PAGE,
    RUN_ID,
    CoinForecast,
    HorizonForecast,
    PredictionPage,
    Time,
    errors,
)

router = APIRouter(prefix="/api", tags=["forecasts"])


def _ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


@router.get("/predictions", responses=errors(404))
def predictions(ctx: Context, _: Viewer,
                coin: Annotated[str | None, Query(pattern=COIN)] = None,
                horizon: Annotated[str | None, Query(pattern=HORIZON)] = None,
                run_id: Annotated[str | None, Query(pattern=RUN_ID)] = None,
                since: Annotated[Time | None, Query(description="decision times from (RFC 3339 time)")] = None,
                until: Annotated[Time | None, Query(description="decision times up to (RFC 3339 time)")] = None,
                limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> PredictionPage:
    ctx.known_horizon(horizon)
    rows = reads.predictions(ctx.lake, [horizon] if horizon else ctx.horizons, coin=coin, run_id=run_id,
                             since_ms=_ms(since), until_ms=_ms(until))
    return PredictionPage(total=len(rows), offset=offset, limit=limit, items=rows[offset:offset + limit])


@router.get("/coins/{coin}", responses=errors(404))
def coin_forecast(coin: Annotated[str, Path(pattern=COIN)], ctx: Context, _: Viewer) -> CoinForecast:
    latest = reads.latest_per_horizon(ctx.lake, ctx.horizons, coin)
    if not latest:
        raise HTTPException(404, detail={"error": "unknown_coin", "message": f"no forecast for {coin}"})
    uncertified = (doc.uncertified_horizons if (doc := reads.latest_summary(ctx.lake)) else {})
    return CoinForecast(coin=coin, horizons={h: HorizonForecast(
        p_up=r.p_up, interval=[r.p_low, r.p_high], direction=r.direction, confidence=r.confidence,
        range_80=[r.range_low, r.range_high], top_features=json.loads(r.top_features or "[]"), skill=r.skill,
        decision_ts=r.decision_ts, model_version=r.model_version,
        certified=h not in uncertified, why_not_certified=uncertified.get(h)) for h, r in latest.items()})


@router.get("/board", responses=errors())
def board(ctx: Context, _: Viewer) -> list[Forecast]:
    """Every coin and horizon of the newest decisions: P(up) and its interval, P(beats), the volatility forecast,
    the 80% range as returns and prices, the verdict in words, and the change since the previous forecast."""
    return reads.board(ctx.lake, ctx.settings, ctx.horizons, reads.latest_summary(ctx.lake))
