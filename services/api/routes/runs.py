"""The pipeline's runs, newest first, and one run's summary."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query

from services.api import reads
from services.api.context import Context, Viewer
from services.api.models import MAX_PAGE, RUN_ID, RunPage, RunRow, errors
from shared.records import RunSummary

router = APIRouter(prefix="/api", tags=["runs"])


@router.get("/runs", responses=errors())
def runs(ctx: Context, _: Viewer, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
         offset: Annotated[int, Query(ge=0)] = 0) -> RunPage:
    ids = reads.run_ids(ctx.lake)
    page = [d for d in (reads.summary(ctx.lake, r) for r in ids[offset:offset + limit]) if d]
    return RunPage(total=len(ids), items=[RunRow(**d.model_dump(include=set(RunRow.model_fields))) for d in page])


@router.get("/runs/{run_id}", responses=errors(404))
def run(run_id: Annotated[str, Path(pattern=RUN_ID)], ctx: Context, _: Viewer) -> RunSummary:
    doc = reads.summary(ctx.lake, run_id)
    if doc is None:
        raise HTTPException(404, detail={"error": "unknown_run", "message": "no such run"})
    return doc
