"""The latest validated run's data-quality report."""

from fastapi import APIRouter, HTTPException

from services.api import reads
from services.api.context import Context, Viewer
from services.api.models import QualityView, errors

router = APIRouter(prefix="/api", tags=["quality"])


@router.get("/quality", responses=errors(404))
def quality(ctx: Context, _: Viewer) -> QualityView:
    doc = reads.quality(ctx.lake)
    if doc is None:
        raise HTTPException(404, detail={"error": "no_quality_report", "message": "no run has been validated"})
    return doc
