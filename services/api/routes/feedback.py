"""A viewer's feedback on a prediction (useful, traded, a note), kept in the lake for the self-learning loop."""

from fastapi import APIRouter

from services.api.context import Context, Viewer
from services.api.models import Feedback, Stored, errors
from shared.audit import feedback_key

router = APIRouter(prefix="/api", tags=["feedback"])


@router.post("/feedback", status_code=201, responses=errors())
def feedback(body: Feedback, ctx: Context, who: Viewer) -> Stored:
    at = ctx.now()
    key = feedback_key(body.horizon, body.coin, body.run_id, at)
    ctx.lake.put_json(key, {**body.model_dump(), "by": who.username, "at": at.isoformat()})
    return Stored(stored=key)
