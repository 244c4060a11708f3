"""Shared fixtures: the real recorded data beside the repository (skipped with a reason when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it lives beside the repository, never in it)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _no_cst_env(monkeypatch):
    """Tests see default settings unless they set CST_* themselves."""
    import os

    for key in list(os.environ):
        if key.startswith("CST_"):
            monkeypatch.delenv(key, raising=False)
