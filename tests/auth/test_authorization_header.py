"""The ``Authorization`` header and the one client authentication method of a request, on
every endpoint that reads it (/token, /revoke, /introspect, the /v1 admin API): a malformed
header is 401 with a challenge whose ``error`` is the body's; two methods are
``invalid_request`` (RFC 6749 §2.3, §5.2); nothing is minted, revoked or answered, and the
process keeps serving."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from broker.audit.writer import AuditRecord
from broker.auth.authorization import (
    Credentials,
    MalformedAuthorization,
    parse_authorization,
)
from broker.cli.dev import DEV_AGENT, DEV_GATEWAY, DevTrustDomain
from tests.admin.test_admin_api import bearer, issue, root  # noqa: F401  (fixtures)
from tests.conftest import ISSUER, FrozenClock
from tests.grants.test_token_endpoint import audit_rows, post_token, token_params
from tests.revocation.test_revocation import mint, rs_client  # noqa: F401  (fixture)
from tests.revocation_kit import FORM, RS, form

JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"

# --- the parser ------------------------------------------------------------------------

WELL_FORMED = {
    "bearer-jwt": ("Bearer eyJ.eyJ.sig", Credentials("Bearer", "eyJ.eyJ.sig")),
    "bearer-lowercase": ("bearer abc", Credentials("bearer", "abc")),
    "basic-padded": ("Basic Z3c6c2VjcmV0==", Credentials("Basic", "Z3c6c2VjcmV0==")),
    "other-scheme": ("Digest abc", Credentials("Digest", "abc")),
}
# (id, every Authorization field as bytes, reason)
MALFORMED: list[tuple[str, list[bytes], str]] = [
    ("two-headers", [b"Bearer abc", b"Bearer abc"], "authorization_repeated"),
    ("two-schemes", [b"Basic Z3c6cw==", b"Bearer abc"], "authorization_repeated"),
    ("double-space", [b"Bearer  abc"], "authorization_malformed"),
    ("leading-space", [b" Bearer abc"], "authorization_malformed"),
    ("trailing-space", [b"Bearer abc "], "authorization_malformed"),
    ("tab", [b"Bearer\tabc"], "authorization_bad_characters"),
    ("scheme-only", [b"Bearer"], "authorization_empty"),
    ("empty-credentials", [b"Bearer "], "authorization_empty"),
    ("empty-header", [b""], "authorization_malformed"),
    ("auth-params", [b'Bearer abc, realm="x"'], "authorization_malformed"),
    ("bad-scheme-token", [b"Be@rer abc"], "authorization_malformed"),
    ("long-scheme", [b"B" * 33 + b" abc"], "authorization_malformed"),
    ("latin-1", ["Bearer ab\u00e9".encode("latin-1")], "authorization_bad_characters"),
    ("utf-8", ["Bearer \u00fcber".encode()], "authorization_bad_characters"),
    ("nul", [b"Bearer a\x00b"], "authorization_bad_characters"),
]


@pytest.mark.parametrize(("value", "expected"), WELL_FORMED.values(), ids=WELL_FORMED)
def test_well_formed_headers_parse(value: str, expected: Credentials) -> None:
    assert parse_authorization([value]) == expected
    assert parse_authorization(value) == expected  # one field given as a string


def test_no_header_is_none() -> None:
    assert parse_authorization([]) is None
    assert parse_authorization(None) is None


@pytest.mark.parametrize(("fields", "reason"), [(f, r) for _, f, r in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed_headers_are_refused(fields: list[bytes], reason: str) -> None:
    with pytest.raises(MalformedAuthorization) as caught:
        parse_authorization([f.decode("latin-1") for f in fields])
    assert caught.value.reason == reason


# --- on the wire -----------------------------------------------------------------------


def with_authorization(fields: list[bytes], extra: dict[str, str] | None = None) -> list[
        tuple[str, bytes]]:
    return [*((k, v.encode()) for k, v in (extra or {}).items()),
            *(("Authorization", f) for f in fields)]


def challenge_matches(r: httpx.Response, scheme: str) -> None:
    """RFC 9110 §15.5.2: a 401 names a challenge, whose error is the body's."""
    assert r.status_code == 401, r.text
    assert r.headers.get_list("www-authenticate") == [
        f'{scheme} error="{r.json()["error"]}"']
    assert r.headers["cache-control"] == "no-store"


def token_records(engine: Engine) -> list[AuditRecord]:
    return [row for row in audit_rows(engine) if row.kind == "token"]


@pytest.mark.parametrize(("fields", "reason"), [(f, r) for _, f, r in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_token_refuses_a_malformed_header(fields: list[bytes], reason: str, client: TestClient,
                                          seeded: DevTrustDomain, clock: FrozenClock,
                                          engine: Engine) -> None:
    # a valid assertion too: the malformed header alone decides
    r = client.post("/token", content=form(**token_params(seeded, clock())),
                    headers=with_authorization(fields, FORM))
    challenge_matches(r, "Client-Assertion")
    assert r.json() == {"error": "invalid_client",
                        "error_description": "client authentication failed"}
    rows = token_records(engine)
    assert [(row.decision, row.reason, row.jti) for row in rows] == [("denied", reason, None)]
    assert post_token(client, token_params(seeded, clock())).status_code == 200


@pytest.mark.parametrize(("fields", "reason"), [(f, r) for _, f, r in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_revoke_refuses_a_malformed_header(fields: list[bytes], reason: str,
                                           rs_client: TestClient,  # noqa: F811
                                           seeded: DevTrustDomain, clock: FrozenClock,
                                           engine: Engine) -> None:
    token = mint(rs_client, seeded, clock())
    r = rs_client.post("/revoke", content=form(
        token=token, client_assertion_type=JWT_SPIFFE,
        client_assertion=seeded.mint_svid(DEV_GATEWAY, ISSUER, now=clock())),
        headers=with_authorization(fields, FORM))
    challenge_matches(r, "Client-Assertion")
    assert r.json()["error"] == "invalid_client"
    assert not [row for row in audit_rows(engine) if row.kind == "revocation"]
    assert introspected(rs_client, seeded, token, clock())["active"] is True


def introspected(client: TestClient, td: DevTrustDomain, token: str, now: float) -> Any:
    svid = td.mint_svid(RS, ISSUER, now=now)
    r = client.post("/introspect", content=form(token=token),
                    headers={**FORM, "Authorization": f"Bearer {svid}"})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize(("fields", "reason"), [(f, r) for _, f, r in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_introspect_refuses_a_malformed_header(fields: list[bytes], reason: str,
                                               rs_client: TestClient,  # noqa: F811
                                               seeded: DevTrustDomain,
                                               clock: FrozenClock) -> None:
    token = mint(rs_client, seeded, clock())
    r = rs_client.post("/introspect", content=form(token=token),
                       headers=with_authorization(fields, FORM))
    challenge_matches(r, "Bearer")
    # RFC 7662 §2.3: a bad bearer credential is invalid_token, as the challenge says (P15)
    assert r.json() == {"error": "invalid_token",
                        "error_description": "client authentication failed"}
    assert "active" not in r.text
    assert introspected(rs_client, seeded, token, clock())["active"] is True


@pytest.mark.parametrize(("fields", "reason"), [(f, r) for _, f, r in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
@pytest.mark.parametrize("valid_first", [False, True])
def test_admin_api_refuses_a_malformed_header(fields: list[bytes], reason: str,
                                              valid_first: bool, client: TestClient,
                                              root: str) -> None:  # noqa: F811
    if valid_first:  # a valid admin token in the first of two fields is still refused
        fields = [f"Bearer {root}".encode(), *fields]
    r = client.get("/v1/agents", headers=with_authorization(fields))
    challenge_matches(r, "Bearer")
    assert r.json()["error"] == "invalid_token"
    assert root not in r.text
    ok = client.get("/v1/agents", headers=bearer(root))
    assert ok.status_code == 200
    assert DEV_AGENT in {a["spiffe_id"] for a in ok.json()}


@pytest.mark.parametrize("value", ["Basic Z3c6c2VjcmV0", "Digest abc", "Txn-Token eyJ.eyJ.s"])
def test_admin_api_refuses_another_scheme(value: str, client: TestClient) -> None:
    r = client.get("/v1/agents", headers={"Authorization": value})
    challenge_matches(r, "Bearer")
    assert r.json() == {"error": "invalid_token",
                        "error_description": "an admin bearer token is required"}


# --- one authentication method per request ---------------------------------------------


@pytest.mark.parametrize(("headers", "extra"), [
    ({"Authorization": "Basic Z3c6c2VjcmV0"}, {}),
    ({"Authorization": "Bearer abc"}, {}),
    ({}, {"client_secret": "s3cret"}),
    ({}, {"client_secret": ""}),
], ids=["basic-and-assertion", "bearer-and-assertion", "secret-and-assertion",
        "empty-secret-and-assertion"])
def test_revoke_takes_one_method(headers: dict[str, str], extra: dict[str, str],
                                 rs_client: TestClient,  # noqa: F811
                                 seeded: DevTrustDomain, clock: FrozenClock,
                                 engine: Engine) -> None:
    token = mint(rs_client, seeded, clock())
    r = rs_client.post("/revoke", content=form(
        token=token, client_assertion_type=JWT_SPIFFE,
        client_assertion=seeded.mint_svid(DEV_GATEWAY, ISSUER, now=clock()), **extra),
        headers={**FORM, **headers})
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_request",
                        "error_description": "more than one client authentication method"}
    assert "www-authenticate" not in r.headers
    assert not [row for row in audit_rows(engine) if row.kind == "revocation"]
    assert introspected(rs_client, seeded, token, clock())["active"] is True


@pytest.mark.parametrize("extra", [
    {"client_assertion_type": JWT_SPIFFE, "client_assertion": "PLACEHOLDER"},
    {"client_assertion_type": JWT_SPIFFE},
    {"client_secret": "s3cret"},
], ids=["bearer-and-assertion", "bearer-and-assertion-type", "bearer-and-secret"])
def test_introspect_takes_one_method(extra: dict[str, str],
                                     rs_client: TestClient,  # noqa: F811
                                     seeded: DevTrustDomain, clock: FrozenClock) -> None:
    token = mint(rs_client, seeded, clock())
    if extra.get("client_assertion") == "PLACEHOLDER":
        extra = {**extra, "client_assertion": seeded.mint_svid(RS, ISSUER, now=clock())}
    svid = seeded.mint_svid(RS, ISSUER, now=clock())
    r = rs_client.post("/introspect", content=form(token=token, **extra),
                       headers={**FORM, "Authorization": f"Bearer {svid}"})
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_request",
                        "error_description": "more than one client authentication method"}
    assert introspected(rs_client, seeded, token, clock())["active"] is True


def test_token_refuses_two_assertions(client: TestClient, seeded: DevTrustDomain,
                                      clock: FrozenClock, engine: Engine) -> None:
    params = token_params(seeded, clock())
    second = seeded.mint_svid(DEV_GATEWAY, ISSUER, now=clock())
    r = post_token(client, params, raw_append=f"&client_assertion={second}")
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_request"
    assert [(row.decision, row.jti) for row in token_records(engine)] == [("denied", None)]


# --- every 401 names a challenge whose error is the body's ------------------------------


def test_token_401s_carry_a_challenge(client: TestClient, seeded: DevTrustDomain,
                                      clock: FrozenClock) -> None:
    now = clock()
    cases = {
        "no-client-auth": token_params(seeded, now, client_assertion=None,
                                       client_assertion_type=None),
        "bad-assertion": token_params(seeded, now, client_assertion="a.b.c"),
        "unknown-assertion-type": token_params(seeded, now, client_assertion_type="urn:x"),
        "assertion-for-another-audience": token_params(
            seeded, now, client_assertion=seeded.mint_svid(DEV_GATEWAY, "https://else", now=now)),
    }
    for name, params in cases.items():
        r = post_token(client, params)
        assert r.json()["error"] == "invalid_client", name
        challenge_matches(r, "Client-Assertion")
    r = post_token(client, token_params(seeded, now, client_assertion=None,
                                        client_assertion_type=None),
                   headers={"Authorization": "Bearer abc"})
    challenge_matches(r, "Bearer")  # RFC 6749 §5.2: the scheme the client used


def test_introspect_401s_carry_a_challenge(rs_client: TestClient,  # noqa: F811
                                           seeded: DevTrustDomain, clock: FrozenClock) -> None:
    now = clock()
    token = mint(rs_client, seeded, now)
    # no credentials at all, and a client assertion that fails
    r = rs_client.post("/introspect", content=form(token=token), headers=FORM)
    challenge_matches(r, "Client-Assertion")
    assert r.json()["error"] == "invalid_client"
    r = rs_client.post("/introspect", content=form(
        token=token, client_assertion_type=JWT_SPIFFE, client_assertion="a.b.c"), headers=FORM)
    challenge_matches(r, "Client-Assertion")
    # a bearer SVID that fails: invalid_token in the body and in the challenge (P15)
    for svid in ("a.b.c", seeded.mint_svid(RS, "https://else", now=now),
                 seeded.mint_svid(DEV_GATEWAY, ISSUER, now=now)):
        r = rs_client.post("/introspect", content=form(token=token),
                           headers={**FORM, "Authorization": f"Bearer {svid}"})
        challenge_matches(r, "Bearer")
        assert r.json()["error"] == "invalid_token"


def test_revoke_401s_carry_a_challenge(rs_client: TestClient,  # noqa: F811
                                       seeded: DevTrustDomain, clock: FrozenClock) -> None:
    token = mint(rs_client, seeded, clock())
    for params in ({"token": token},
                   {"token": token, "client_assertion_type": JWT_SPIFFE,
                    "client_assertion": "a.b.c"}):
        r = rs_client.post("/revoke", content=form(**params), headers=FORM)
        challenge_matches(r, "Client-Assertion")
        assert r.json()["error"] == "invalid_client"
    # a well-formed header of a scheme /revoke does not take: that scheme's challenge
    for scheme, credentials in (("Basic", "Z3c6c2VjcmV0"), ("Bearer", "abc"), ("DPoP", "x")):
        r = rs_client.post("/revoke", content=form(token=token),
                           headers={**FORM, "Authorization": f"{scheme} {credentials}"})
        expected = f'{scheme} realm="writ", ' if scheme == "Basic" else f"{scheme} "
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == expected + 'error="invalid_client"'
        assert r.json()["error"] == "invalid_client"
    assert introspected(rs_client, seeded, token, clock())["active"] is True
