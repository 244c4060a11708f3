"""The API in Lambda: the same FastAPI app behind API Gateway's HTTP API, through Mangum.

The lake and the verifier come from settings: the user pool's issuer and client from the environment the CDK app
sets; the JWKS is fetched from the issuer over HTTPS (urllib; cached by the verifier)."""

from __future__ import annotations

import json
import urllib.request

from mangum import Mangum

from services.api.app import create_app
from services.api.auth import KeySet, Verifier
from shared.settings import get_settings
from shared.storage import open_lake


def _jwks(issuer: str):
    def fetch() -> dict:
        with urllib.request.urlopen(f"{issuer}/.well-known/jwks.json", timeout=5) as r:  # noqa: S310 - https issuer
            return json.loads(r.read())
    return fetch


def build() -> Mangum:
    settings = get_settings()
    issuer, client = settings.api.issuer, settings.api.client_id
    app = create_app(settings, open_lake(settings.lake.uri, region=settings.aws_region),
                     Verifier(issuer, client, KeySet(_jwks(issuer))))
    return Mangum(app, lifespan="off")


_handler: Mangum | None = None


def handler(event: dict, context: object) -> dict:
    global _handler
    if _handler is None:
        _handler = build()
    return _handler(event, context)
