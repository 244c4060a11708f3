"""What an operator starts: a run of the current cycle, or a horizon's retrain; each written to the audit log."""

from fastapi import APIRouter

from services.api.context import Context, Operator
from services.api.models import RetrainRequest, Started, errors

router = APIRouter(prefix="/api/actions", tags=["actions"])


@router.post("/run", status_code=202, responses=errors(409, 429, 503))
def start_run(ctx: Context, who: Operator) -> Started:
    return Started(started=ctx.act(who, "start_run", {}))


@router.post("/retrain", status_code=202, responses=errors(404, 409, 429, 503))
def retrain(body: RetrainRequest, ctx: Context, who: Operator) -> Started:
    return Started(started=ctx.act(who, "retrain", {"horizon": body.horizon}))
