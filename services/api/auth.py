"""Who is calling: verification of Cognito-shaped JWTs (the user pool in the cloud, the development issuer locally).

One verifier checks both. A token is accepted only when all of these hold: the header says RS256 (never `none`,
never an HMAC whose secret could be the public key); its `kid` names a key of the issuer's JWKS (cached; an unknown
`kid` refetches the set once, at most once per `refetch_after_s`); the signature verifies; `iss` is the configured
issuer; `token_use` is `id` or `access`; an ID token's `aud` or an access token's `client_id` is the configured
client; `exp` has not passed and `iat` / `nbf` are not in the future, each with a small leeway. Groups come from
`cognito:groups`. Every rejection is a `Unauthorized` with a code; none says more than the code and a short reason.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from jwt.algorithms import RSAAlgorithm

from shared.errors import CstError

ALGORITHM = "RS256"
# The user pool's groups (the CDK app creates exactly these): viewers read, operators also start runs and retrains.
VIEWER, OPERATOR = "viewer", "operator"
GROUPS = (VIEWER, OPERATOR)


class Unauthorized(CstError):
    """A request whose credentials do not hold; `code` says which check failed."""


@dataclass(frozen=True)
class Identity:
    subject: str
    username: str
    groups: frozenset[str]
    token_use: str

    @property
    def is_operator(self) -> bool:
        return OPERATOR in self.groups

    @property
    def is_viewer(self) -> bool:
        return bool(self.groups & set(GROUPS))


class KeySet:
    """The issuer's JWKS, fetched through an injected function (moto answers the JWKS only to `requests`; the
    development issuer answers in process), cached, and refetched once when a token names an unknown key."""

    def __init__(self, fetch: Callable[[], dict], refetch_after_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self._fetch, self._refetch_after_s, self._clock = fetch, refetch_after_s, clock
        self._keys: dict[str, object] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        try:
            doc = self._fetch()
            keys = {k["kid"]: RSAAlgorithm.from_jwk(json.dumps(k)) for k in doc.get("keys", [])
                    if k.get("kty") == "RSA" and k.get("kid")}
        except Exception as exc:  # noqa: BLE001 - any failure to read the key set is a refusal, never a crash
            raise Unauthorized("keys_unavailable", f"the issuer's keys could not be read ({type(exc).__name__})") from None
        self._keys, self._fetched_at = keys, self._clock()

    def key(self, kid: str) -> object:
        with self._lock:
            if self._fetched_at is None:
                self._load()
            if kid not in self._keys and self._clock() - (self._fetched_at or 0.0) >= self._refetch_after_s:
                self._load()  # keys rotate: one refetch, rate-limited so unknown kids cannot hammer the issuer
            if kid not in self._keys:
                raise Unauthorized("unknown_key", "the token names a key the issuer does not publish")
            return self._keys[kid]


class Verifier:
    def __init__(self, issuer: str, client_id: str, keys: KeySet, leeway_s: float = 30.0,
                 now: Callable[[], float] = time.time):
        self.issuer, self.client_id, self.keys, self.leeway_s, self._now = issuer, client_id, keys, leeway_s, now

    def verify(self, token: str) -> Identity:
        if not token or not isinstance(token, str) or token.count(".") != 2 or len(token) > 8192:
            raise Unauthorized("malformed_token", "not a signed JWT")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed_token", "not a signed JWT") from None
        if header.get("alg") != ALGORITHM:
            raise Unauthorized("wrong_algorithm", f"only {ALGORITHM} tokens are accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("unknown_key", "the token names no key")
        key = self.keys.key(kid)
        try:
            claims = self._decode(token, key)
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token_expired", "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("token_not_yet_valid", "the token is not valid yet") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("wrong_issuer", "the token comes from another issuer") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("bad_signature", "the token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized("missing_claim", f"the token lacks {exc.claim}") from None
        except jwt.PyJWTError:
            raise Unauthorized("invalid_token", "the token could not be verified") from None
        use = claims.get("token_use")
        if use == "id":
            aud = claims.get("aud")
            ok = aud == self.client_id or (isinstance(aud, list) and self.client_id in aud)
        elif use == "access":
            ok = claims.get("client_id") == self.client_id
        else:
            raise Unauthorized("wrong_token_use", "only ID and access tokens are accepted")
        if not ok:
            raise Unauthorized("wrong_audience", "the token was issued to another client")
        groups = claims.get("cognito:groups") or []
        if not isinstance(groups, list):
            raise Unauthorized("invalid_token", "groups are not a list")
        username = str(claims.get("cognito:username") or claims.get("username") or claims["sub"])
        return Identity(str(claims["sub"]), username, frozenset(str(g) for g in groups), str(use))

    def _decode(self, token: str, key: object) -> dict:
        """Signature, algorithm and issuer by PyJWT; the time claims here, against the injectable clock."""
        claims = jwt.decode(token, key, algorithms=[ALGORITHM], issuer=self.issuer,
                            options={"require": ["exp", "iat", "iss", "sub", "token_use"], "verify_aud": False,
                                     "verify_exp": False, "verify_iat": False, "verify_nbf": False})
        now = self._now()
        if float(claims["exp"]) < now - self.leeway_s:
            raise jwt.ExpiredSignatureError("expired")
        for claim in ("iat", "nbf"):
            if claim in claims and float(claims[claim]) > now + self.leeway_s:
                raise jwt.ImmatureSignatureError(claim)
        return claims
