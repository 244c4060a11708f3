"""The alerts sent, newest first, with how each channel took them; an operator's test alert (audited)."""

from fastapi import APIRouter
from pydantic import BaseModel

from services.alerts import store
from services.alerts.notify import dispatch_test
from services.api.context import Context, Operator, Viewer
from services.api.models import errors
from shared.records import Alert

router = APIRouter(prefix="/api", tags=["alerts"])


class TestAlertAnswer(BaseModel):
    alert: Alert | None = None
    published: str | None = None  # in the cloud: the alerts topic's message id (the alerts function delivers)


@router.get("/alerts", responses=errors())
def alerts(ctx: Context, _: Viewer) -> list[Alert]:
    """The last 50 alerts with their deliveries."""
    return store.recent(ctx.lake, 50)


@router.post("/actions/test-alert", status_code=201, responses=errors())
def test_alert(ctx: Context, who: Operator) -> TestAlertAnswer:
    """One alert to every channel, so an operator sees that the channels work."""
    out = dispatch_test(ctx.settings, ctx.lake, who.username)
    answer = TestAlertAnswer(alert=out) if isinstance(out, Alert) else TestAlertAnswer(published=out)
    said = (f"{sum(d.ok for d in answer.alert.deliveries)}/{len(answer.alert.deliveries)} delivered"
            if answer.alert else f"published {answer.published}")
    ctx.audit(who, "test_alert", {}, said)
    return answer
