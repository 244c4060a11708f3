"""The paper books' track record: equity against BTC and the equal-weight universe, drawdown, hits, costs, the last
reconciliation with the backtest and the alerts sent."""

from fastapi import APIRouter

from services.api.context import Context, Viewer
from services.api.models import errors
from shared.records import TrackRecord

router = APIRouter(prefix="/api", tags=["books"])


@router.get("/track-record", responses=errors())
def track_record(ctx: Context, _: Viewer) -> TrackRecord:
    """Both paper books' records (a book appears after its first step) and the last reconciliation."""
    from services.books.record import track_record as read

    return read(ctx.lake, ctx.settings)
