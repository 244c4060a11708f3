"""The documents that cross modules travel as records: read from the source (ast), no function of the modules that
produce, store or read them (predictions, outcomes, performance, signals and risk decisions, run summaries, drift
verdicts, model metadata and gate decisions, training results) returns a plain mapping; and the records keep what
older runs wrote readable."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from shared.records import DriftVerdict, GateDecision, ModelMetadata, RunSummary

ROOT = Path(__file__).resolve().parents[1]
# The producers, stores and readers of the domain's documents.
DOCUMENT_MODULES = [
    "shared/records.py", "shared/runs.py", "shared/registry.py", "shared/audit.py",
    "services/predict/steps.py", "services/predict/logbook.py", "services/predict/drift.py", "services/predict/board.py",
    "services/risk/steps.py", "services/risk/gate.py", "services/training/registry.py", "services/training/train.py",
    "services/training/steps.py", "services/orchestrator/summary.py", "services/orchestrator/usecases.py",
    "services/books", "services/api/reads.py", "services/api/context.py", "services/api/routes", "services/cli",
]
# Mappings that are not documents: what each one is.
NOT_DOCUMENTS = {
    ("shared/records.py", "arrow_fields"): "a Parquet schema (field name -> Arrow type)",
    ("services/training/registry.py", "drift_reference"): "the training features' decile edges, stored as arrays",
    ("services/risk/gate.py", "allocate"): "weights by position index",
}


def _plain_mapping(annotation: ast.expr) -> bool:
    """`dict`, `dict | None`, `list[dict]`, `dict[str, Any]`, `dict[str, dict]`: a document without a type."""
    text = ast.unparse(annotation).replace(" ", "")
    for part in text.split("|"):
        if part in ("dict", "list[dict]", "dict[str,Any]", "list[dict[str,Any]]") or part.startswith("dict[str,dict"):
            return True
    return False


def _functions():
    for entry in DOCUMENT_MODULES:
        path = ROOT / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            rel = file.relative_to(ROOT).as_posix()
            for node in ast.walk(ast.parse(file.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns is not None \
                        and not node.name.startswith("_"):  # what a module hands to others
                    yield rel, node


def test_no_producer_store_or_reader_of_a_document_returns_a_plain_mapping():
    untyped = [f"{rel}:{node.lineno} {node.name} -> {ast.unparse(node.returns)}" for rel, node in _functions()
               if _plain_mapping(node.returns) and (rel, node.name) not in NOT_DOCUMENTS]
    assert untyped == []


def test_the_scan_sees_a_plain_mapping_when_there_is_one():
    fn = ast.parse("def summary(lake) -> dict[str, Any] | None: ...").body[0]
    assert _plain_mapping(fn.returns)
    assert not _plain_mapping(ast.parse("def s(l) -> dict[str, RunSummary]: ...").body[0].returns)
    assert sum(1 for _ in _functions()) > 100  # the modules are read at all


@pytest.mark.parametrize("doc", [
    {"retrain": False, "reasons": [], "note": "no 1h rows at this as-of"},
    {"rows_compared": 30, "outcomes": 12, "model_age_days": 3.5, "psi_max": 0.02, "psi_drifting": [],
     "retrain": True, "reasons": ["cadence"], "outcomes_of_this_model": 12},
])
def test_a_drift_verdict_is_stored_as_it_was_written(doc):
    """What was not judged stays absent (no nulls added): summaries of earlier runs read and write the same."""
    assert DriftVerdict.model_validate(doc).model_dump(mode="json") == doc


def test_a_gate_decision_keeps_its_keys_and_older_versions_without_one_still_read():
    doc = {"promote": False, "reason": "same unseen validation rows: new model is worse", "previous": "v1",
           "rows": 400, "brier_new": 0.26, "brier_previous": 0.25}
    assert GateDecision.model_validate(doc).model_dump(mode="json") == doc
    base = {"horizon": "24h", "version": "v1", "timeframe": "1d", "bars": 1, "features": ["f"],
            "training_window": {"first": "a", "last": "b", "rows": 1, "coins": ["BTC"]}}
    old = ModelMetadata.model_validate({**base, "gate": {}})
    assert old.gate is None and not old.promoted
    summary = RunSummary.model_validate({"run_id": "r", "as_of": "t", "drift": {"24h": doc | {"retrain": False}}})
    assert summary.drift["24h"].model_extra  # keys of another shape pass through, not dropped
