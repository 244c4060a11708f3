"""Fixtures for the quality-gate tests: `cst validate` run in-process, its two output files read back."""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.cli import main


@dataclass
class Validation:
    """What one `cst validate` run returned and wrote."""

    exit_code: int
    quality: dict
    quarantine: list[dict]

    def series(self, key: str) -> dict:
        return self.quality["series"][key]

    def rejected(self, key: str) -> list[dict]:
        """Rows quarantine.json holds for one series (empty when it has none)."""
        return [row for doc in self.quarantine if doc["series"] == key for row in doc["rows"]]


@contextmanager
def root_logging_restored():
    """The CLI installs a stderr handler on the root logger once per process; take it back off so
    no later test inherits a handler bound to a stream that belonged to this one."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def validate(source: Path, out: Path, as_of: str) -> Validation:
    with root_logging_restored():
        code = main(["validate", "--source", str(source), "--out", str(out), "--as-of", as_of])
    quality = json.loads((out / "quality.json").read_text())
    quarantine = json.loads((out / "quarantine.json").read_text())
    return Validation(code, quality, quarantine)


@pytest.fixture(scope="session")
def run_validate():
    return validate
