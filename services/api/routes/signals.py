"""The latest complete run's signals, or why there are none."""

from fastapi import APIRouter

from services.api import reads
from services.api.context import Context, Viewer
from services.api.models import SignalsView, errors

router = APIRouter(prefix="/api", tags=["signals"])


@router.get("/signals", responses=errors())
def signals(ctx: Context, _: Viewer) -> SignalsView:
    doc = reads.latest_summary(ctx.lake)
    if doc is None:
        return SignalsView(run_id=None, signals=[], why_none={"all": "no run has completed yet"})
    return SignalsView(run_id=doc.run_id, as_of=doc.as_of, signals=doc.signals,
                       why_none=dict(doc.uncertified_horizons) if not doc.signals else {},
                       cross_section=doc.cross_section_signals,
                       cross_section_why_none=dict(doc.cross_section_uncertified) if not doc.cross_section_signals
                       else {}, basket=doc.basket, basket_note=doc.basket_note)
