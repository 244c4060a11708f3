"""Where a result came from: the settings snapshot and its hash, library versions, the code revision, the data's digest.

Every model version and every evaluation stores these, so a result can be traced, compared only with results of
the same settings and data, and re-run from its snapshot alone.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Any

from shared.settings import Settings

LIBRARIES = ("numpy", "pyarrow", "scikit-learn", "lightgbm", "torch", "onnx", "onnxruntime", "skl2onnx",
             "onnxmltools", "optuna", "ta-lib")


def settings_snapshot(settings: Settings) -> dict[str, Any]:
    """Every knob as JSON; secrets appear masked, never in clear."""
    return settings.model_dump(mode="json")


def snapshot_hash(snapshot: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(snapshot, sort_keys=True).encode()).hexdigest()[:16]


def library_versions() -> dict[str, str]:
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = pkg_version(lib)
        except PackageNotFoundError:
            out[lib] = "absent"
    return out


def code_revision() -> str:
    """The git commit of the code, with '+changes' when the working tree differs from it."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=here,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True, cwd=here, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+changes" if dirty else "")


def directory_digest(root: str | Path) -> str:
    """A digest of every file under a directory (relative path and bytes), in a stable order."""
    root = Path(root)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def provenance(settings: Settings) -> dict[str, Any]:
    snap = settings_snapshot(settings)
    return {"settings": snap, "settings_hash": snapshot_hash(snap), "code_revision": code_revision(),
            "libraries": library_versions()}
