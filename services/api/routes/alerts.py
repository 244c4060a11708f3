"""The alerts sent, newest first, with how each channel took them; an operator's test alert (audited)."""

from fastapi import APIRouter
from pydantic import BaseModel

from services.alerts import store
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
    out = ctx.send_test_alert(who)
    return TestAlertAnswer(alert=out) if isinstance(out, Alert) else TestAlertAnswer(published=out)
