"""Who the caller is: name, groups, whether they may start runs."""

from fastapi import APIRouter

from services.api.context import Viewer
from services.api.models import Me, errors

router = APIRouter(prefix="/api", tags=["account"])


@router.get("/me", responses=errors())
def me(who: Viewer) -> Me:
    return Me(username=who.username, groups=sorted(who.groups), operator=who.is_operator)
