"""TxnTokenVerifier: every refusal from tests/vectors, acceptance vectors, at+jwt, the
claims value, introspection and the public surface of ``jwks``."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jws import JWSRegistry
from token_signer import KeySigner

import jwks
from jwks import errors
from jwks.claims import AT_JWT_TYP, ActorHop, TxnTokenClaims
from jwks.client import IntrospectionCheck, JwksClient, StaticKeys
from jwks.errors import (
    InvalidToken,
    JwksFetchError,
    TokenInactive,
    UnknownKeyId,
    UnsupportedAlgorithm,
)
from jwks.keys import generate_key, public_jwk
from jwks.verifier import TxnTokenVerifier

VECTORS = Path(__file__).parents[1] / "vectors"
REFUSALS = json.loads((VECTORS / "txn_token_refusals.json").read_text())
ACCEPTS = json.loads((VECTORS / "jwks_txn_token_accepts.json").read_text())
NOW = REFUSALS["now"]
ISSUER = REFUSALS["issuer"]
AUDIENCE = REFUSALS["audience"]

KEY = generate_key("ES256")
OTHER_KEY = generate_key("ES256")
SIGNER = KeySigner(KEY, "ES256")
KID = SIGNER.kid


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def patched(base: dict[str, Any], patch: dict[str, Any] | None) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for name, value in (patch or {}).items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def expand(text: str) -> str:
    return text.replace("$KID", KID)


def pad(value: Any) -> Any:
    """``"$PAD_<n>"`` stands for n filler characters."""
    if isinstance(value, str) and value.startswith("$PAD_"):
        return "x" * int(value[5:])
    return value


def build(vector: dict[str, Any]) -> str:
    """The compact token a vector describes."""
    if "raw" in vector:
        return str(vector["raw"])
    header = patched(REFUSALS["valid_header"], vector.get("header"))
    header = {k: expand(v) if isinstance(v, str) else v for k, v in header.items()}
    claims = patched(REFUSALS["valid_claims"], vector.get("claims"))
    claims = {k: pad(v) for k, v in claims.items()}
    h = b64(expand(vector["header_raw"]).encode(vector.get("header_encoding", "utf-8"))) \
        if "header_raw" in vector else b64(json.dumps(header).encode())
    p = b64(vector["payload_raw"].encode(vector.get("payload_encoding", "utf-8"))) \
        if "payload_raw" in vector else b64(json.dumps(claims).encode())
    signing_input = f"{h}.{p}".encode()
    how = vector.get("sign", "key")
    if how == "none":
        return f"{h}.{p}."
    if how == "hmac":
        secret = json.dumps(SIGNER.public_jwk()).encode()
        return f"{h}.{p}.{b64(hmac.new(secret, signing_input, hashlib.sha256).digest())}"
    key = OTHER_KEY if how == "other_key" else KEY
    signature = JWSRegistry.algorithms["ES256"].sign(signing_input, key)
    if how == "tamper":
        p = b64(json.dumps({**claims, "scope": "tickets:admin"}).encode())
    return f"{h}.{p}.{b64(signature)}"


def make_verifier(**kw: Any) -> TxnTokenVerifier:
    keys = kw.pop("keys", StaticKeys({"keys": [SIGNER.public_jwk()]}))
    kw.setdefault("issuer", ISSUER)
    kw.setdefault("audience", AUDIENCE)
    kw.setdefault("clock", lambda: float(NOW))
    return TxnTokenVerifier(keys, **kw)


def sign(claims: dict[str, Any], typ: str = "txntoken+jwt", signer: KeySigner = SIGNER) -> str:
    return signer.sign(claims, typ=typ)


def valid_claims(**patch: Any) -> dict[str, Any]:
    return patched(REFUSALS["valid_claims"], patch)


# -- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize("vector", REFUSALS["vectors"], ids=lambda v: v["id"])
def test_refusal_vector(vector: dict[str, Any]) -> None:
    token = build(vector)
    with pytest.raises(InvalidToken) as info:
        make_verifier().verify(token)
    assert type(info.value) is getattr(errors, vector["error"])
    assert info.value.code == vector["code"]
    # messages never carry the token or any segment of it
    for segment in token.split("."):
        if len(segment) > 8:
            assert segment not in str(info.value)


def test_refusal_vector_ids_are_unique() -> None:
    ids = [v["id"] for v in REFUSALS["vectors"]]
    assert len(ids) == len(set(ids))


def test_non_string_token_is_malformed() -> None:
    with pytest.raises(InvalidToken) as info:
        make_verifier().verify(b"a.b.c")  # type: ignore[arg-type]
    assert info.value.code == "malformed"


def test_txn_token_refused_by_access_token_verifier() -> None:
    with pytest.raises(errors.InvalidTokenType):
        make_verifier(typ=AT_JWT_TYP).verify(sign(valid_claims()))


def test_algorithm_outside_verifier_list_is_refused() -> None:
    with pytest.raises(InvalidToken) as info:
        make_verifier(algorithms=["PS256"]).verify(sign(valid_claims()))
    assert info.value.code == "invalid_alg"


def test_key_of_other_type_under_the_kid_is_bad_signature() -> None:
    rsa = generate_key("RS256")
    jwk = {**public_jwk(rsa, alg="RS256"), "kid": KID}
    with pytest.raises(errors.BadSignature):
        make_verifier(keys=StaticKeys({"keys": [jwk]})).verify(sign(valid_claims()))


def test_key_published_for_another_alg_is_bad_signature() -> None:
    jwk = {**SIGNER.public_jwk(), "alg": "ES384"}
    with pytest.raises(errors.BadSignature):
        make_verifier(keys=StaticKeys({"keys": [jwk]})).verify(sign(valid_claims()))


# -- acceptance -------------------------------------------------------------------------


@pytest.mark.parametrize("vector", ACCEPTS["vectors"], ids=lambda v: v["id"])
def test_accept_vector(vector: dict[str, Any]) -> None:
    claims = make_verifier().verify(build(vector))
    assert claims.txn == REFUSALS["valid_claims"]["txn"]
    if "actors" in vector:
        assert list(claims.actors) == vector["actors"]


def test_claims_value() -> None:
    claims = make_verifier().verify(sign(valid_claims()))
    assert claims.issuer == ISSUER
    assert claims.audience == (AUDIENCE,)
    assert claims.subject == "user:alice@example.com"
    assert claims.scope == frozenset({"tickets:read", "tickets:write"})
    assert claims.jti == REFUSALS["valid_claims"]["jti"]
    assert (claims.issued_at, claims.expires_at) == (NOW - 10, NOW + 290)
    assert claims.requesting_workload == "spiffe://dev.writ.local/gateways/edge"
    assert claims.actor == "spiffe://dev.writ.local/agents/coder"
    assert claims.actor_chain == (ActorHop("spiffe://dev.writ.local/agents/planner", NOW - 50),)
    assert claims.actors == (
        "spiffe://dev.writ.local/agents/planner",
        "spiffe://dev.writ.local/agents/coder",
    )
    assert claims.hop_count == 2
    assert claims.tctx["tool"] == "tickets"
    assert claims.agentic_ctx["chain_metadata"]["txn_path"][0].endswith("/planner")
    assert claims.raw["txn"] == claims.txn


def test_claims_are_read_only() -> None:
    claims = make_verifier().verify(sign(valid_claims()))
    with pytest.raises(AttributeError):
        claims.actor = "spiffe://dev.writ.local/agents/mallory"  # type: ignore[misc]
    with pytest.raises(TypeError):
        claims.tctx["tool"] = "shell"  # type: ignore[index]
    with pytest.raises(TypeError):
        claims.agentic_ctx["prov"]["manifest_hash"] = "x"
    with pytest.raises(TypeError):
        claims.raw["sub"] = "root"  # type: ignore[index]
    assert isinstance(claims.agentic_ctx["chain_metadata"]["txn_path"], tuple)


def test_from_claims_rejects_non_mapping() -> None:
    with pytest.raises(InvalidToken) as info:
        TxnTokenClaims.from_claims([])  # type: ignore[arg-type]
    assert info.value.code == "malformed"


def test_hop_count_of_first_token_is_one() -> None:
    claims = make_verifier().verify(
        sign(valid_claims(act={"sub": "spiffe://dev.writ.local/agents/planner"}, act_chain=None))
    )
    assert claims.hop_count == 1
    assert claims.actors == ("spiffe://dev.writ.local/agents/planner",)


@pytest.mark.parametrize("alg", ["ES256", "ES384", "PS256", "RS256"])
def test_each_signing_algorithm_verifies(alg: str) -> None:
    signer = KeySigner(generate_key(alg), alg)
    verifier = make_verifier(keys=StaticKeys({"keys": [signer.public_jwk()]}))
    assert verifier.verify(sign(valid_claims(), signer=signer)).jti


def test_access_token_with_tool_audience() -> None:
    at = valid_claims(aud="https://tickets.example/api", client_id="gateway", txn=None)
    verifier = make_verifier(typ=AT_JWT_TYP, audience="https://tickets.example/api")
    claims = verifier.verify(sign(at, typ="at+jwt"))
    assert claims.txn is None
    assert claims.audience == ("https://tickets.example/api",)
    with pytest.raises(errors.InvalidAudience):
        make_verifier(typ=AT_JWT_TYP).verify(sign(at, typ="at+jwt"))
    # RFC 9068 §4: "application/at+jwt" is the same type
    header = {"alg": "ES256", "kid": KID, "typ": "application/at+jwt"}
    h, p = b64(json.dumps(header).encode()), b64(json.dumps(at).encode())
    sig = JWSRegistry.algorithms["ES256"].sign(f"{h}.{p}".encode(), KEY)
    assert verifier.verify(f"{h}.{p}.{b64(sig)}").subject == at["sub"]


def test_issuer_check_can_be_left_to_the_key_source() -> None:
    claims = make_verifier(issuer=None).verify(sign(valid_claims(iss="https://other.example")))
    assert claims.issuer == "https://other.example"


def test_zero_leeway() -> None:
    verifier = make_verifier(leeway_s=0)
    with pytest.raises(errors.TokenExpired):
        verifier.verify(sign(valid_claims(iat=NOW - 300, exp=NOW)))
    assert verifier.verify(sign(valid_claims(iat=NOW - 300, exp=NOW + 1))).jti


def test_verifier_with_jwks_client() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(200, json={"keys": [SIGNER.public_jwk()]})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    client = JwksClient("https://writ.dev.writ.local/jwks.json", http=http, clock=lambda: NOW)
    verifier = make_verifier(keys=client)
    for _ in range(3):
        assert verifier.verify(sign(valid_claims())).actor
    assert calls == ["/jwks.json"]


# -- constructor ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"leeway_s": -1}, ValueError),
        ({"leeway_s": 301}, ValueError),
        ({"leeway_s": True}, ValueError),
        ({"max_token_bytes": 10}, ValueError),
        ({"audience": ""}, ValueError),
        ({"issuer": ""}, ValueError),
        ({"typ": ""}, ValueError),
        ({"algorithms": []}, UnsupportedAlgorithm),
        ({"algorithms": ["ES256", "none"]}, UnsupportedAlgorithm),
        ({"algorithms": ["HS256"]}, UnsupportedAlgorithm),
        ({"algorithms": ["hs512"]}, UnsupportedAlgorithm),
    ],
    ids=lambda v: str(v),
)
def test_constructor_refuses(kw: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        make_verifier(**kw)


def test_leeway_bounds_are_inclusive() -> None:
    make_verifier(leeway_s=0)
    make_verifier(leeway_s=300)


# -- introspection ----------------------------------------------------------------------


class Introspection:
    """A fake RFC 7662 endpoint."""

    def __init__(self, answer: Any = None, status: int = 200) -> None:
        self.answer = {"active": True} if answer is None else answer
        self.status = status
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, json=self.answer)


def introspection(fake: Any, now: list[float], **kw: Any) -> IntrospectionCheck:
    http = httpx.Client(transport=httpx.MockTransport(fake))
    kw.setdefault("client_id", "tickets-rs")
    kw.setdefault("client_secret", "s3cret")
    return IntrospectionCheck(
        "https://writ.dev.writ.local/introspect", http=http, clock=lambda: now[0], **kw
    )


def test_introspection_active_is_cached() -> None:
    fake, now = Introspection(), [float(NOW)]
    verifier = make_verifier(introspection=introspection(fake, now))
    token = sign(valid_claims())
    verifier.verify(token)
    verifier.verify(token)
    assert len(fake.requests) == 1
    request = fake.requests[0]
    assert request.method == "POST"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(
        b"tickets-rs:s3cret"
    ).decode()
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert httpx.QueryParams(request.content.decode())["token"] == token
    now[0] += 5
    verifier.verify(token)
    assert len(fake.requests) == 2


def test_introspection_inactive_raises() -> None:
    fake, now = Introspection({"active": False}), [float(NOW)]
    verifier = make_verifier(introspection=introspection(fake, now))
    token = sign(valid_claims())
    for _ in range(2):
        with pytest.raises(TokenInactive) as info:
            verifier.verify(token)
        assert info.value.code == "inactive"
        assert token not in str(info.value)
    assert len(fake.requests) == 1


def test_introspection_not_asked_for_an_invalid_token() -> None:
    fake, now = Introspection(), [float(NOW)]
    verifier = make_verifier(introspection=introspection(fake, now))
    with pytest.raises(errors.TokenExpired):
        verifier.verify(sign(valid_claims(iat=NOW - 600, exp=NOW - 300)))
    assert fake.requests == []


@pytest.mark.parametrize(
    "fake",
    [
        Introspection(status=500),
        Introspection(status=401),
        Introspection({"active": "true"}),
        Introspection({"scope": "x"}),
        Introspection([True]),
    ],
    ids=["http-500", "http-401", "active-string", "active-missing", "not-an-object"],
)
def test_introspection_fails_closed(fake: Introspection) -> None:
    verifier = make_verifier(introspection=introspection(fake, [float(NOW)]))
    with pytest.raises(JwksFetchError) as info:
        verifier.verify(sign(valid_claims()))
    assert info.value.code == "jwks_unavailable"


def test_introspection_unreachable_fails_closed() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    verifier = make_verifier(introspection=introspection(refuse, [float(NOW)]))
    with pytest.raises(JwksFetchError):
        verifier.verify(sign(valid_claims()))


def test_introspection_with_caller_auth_and_no_cache() -> None:
    class Bearer(httpx.Auth):
        def auth_flow(self, request: httpx.Request) -> Any:
            request.headers["Authorization"] = "Bearer rs-token"
            yield request

    fake, now = Introspection(), [float(NOW)]
    check = introspection(fake, now, client_id=None, client_secret=None, auth=Bearer(),
                          cache_ttl_s=0)
    token = sign(valid_claims())
    check.check(token)
    check.check(token)
    assert [r.headers["authorization"] for r in fake.requests] == ["Bearer rs-token"] * 2


def test_introspection_cache_is_bounded() -> None:
    fake, now = Introspection(), [float(NOW)]
    check = introspection(fake, now, max_cache_entries=2)
    for t in ("a.b.c", "d.e.f", "g.h.i", "a.b.c"):
        check.check(t)
    assert len(fake.requests) == 4


@pytest.mark.parametrize(
    "kw",
    [
        {"cache_ttl_s": 31},
        {"cache_ttl_s": -1},
        {"client_id": None, "client_secret": None},
        {"auth": httpx.BasicAuth("a", "b")},
    ],
    ids=["ttl-above-30", "ttl-negative", "no-credentials", "credentials-and-auth"],
)
def test_introspection_constructor_refuses(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        introspection(Introspection(), [0.0], **kw)


def test_introspection_repr_has_no_secret() -> None:
    check = introspection(Introspection(), [0.0])
    assert "s3cret" not in repr(check)


# -- public surface ---------------------------------------------------------------------


def test_public_api_is_pinned() -> None:
    assert jwks.__all__ == [
        "AT_JWT_TYP",
        "SVID_ALGORITHMS",
        "TOKEN_ALGORITHMS",
        "TOKEN_TYPE_ACCESS_TOKEN",
        "TOKEN_TYPE_JWT",
        "TOKEN_TYPE_TXN_TOKEN",
        "TXN_TOKEN_TYP",
        "ActorHop",
        "BadSignature",
        "ChainRequirementFailed",
        "IntrospectionCheck",
        "InvalidAudience",
        "InvalidPattern",
        "InvalidToken",
        "InvalidTokenType",
        "JwksClient",
        "JwksError",
        "JwksFetchError",
        "KeySource",
        "MissingHeader",
        "SpiffePattern",
        "StaticKeys",
        "TokenExpired",
        "TokenInactive",
        "TxnTokenClaims",
        "TxnTokenVerifier",
        "UnknownKeyId",
        "UnsupportedAlgorithm",
        "acted_earlier",
        "check_act_agrees",
        "matches_any",
        "nested_act",
        "principal",
        "require_current_actor",
        "require_prior_actor",
    ]
    assert all(hasattr(jwks, name) for name in jwks.__all__)


def test_token_type_constants() -> None:
    assert jwks.TXN_TOKEN_TYP == "txntoken+jwt"
    assert jwks.AT_JWT_TYP == "at+jwt"
    assert jwks.TOKEN_TYPE_TXN_TOKEN == "urn:ietf:params:oauth:token-type:txn_token"
    assert jwks.TOKEN_TYPE_JWT == "urn:ietf:params:oauth:token-type:jwt"
    assert jwks.TOKEN_TYPE_ACCESS_TOKEN == "urn:ietf:params:oauth:token-type:access_token"


def test_library_tier_imports_no_web_framework(tmp_path: Path) -> None:
    code = (
        "import sys, jwks; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('fastapi', 'starlette', 'sqlmodel', 'sqlalchemy', 'pydantic_settings', "
        "'registry', 'broker') or m.startswith('broker.signing') or m == 'jwks.fastapi']; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        # cwd outside the checkout: the installed jwks (the wheel, in .ci/run) is the one checked
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
        text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_unknown_kid_is_an_invalid_token() -> None:
    assert issubclass(UnknownKeyId, InvalidToken)
