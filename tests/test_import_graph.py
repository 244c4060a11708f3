"""The dependency rules of the design, read from the source (ast, nothing imported): every import of every module
under services/ and shared/, at module level or inside a function, points down the layers and closes no circle.

The layers, top down: the faces (the CLI, the API) -> the orchestrator (the local runner, the Lambda handlers, the
SageMaker entry point, the use cases the faces share) -> the services (evaluation -> training / predict / risk ->
features -> ingest) -> shared."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVING = ("services.predict", "services.features", "services.risk", "services.books")
SERVICES = ("services.ingest", "services.features", "services.training", "services.predict", "services.risk",
            "services.evaluation", "services.alerts", "services.books")
FACES = ("services.cli", "services.api")
ORCHESTRATOR = "services.orchestrator"
TRAINING_ONLY_LIBS = ("sklearn", "torch", "shap", "lightgbm", "matplotlib")
# What risk may import besides shared and itself: it ships inside the serving task.
RISK_THIRD_PARTY = ("numpy",)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for top in ("services", "shared") for p in sorted((ROOT / top).rglob("*.py"))}


MODULES = _modules()


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement anywhere in the file. `from p import name` counts as an
    import of p.name when that is a module of ours, else of p."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in MODULES else target, node.lineno))
    return list(dict.fromkeys(found))  # `from p import a, b` is one import of p


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(ROOT)}:{line}"


def _violations(source: str, forbidden) -> list[str]:
    """Every import of a module within `source` for which forbidden(imported) holds."""
    return [f"{m} imports {target} ({_where(m, line)})"
            for m, imports in sorted(GRAPH.items()) if _within(m, source)
            for target, line in imports if forbidden(target)]


def test_the_graph_sees_the_packages_and_function_level_imports():
    assert {"shared.settings", "services.risk.gate", "services.evaluation.backtest",
            "services.features.blocks"} <= set(GRAPH)
    # report.py imports matplotlib only inside the functions that draw: such imports are in the graph too.
    assert any(t.startswith("matplotlib") for t, _ in GRAPH["services.evaluation.report"])
    # `from services.evaluation import report` is an import of the module report, not only of the package.
    assert any(t == "services.evaluation.report" for t, _ in GRAPH["services.evaluation.evaluate"])


@pytest.mark.parametrize(("source", "banned"), [
    ("shared", ("services",)),
    ("services.predict", ("services.training", "services.evaluation")),
    ("services.training", ("services.evaluation",)),
    ("services.features", ("services.training", "services.predict", "services.evaluation", "services.risk")),
    # Alerts read a run's summary (shared records) and nothing of the services that made it.
    ("services.alerts", ("services.ingest", "services.features", "services.training", "services.predict",
                         "services.risk", "services.evaluation")),
    # The books follow what the pipeline decided (risk, predict) and replay it with the backtest (evaluation's); they
    # run in the serving image, so nothing of training.
    ("services.books", ("services.training",)),
    ("services.evaluation", ("services.books",)),
    ("services.risk", ("services.books",)),
])
def test_imports_point_down(source, banned):
    bad = _violations(source, lambda t: any(_within(t, b) for b in banned))
    assert not bad, f"{source} must not import {', '.join(banned)}:\n" + "\n".join(bad)


@pytest.mark.parametrize("source", ["shared", *SERVICES])
def test_no_service_imports_the_orchestrator_or_a_face(source):
    """The runner, the handlers, the CLI and the API sit on top: a service that imported them could not run as a step."""
    bad = _violations(source, lambda t: any(_within(t, top) for top in (ORCHESTRATOR, *FACES)))
    assert not bad, f"{source} must not import the orchestrator, the CLI or the API:\n" + "\n".join(bad)


def test_the_orchestrator_imports_no_face():
    bad = _violations(ORCHESTRATOR, lambda t: any(_within(t, face) for face in FACES))
    assert not bad, "the orchestrator serves the CLI and the API; it must not import them:\n" + "\n".join(bad)


def test_risk_imports_only_shared_numpy_and_the_standard_library():
    """Risk's logic (sizing, guards, the gate) ships inside the serving task and is shared with the backtest. Its step
    module alone reads the run's served predictions and the daily panel through their owners (predict, features)."""
    def outside(t: str) -> bool:
        top = t.split(".")[0]
        if top in ("services", "shared"):
            return not (_within(t, "shared") or _within(t, "services.risk"))
        return top not in sys.stdlib_module_names and top != "__future__" and top not in RISK_THIRD_PARTY

    bad = [v for v in _violations("services.risk", outside) if not v.startswith("services.risk.steps ")]
    assert not bad, "services.risk may import only shared, numpy and the standard library:\n" + "\n".join(bad)
    step_reads = {t for t, _ in GRAPH["services.risk.steps"] if outside(t)}
    assert step_reads <= {"services.features.frame", "services.features.store", "services.predict.signals",
                          "services.predict.steps"}, step_reads


@pytest.mark.parametrize("package", SERVING)
def test_serving_never_imports_training_libraries(package):
    bad = _violations(package, lambda t: t.split(".")[0] in TRAINING_ONLY_LIBS)
    assert not bad, f"{package} is served (numpy + onnxruntime); it must not import " \
                    f"{', '.join(TRAINING_ONLY_LIBS)}:\n" + "\n".join(bad)


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (or a module importing itself), Tarjan's way."""
    edges = {m: sorted({t for t, _ in imports if t in MODULES}) for m, imports in GRAPH.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges[v]:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    described = []
    for comp in _cycles():
        inside = set(comp)
        links = [f"  {m} imports {t} ({_where(m, line)})" for m in comp for t, line in GRAPH[m] if t in inside]
        described.append(f"cycle among {', '.join(comp)}:\n" + "\n".join(links))
    assert not described, "\n".join(described)


def test_the_checks_can_fail():
    """A cycle and a forbidden import planted in a copy of the graph are found."""
    saved = dict(GRAPH)
    try:
        # risk.gate imports shared.settings; settings importing the gate back closes a circle.
        GRAPH["shared.settings"] = saved["shared.settings"] + [("services.risk.gate", 1)]
        assert any("shared.settings" in c and "services.risk.gate" in c for c in _cycles())
        assert _violations("shared", lambda t: _within(t, "services"))
        # a service reaching up to the runner is named
        GRAPH["services.predict.steps"] = saved["services.predict.steps"] + [("services.orchestrator.runner", 1)]
        assert _violations("services.predict", lambda t: _within(t, ORCHESTRATOR))
    finally:
        GRAPH.clear()
        GRAPH.update(saved)
