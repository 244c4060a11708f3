"""The model versions per horizon (which is current, what each was judged) and a version's model card."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from services.api import reads
from services.api.context import Context, Viewer
from services.api.models import HORIZON, RUN_ID, HorizonModels, ModelCard, errors

router = APIRouter(prefix="/api", tags=["models"])


@router.get("/models", responses=errors())
def model_list(ctx: Context, _: Viewer) -> dict[str, HorizonModels]:
    return reads.models(ctx.lake, ctx.horizons)


@router.get("/models/{horizon}/{version}/card", responses=errors(404))
def card(horizon: Annotated[str, Path(pattern=HORIZON)], version: Annotated[str, Path(pattern=RUN_ID)],
         ctx: Context, _: Viewer) -> ModelCard:
    text = reads.model_card(ctx.lake, horizon, version) if horizon in ctx.horizons else None
    if text is None:
        raise HTTPException(404, detail={"error": "unknown_model", "message": "no such model version"})
    return ModelCard(horizon=horizon, version=version, card=text)
