"""The models store: where model versions live in the lake (each horizon's version folders, its CURRENT pointer and
its tuning studies), and the only module that spells those keys."""

from __future__ import annotations

from shared.errors import LakeKeyNotFound
from shared.records import ModelMetadata
from shared.storage import Lake


def horizon_prefix(horizon: str) -> str:
    return f"models/horizon={horizon}/"


def model_prefix(horizon: str, version: str) -> str:
    return horizon_prefix(horizon) + f"version={version}/"


def current_key(horizon: str) -> str:
    return horizon_prefix(horizon) + "CURRENT"


def metadata_key(horizon: str, version: str) -> str:
    return model_prefix(horizon, version) + "metadata.json"


def tuning_journal_key(horizon: str, member: str) -> str:
    """A member's Optuna studies of every training window (the journal a retrain learns from)."""
    return horizon_prefix(horizon) + f"optuna/{member}.journal"


def current_version(lake: Lake, horizon: str) -> str | None:
    try:
        return lake.get(current_key(horizon)).decode().strip()
    except LakeKeyNotFound:
        return None


def set_current(lake: Lake, horizon: str, version: str) -> None:
    """Move the horizon's pointer (one atomic put: the version's files must all be in place before)."""
    lake.put(current_key(horizon), version.encode())


def load_metadata(lake: Lake, horizon: str, version: str) -> ModelMetadata | None:
    """A version's metadata, or None while the version is still being written (its metadata lands after its models)."""
    try:
        return ModelMetadata.model_validate(lake.get_json(metadata_key(horizon, version)))
    except LakeKeyNotFound:
        return None


def put_metadata(lake: Lake, meta: ModelMetadata) -> None:
    """The version's metadata, written once its models are in place (its training's wall time is not part of it)."""
    lake.put_json(metadata_key(meta.horizon, meta.version), meta.model_dump(mode="json", exclude={"wall_seconds"}))
