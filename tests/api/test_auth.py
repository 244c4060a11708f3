"""Token verification: the development issuer and moto's Cognito through one verifier, and every hostile token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from services.api.auth import KeySet, Unauthorized, Verifier
from services.api.issuer import CLIENT_ID, DevIssuer

pytest.importorskip("argon2")
ISSUER = "http://127.0.0.1:8080/auth"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def issuer(tmp_path_factory) -> DevIssuer:
    dev = DevIssuer(tmp_path_factory.mktemp("auth"), ISSUER)
    dev.add_user("vera", PASSWORD, "viewer")
    dev.add_user("otto", PASSWORD, "operator")
    return dev


def _b64(doc: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def _hmac_token(kid: str, body: str, secret: bytes) -> str:
    head = _b64({"alg": "HS256", "kid": kid, "typ": "JWT"})
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def _resign(issuer: DevIssuer, **changes) -> str:
    """A token with changed claims, properly signed by the issuer's own key (what only the issuer could make)."""
    claims = {**_claims(issuer.login("vera", PASSWORD)), **changes}
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, issuer._key, algorithm="RS256", headers={"kid": issuer.kid})


def test_the_development_issuer_logs_users_in_with_their_groups(issuer):
    v = issuer.verifier()
    viewer = v.verify(issuer.login("vera", PASSWORD))
    operator = v.verify(issuer.login("otto", PASSWORD))
    assert viewer.groups == {"viewer"} and not viewer.is_operator and viewer.username == "vera"
    assert operator.is_operator and operator.token_use == "id"
    # The key and users survive a restart: the same folder gives the same key id.
    assert DevIssuer(issuer.folder, ISSUER).kid == issuer.kid
    stored = (issuer.folder / "users.json").read_text()
    assert PASSWORD not in stored and "$argon2id$" in stored
    assert (issuer.folder / "issuer_key.pem").stat().st_mode & 0o077 == 0


def test_wrong_passwords_and_unknown_users_get_the_same_refusal(issuer):
    for name, password in (("vera", "wrong password!!"), ("nobody", PASSWORD)):
        with pytest.raises(Unauthorized) as err:
            issuer.login(name, password)
        assert err.value.code == "bad_credentials" and "unknown user or wrong password" in err.value.message


def _hostile(issuer: DevIssuer) -> dict[str, tuple[str, str]]:
    good = issuer.login("vera", PASSWORD)
    head, body, sig = good.split(".")
    claims = _claims(good)
    now = int(time.time())
    public_pem = issuer._key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)
    other = DevIssuer(issuer.folder.parent / "other-issuer", ISSUER)  # another key, same issuer URL
    other.add_user("vera", PASSWORD, "operator")
    return {
        "empty": ("", "malformed_token"),
        "garbage": ("not.a.token", "malformed_token"),
        "two parts": (f"{head}.{body}", "malformed_token"),
        "expired": (_resign(issuer, iat=now - 7200, exp=now - 3600), "token_expired"),
        "not yet valid": (_resign(issuer, iat=now + 3600, exp=now + 7200), "token_not_yet_valid"),
        "nbf in the future": (_resign(issuer, nbf=now + 3600), "token_not_yet_valid"),
        "wrong issuer": (_resign(issuer, iss="https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_other"),
                         "wrong_issuer"),
        "wrong audience": (_resign(issuer, aud="someone-else"), "wrong_audience"),
        "access token of another client": (_resign(issuer, token_use="access", aud=None, client_id="x"),
                                           "wrong_audience"),
        "refresh token_use": (_resign(issuer, token_use="refresh"), "wrong_token_use"),
        "no token_use": (_resign(issuer, token_use=None), "missing_claim"),
        "no exp": (_resign(issuer, exp=None), "missing_claim"),
        "alg none": (f"{_b64({'alg': 'none', 'kid': issuer.kid, 'typ': 'JWT'})}.{body}.", "wrong_algorithm"),
        # The classic key-confusion attack: HMAC over the token with the (public) RSA key as the secret.
        "HS256 with the public key as secret": (_hmac_token(issuer.kid, body, public_pem), "wrong_algorithm"),
        "unknown kid": (jwt.encode(claims, other._key, algorithm="RS256", headers={"kid": "not-a-key"}),
                        "unknown_key"),
        "no kid": (jwt.encode(claims, issuer._key, algorithm="RS256"), "unknown_key"),
        "signed by another key under our kid": (
            jwt.encode(claims, other._key, algorithm="RS256", headers={"kid": issuer.kid}), "bad_signature"),
        "tampered payload (groups)": (f"{head}.{_b64({**claims, 'cognito:groups': ['operator']})}.{sig}",
                                      "bad_signature"),
        "tampered signature": (f"{head}.{body}.{sig[:-4]}AAAA", "bad_signature"),
        "oversized": ("a" * 9000 + ".b.c", "malformed_token"),
    }


def test_hostile_tokens_are_refused_with_their_code(issuer):
    v = issuer.verifier()
    cases = _hostile(issuer)
    assert len(cases) >= 20
    for name, (token, code) in cases.items():
        with pytest.raises(Unauthorized) as err:
            v.verify(token)
        assert err.value.code == code, name
        assert "Traceback" not in str(err.value) and issuer.kid not in err.value.message


def test_an_unknown_kid_refetches_the_key_set_once_then_refuses():
    dev_keys = {"keys": []}
    calls = []

    def fetch():
        calls.append(1)
        return dev_keys

    clock = [0.0]
    keys = KeySet(fetch, refetch_after_s=60, clock=lambda: clock[0])
    with pytest.raises(Unauthorized):
        keys.key("k1")
    assert len(calls) == 1  # first load; the refetch waits for the rate limit
    clock[0] = 61.0
    with pytest.raises(Unauthorized):
        keys.key("k1")
    assert len(calls) == 2
    with pytest.raises(Unauthorized):
        keys.key("k2")  # within the minute: no third fetch
    assert len(calls) == 2


def test_a_failing_key_fetch_is_a_refusal_not_a_crash():
    def broken():
        raise ConnectionError("issuer down")

    v = Verifier(ISSUER, CLIENT_ID, KeySet(broken))
    token = jwt.encode({"sub": "x"}, "k" * 32, algorithm="HS256", headers={"kid": "a"})
    token = f"{_b64({'alg': 'RS256', 'kid': 'a'})}.{token.split('.')[1]}.{token.split('.')[2]}"
    with pytest.raises(Unauthorized) as err:
        v.verify(token)
    assert err.value.code == "keys_unavailable"


def test_cognito_tokens_from_moto_verify_with_groups_and_the_issuer_separates_pools(monkeypatch):
    pytest.importorskip("moto")
    import boto3
    import requests
    from moto import mock_aws

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    region = "eu-west-1"
    with mock_aws():
        idp = boto3.client("cognito-idp", region_name=region)
        pools = []
        for name in ("cst", "another"):
            pool = idp.create_user_pool(PoolName=name)["UserPool"]["Id"]
            client = idp.create_user_pool_client(UserPoolId=pool, ClientName="dashboard",
                                                 ExplicitAuthFlows=["ADMIN_NO_SRP_AUTH"])["UserPoolClient"]["ClientId"]
            idp.create_group(UserPoolId=pool, GroupName="operator")
            idp.admin_create_user(UserPoolId=pool, Username="otto", TemporaryPassword="Temp-Passw0rd!")
            idp.admin_set_user_password(UserPoolId=pool, Username="otto", Password="Real-Passw0rd!!", Permanent=True)
            idp.admin_add_user_to_group(UserPoolId=pool, Username="otto", GroupName="operator")
            auth = idp.admin_initiate_auth(UserPoolId=pool, ClientId=client, AuthFlow="ADMIN_NO_SRP_AUTH",
                                           AuthParameters={"USERNAME": "otto", "PASSWORD": "Real-Passw0rd!!"})
            pools.append((pool, client, auth["AuthenticationResult"]))
        (pool, client, tokens), (other_pool, other_client, other_tokens) = pools
        issuer = f"https://cognito-idp.{region}.amazonaws.com/{pool}"
        verifier = Verifier(issuer, client, KeySet(lambda: requests.get(f"{issuer}/.well-known/jwks.json",
                                                                        timeout=5).json()))
        for kind in ("IdToken", "AccessToken"):
            who = verifier.verify(tokens[kind])
            assert who.groups == {"operator"} and who.is_operator, kind
        # moto signs every pool's tokens with one key: only the issuer check keeps the other pool out.
        for kind in ("IdToken", "AccessToken"):
            with pytest.raises(Unauthorized) as err:
                verifier.verify(other_tokens[kind])
            assert err.value.code == "wrong_issuer"


def test_cst_users_add_and_list(tmp_path, monkeypatch, capsys):
    import io

    from services.cli import main

    lake = tmp_path / "lake"
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["users", "add", "vera", "--group", "viewer", "--password-stdin", "--lake", str(lake)]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["users", "add", "otto", "--group", "operator", "--password-stdin", "--lake", str(lake)]) == 2
    assert "weak_password" in capsys.readouterr().err
    assert main(["users", "list", "--lake", str(lake)]) == 0
    assert capsys.readouterr().err.strip() == "vera: viewer"
    dev = DevIssuer.for_lake(str(lake), ISSUER)
    assert dev.verifier().verify(dev.login("vera", PASSWORD)).groups == {"viewer"}
    from shared.errors import CstError

    with pytest.raises(CstError) as err:
        DevIssuer.for_lake("s3://bucket", ISSUER)
    assert err.value.code == "dev_issuer_needs_local_lake"
