"""The API's written contract, checked by a tool nobody here wrote: Schemathesis generates requests from
`/api/openapi.json` (valid ones and ones the schema forbids) for every JSON route, as a viewer, as an operator and with
no token, and runs its checks on each answer: no server error, every status code and content type documented, every
body valid against its response schema, schema-violating requests refused and schema-valid ones accepted."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("torch")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import CHECKS, load_all_checks  # noqa: E402

from services.api.app import Actions, create_app  # noqa: E402
from services.api.issuer import DevIssuer  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.storage import LocalLake  # noqa: E402
from tests.conftest import daily_source  # noqa: E402

TINY = {"folds": 2, "trials": {"lr": 1, "gbt": 1, "gru": 1}, "timeout_s": 120, "epochs": 1, "gbt_max_estimators": 50}
PASSWORD = "correct horse battery"
# Checks that need a sequence of calls (stateful testing) are left out; every other built-in check runs.
STATEFUL = {"use_after_free", "ensure_resource_availability", "object_level_authorization"}
# Per route, generation mode and identity: ~1,200 requests in all; a longer campaign: CONTRACT_EXAMPLES=200.
EXAMPLES = int(os.environ.get("CONTRACT_EXAMPLES", "15"))


@pytest.fixture(scope="module")
def api(shared_data, tmp_path_factory):
    """Two daily runs of the real cycle on three coins (predictions, outcomes, performance, models, quality), the
    app over that lake, and the tokens of a viewer and an operator."""
    from services import cli

    src = daily_source(shared_data, tmp_path_factory.mktemp("src") / "data", ("BTC", "ETH", "XRP"))
    lake_dir = tmp_path_factory.mktemp("lake")
    mp = pytest.MonkeyPatch()
    mp.setenv("CST_HORIZONS", '["24h","7d"]')
    mp.setenv("CST_TRAINING__BUDGETS", json.dumps({"quick": TINY}))
    mp.setenv("CST_TRAINING__CALIBRATION_GRID", "64")
    for as_of in ("2024-05-01T00:00:00Z", "2024-05-09T00:00:00Z"):
        assert cli.main(["run", "--source", str(src), "--lake", str(lake_dir), "--as-of", as_of]) == 0
    settings_ = Settings()
    mp.undo()
    issuer = DevIssuer.for_lake(str(lake_dir), "http://127.0.0.1/auth")
    issuer.add_user("vera", PASSWORD, "viewer")
    issuer.add_user("otto", PASSWORD, "operator")
    app = create_app(settings_, LocalLake(lake_dir), issuer.verifier(), Actions(lambda request: "run-x"))
    tokens = {who: {"Authorization": f"Bearer {issuer.login(who, PASSWORD)}"} for who in ("vera", "otto")}
    return app, {**tokens, "nobody": {}}


def _exercise(op, mode, headers: dict, checks: list, examples: int, calls: Counter, failures: list[str]) -> None:
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(op.as_strategy(generation_mode=mode))
    def run(case):
        calls[f"{op.label} {mode.value}"] += 1
        try:
            case.call_and_validate(headers=headers, checks=checks)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - Schemathesis reports failures as exception groups
            lines = [line for line in str(exc).splitlines() if line.strip()]
            failures.append(f"{op.label} [{mode.value}]: " + " | ".join(lines[:6]))

    run()


def fuzz(app, headers: dict, examples: int) -> tuple[Counter, list[str]]:
    """Requests per route and mode, and every failure Schemathesis reports (route, mode, its first lines)."""
    load_all_checks()
    checks = [c for c in CHECKS.get_all() if c.__name__ not in STATEFUL]
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    calls: Counter = Counter()
    failures: list[str] = []
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _exercise(op, mode, headers, checks, examples, calls, failures)
            except Unsatisfiable:
                pass  # a route without parameters has no schema-violating request to make
    return calls, failures


@pytest.mark.parametrize("who", ["vera", "otto", "nobody"])
def test_every_answer_keeps_the_written_contract(api, who):
    app, tokens = api
    calls, failures = fuzz(app, tokens[who], EXAMPLES)
    print(f"{who}: {sum(calls.values())} requests, {len(failures)} failures")  # shown with pytest -s
    routes = {f"{m.upper()} {p}" for p, ops in app.openapi()["paths"].items() for m in ops}
    assert {label.rsplit(" ", 1)[0] for label in calls} == routes and len(routes) == 17  # every JSON route exercised
    assert not failures, "\n".join(failures)


def test_the_check_finds_a_broken_contract(api):
    """The check can fail: an app whose route answers a field its response model does not allow is caught."""
    app, tokens = api
    from fastapi import FastAPI

    from services.api.models import Me

    broken = FastAPI(openapi_url="/api/openapi.json")

    @broken.get("/api/me", response_model=None, responses={200: {"model": Me}})
    def me() -> dict:
        return {"username": "vera", "groups": "viewer", "operator": False}  # groups must be a list

    _, failures = fuzz(broken, {}, 3)
    assert failures and "schema" in failures[0].lower()


def test_the_openapi_document_describes_every_answer(api):
    app, _ = api
    doc = app.openapi()
    for path, item in doc["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method, op in item.items():
            ok = next(code for code in op["responses"] if code.startswith("2"))
            assert "$ref" in json.dumps(op["responses"][ok]["content"]["application/json"]["schema"]), (method, path)
            for code in ("401", "403", "422"):
                assert op["responses"][code]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
