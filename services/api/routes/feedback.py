"""A viewer's feedback on a prediction (useful, traded, a note), kept in the lake for the self-learning loop."""

from fastapi import APIRouter, HTTPException

from services.api import reads
from services.api.context import Context, Viewer
from services.api.models import Feedback, Stored, errors
from shared.audit import feedback_key

router = APIRouter(prefix="/api", tags=["feedback"])


@router.post("/feedback", status_code=201, responses=errors(404))
def feedback(body: Feedback, ctx: Context, who: Viewer) -> Stored:
    """Only on a prediction that was made: a horizon the service forecasts, a run that exists, a coin and decision
    time that run predicted."""
    ctx.known_horizon(body.horizon)
    if reads.summary(ctx.lake, body.run_id) is None:
        raise HTTPException(404, detail={"error": "unknown_run", "message": f"no run {body.run_id}"})
    made = reads.predictions(ctx.lake, [body.horizon], coin=body.coin, run_id=body.run_id,
                             since_ms=body.decision_ts, until_ms=body.decision_ts)
    if not any(p.decision_ts == body.decision_ts for p in made):
        raise HTTPException(404, detail={"error": "unknown_prediction", "message": f"run {body.run_id} made no "
                                         f"{body.horizon} prediction for {body.coin} at {body.decision_ts}"})
    at = ctx.now()
    key = feedback_key(body.horizon, body.coin, body.run_id, at)
    ctx.lake.put_json(key, {**body.model_dump(), "by": who.username, "at": at.isoformat()})
    return Stored(stored=key)
