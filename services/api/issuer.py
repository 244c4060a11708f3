"""The development token issuer: the embedded default for Cognito on one machine.

It issues tokens of the user pool's shape (RS256, a `kid`, `iss`, `aud`, `token_use` "id", `cognito:groups`,
`cognito:username`) signed by its own RSA key, and publishes that key as a JWKS, so the one verifier checks local
and cloud tokens alike. Users and their groups live beside the local lake (`<lake>/auth/users.json`), passwords
hashed with Argon2id (argon2-cffi); the key in `<lake>/auth/issuer_key.pem`, readable by its owner only.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from pathlib import Path

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from services.api.auth import ALGORITHM, GROUPS, KeySet, Unauthorized, Verifier
from shared.errors import CstError

CLIENT_ID = "cst-local"
TOKEN_SECONDS = 3600
_HASHER = PasswordHasher()
# Checked against when a user does not exist, so an unknown name costs the same time as a wrong password.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


class DevIssuer:
    def __init__(self, folder: str | Path, issuer_url: str):
        self.folder = Path(folder)
        self.issuer_url = issuer_url.rstrip("/")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._key = self._load_key()
        public = self._key.public_key()
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = uuid.uuid5(uuid.NAMESPACE_OID, der.hex()).hex[:16]
        self._jwk = {**json.loads(RSAAlgorithm.to_jwk(public)), "kid": self.kid, "alg": ALGORITHM, "use": "sig"}

    @classmethod
    def for_lake(cls, lake_uri: str, issuer_url: str) -> DevIssuer:
        if lake_uri.startswith("s3://"):
            raise CstError("dev_issuer_needs_local_lake", "the development issuer keeps its users beside a local lake; "
                                                           "in the cloud, users live in the Cognito user pool")
        return cls(Path(lake_uri) / "auth", issuer_url)

    # --- keys -------------------------------------------------------------------------------------------------

    def _load_key(self) -> rsa.RSAPrivateKey:
        path = self.folder / "issuer_key.pem"
        if path.exists():
            return serialization.load_pem_private_key(path.read_bytes(), password=None)  # type: ignore[return-value]
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        return key

    def jwks(self) -> dict:
        return {"keys": [self._jwk]}

    def verifier(self) -> Verifier:
        return Verifier(self.issuer_url, CLIENT_ID, KeySet(self.jwks))

    # --- users ------------------------------------------------------------------------------------------------

    @property
    def _users_path(self) -> Path:
        return self.folder / "users.json"

    def users(self) -> dict[str, dict]:
        return json.loads(self._users_path.read_text()) if self._users_path.exists() else {}

    def add_user(self, name: str, password: str, group: str) -> None:
        if group not in GROUPS:
            raise CstError("unknown_group", f"group must be one of {', '.join(GROUPS)}")
        if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise CstError("bad_username", "a user name is 1-64 letters, digits, '.', '-' or '_'")
        if len(password) < 12:
            raise CstError("weak_password", "a password has at least 12 characters")
        users = self.users()
        previous = users.get(name, {})
        users[name] = {"sub": previous.get("sub", str(uuid.uuid4())), "groups": [group],
                       "hash": _HASHER.hash(password)}
        tmp = self._users_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(users, f, indent=2)
        tmp.replace(self._users_path)

    def login(self, name: str, password: str, now: float | None = None) -> str:
        """An ID token for a user whose password matches; the same refusal (and about the same time) otherwise."""
        user = self.users().get(name)
        try:
            _HASHER.verify(user["hash"] if user else _DUMMY_HASH, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            raise Unauthorized("bad_credentials", "unknown user or wrong password") from None
        if user is None:
            raise Unauthorized("bad_credentials", "unknown user or wrong password")
        issued = int(time.time() if now is None else now)
        claims = {"sub": user["sub"], "cognito:username": name, "cognito:groups": user["groups"],
                  "token_use": "id", "aud": CLIENT_ID, "iss": self.issuer_url, "iat": issued,
                  "auth_time": issued, "exp": issued + TOKEN_SECONDS}
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})
