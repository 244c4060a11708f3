"""One owner per kind of record: every lake key is spelled in the one store module that owns its kind, read from the
source (ast; docstrings aside). A key spelled anywhere else (a reader re-deriving a writer's layout) fails here."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The lake's top-level folders and their owners (docs/ARCHITECTURE.md, "Records and their owners").
OWNERS = {
    "raw": "shared/contracts.py",
    "staging": "shared/datasets.py",
    "state/history": "shared/datasets.py",
    "runs": "shared/runs.py",
    "quality": "shared/runs.py",
    "clean": "shared/runs.py",
    "quarantine": "services/features/quality/gate.py",
    "features": "services/features/store.py",
    "panels": "services/features/store.py",
    "models": "shared/registry.py",
    "predictions": "services/predict/logbook.py",
    "outcomes": "services/predict/logbook.py",
    "performance": "services/predict/logbook.py",
    "state/outcomes": "services/predict/logbook.py",
    "state/recent_outcomes": "services/predict/logbook.py",
    "state/conformal": "services/predict/conformal.py",
    "state/files": "services/ingest/sources/files.py",
    "state/trades": "services/ingest/steps.py",
    "state/backfill": "services/ingest/backfill.py",
    "audit": "shared/audit.py",
    "feedback": "shared/audit.py",
    "watchlists": "shared/audit.py",
    "alerts": "services/alerts/store.py",
    "state/alerts": "services/alerts/store.py",
    "books": "services/books/store.py",
}
STORES = set(OWNERS.values())
TOP = re.compile(r"^(%s)/" % "|".join(sorted({k.split("/")[0] for k in OWNERS}, key=len, reverse=True)))
# A partition in a key: `/horizon=24h/`, `/date=2024-05-01/`, `/run_id=...`.
PARTITION = re.compile(r"(^|/)(horizon|run_id|date|timeframe|source|symbol|coin|version|root|layer)=")


def _docstrings(tree: ast.AST) -> set[int]:
    return {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def key_literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string in the module that reads like a lake key: it starts with a lake folder, or it
    holds a partition (`name=`) beside a slash. An f-string is one text with `{}` for its fields."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docs, inside = _docstrings(tree), set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            inside.update(id(v) for v in node.values)
            found.append((node.lineno, "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs | inside:
            found.append((node.lineno, node.value))
    return [(line, text) for line, text in found
            if " " not in text and "\n" not in text and (TOP.match(text) or (PARTITION.search(text) and "/" in text))]


def _modules() -> list[Path]:
    return sorted(p for top in ("services", "shared", "infra") for p in (ROOT / top).rglob("*.py"))


def _family(text: str) -> str | None:
    """The owned folder a key belongs to: its first two levels when those are an owned kind (state/conformal)."""
    parts = text.split("/")
    two = "/".join(parts[:2]).split("=")[0]
    return two if two in OWNERS else (parts[0] if parts[0] in OWNERS else None)


def test_every_key_is_spelled_by_its_owner_only():
    strays = [f"{p.relative_to(ROOT)}:{line}: {text!r}" for p in _modules()
              if p.relative_to(ROOT).as_posix() not in STORES for line, text in key_literals(p)]
    assert not strays, "lake keys spelled outside their store (read them through the owner):\n" + "\n".join(strays)


def test_each_kind_has_one_owner():
    spelled: dict[str, set[str]] = defaultdict(set)
    for p in _modules():
        for _, text in key_literals(p):
            family = _family(text)
            if family is not None:
                spelled[family].add(p.relative_to(ROOT).as_posix())
    wrong = {f: sorted(mods) for f, mods in spelled.items() if mods != {OWNERS[f]}}
    assert not wrong, f"kinds spelled outside their one owner: {wrong}"
    # The scan sees the stores: the kinds whose prefix is a literal are found where the table says.
    assert {"runs", "models", "predictions", "audit", "raw", "state/conformal"} <= set(spelled)


def test_the_scan_finds_a_stray_key(tmp_path):
    """The check can fail: a reader that rebuilds the prediction log's layout itself is caught."""
    stray = tmp_path / "reader.py"
    stray.write_text('def keys(lake, h, day):\n    """Listing under predictions/ (a docstring is not a key)."""\n'
                     '    return lake.list(f"predictions/horizon={h}/date={day}/")\n')
    assert key_literals(stray) == [(3, "predictions/horizon={}/date={}/")]
    assert _family("predictions/horizon={}/date={}/") == "predictions"
