"""Where model versions live in the lake: each horizon's version folders and its CURRENT pointer."""

from __future__ import annotations

from shared.errors import LakeKeyNotFound
from shared.storage import Lake


def model_prefix(horizon: str, version: str) -> str:
    return f"models/horizon={horizon}/version={version}/"


def current_key(horizon: str) -> str:
    return f"models/horizon={horizon}/CURRENT"


def current_version(lake: Lake, horizon: str) -> str | None:
    try:
        return lake.get(current_key(horizon)).decode().strip()
    except LakeKeyNotFound:
        return None
