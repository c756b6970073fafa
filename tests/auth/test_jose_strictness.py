"""JOSE and JSON strictness (docs/security.md#jose-and-json-strictness) in the shared layer
(jwks.jose) and in each token path that uses it: JWT-SVIDs and their cache, users' access
tokens, RFC 7523 client assertions. The /token wire answers are in
tests/vectors/token_refusals.json."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

import httpx
import pytest
from joserfc.jws import JWSRegistry
from pydantic import ValidationError

from broker.auth.svid import SvidError, SvidValidator
from broker.auth.user_tokens import UserTokenError, UserTokenValidator
from broker.cli.dev import DevTrustDomain
from broker.settings import Settings
from jwks.jose import (
    MAX_NUMERIC_DATE,
    JoseRefused,
    TimeClaims,
    is_numeric_date,
    json_object,
    loads_strict_json,
)
from registry.issuers import IssuerDiscovery, IssuerView
from tests.conftest import FrozenClock
from tests.forge import b64, forge_raw
from tests.idp import TestIssuer

AUD = "http://writ.test"
AGENT = "spiffe://dev.writ.local/agents/demo/assistant"

# -- the shared layer --------------------------------------------------------------------

NOT_UTF8 = [
    ('{"a":1}'.encode("utf-16"), "utf-16 with BOM"),
    ('{"a":1}'.encode("utf-16-le"), "utf-16-le"),
    ('{"a":1}'.encode("utf-16-be"), "utf-16-be"),
    ('{"a":1}'.encode("utf-32"), "utf-32"),
    (b'\xef\xbb\xbf{"a":1}', "utf-8 BOM"),
    ('{"a":"café"}'.encode("latin-1"), "latin-1"),
    (b'{"a":"\xc0\xaf"}', "overlong utf-8"),
    (b'{"a":"\xed\xa0\x80"}', "utf-8 encoded surrogate"),
]


@pytest.mark.parametrize(("data", "label"), NOT_UTF8, ids=[x[1] for x in NOT_UTF8])
def test_json_that_is_not_utf8_is_refused(data: bytes, label: str) -> None:
    with pytest.raises(ValueError):
        loads_strict_json(data)
    with pytest.raises(JoseRefused) as info:
        json_object(b64(data), "payload")
    assert info.value.code == "malformed"


DUPLICATES = [
    '{"alg":"none","alg":"ES256"}',
    '{"sub":"a","sub":"a"}',
    '{"sub":"a","s\\u0075b":"b"}',
    '{"x":{"y":1,"y":2}}',
    '{"x":[{"k":1,"k":1}]}',
    '{"aud":["a"],"aud":"b"}',
]


@pytest.mark.parametrize("text", DUPLICATES)
def test_duplicate_members_are_refused_at_any_depth(text: str) -> None:
    with pytest.raises(JoseRefused) as info:
        json_object(b64(text.encode()), "claims")
    assert info.value.code == "malformed"
    assert "sub" not in str(info.value) and "alg" not in str(info.value)


@pytest.mark.parametrize("number", ["1e309", "-1e309", "NaN", "Infinity", "-Infinity",
                                    "1" + "0" * 5000])
def test_numbers_outside_json_are_refused(number: str) -> None:
    with pytest.raises(JoseRefused):
        json_object(b64(f'{{"exp":{number}}}'.encode()), "claims")


@pytest.mark.parametrize("segment", ["eyJhIjoxfQ==", "eyJhIjoxfQ=", " eyJhIjoxfQ", "eyJhIjoxfR",
                                     "eyJhI+oxfQ", "e", "eyJhIjoxfQ\n"])
def test_base64url_is_canonical_and_unpadded(segment: str) -> None:
    with pytest.raises(JoseRefused):
        json_object(segment, "header")
    assert json_object("eyJhIjoxfQ", "header") == {"a": 1}


@pytest.mark.parametrize(("value", "ok"), [
    (0, True), (1750000000, True), (1750000000.5, True), (MAX_NUMERIC_DATE, True),
    (MAX_NUMERIC_DATE + 1, False), (-1, False), (-0.5, False), (True, False), (False, False),
    (float("inf"), False), (float("nan"), False), (1e300, False), ("1750000000", False),
    (None, False), ([1], False), (10**40, False),
])
def test_numeric_date_bounds(value: Any, ok: bool) -> None:
    assert is_numeric_date(value) is ok
    assert is_numeric_date(value, integer=True) is (ok and isinstance(value, int))


def test_time_checks_run_in_one_order_whatever_the_member_order() -> None:
    now = 1_750_000_000
    # expired and issued in the future: the expiry is named first, in both orders
    a = {"exp": now - 100, "iat": now + 100}
    b = {"iat": now + 100, "exp": now - 100}
    for claims in (a, b):
        with pytest.raises(JoseRefused) as info:
            TimeClaims(now, 0).check(claims)
        assert info.value.code == "expired"


@pytest.mark.parametrize(("claims", "code"), [
    ({"iat": 1_749_999_990, "exp": 1_750_003_591}, "lifetime_too_long"),
    ({"exp": 1_750_000_000 + 3601}, "lifetime_too_long"),
    ({"iat": 1_750_000_000, "exp": 1_750_000_000 + 3600}, None),
    ({"exp": 1_750_000_000 + 3600}, None),
    ({"iat": 1_749_990_000, "exp": 1_750_000_060}, "lifetime_too_long"),
])
def test_lifetime_bound(claims: dict[str, Any], code: str | None) -> None:
    checks = TimeClaims(1_750_000_000, 0, max_lifetime_s=3600)
    if code is None:
        assert checks.check(claims).exp == claims["exp"]
    else:
        with pytest.raises(JoseRefused) as info:
            checks.check(claims)
        assert info.value.code == code


# -- JWT-SVIDs and their cache -----------------------------------------------------------


class Bundles:
    def __init__(self, td: DevTrustDomain) -> None:
        self.version = 1
        self._keys = MappingProxyType({td.kid: td._key})

    def keys_for(self, trust_domain: str) -> Any:
        return self._keys if trust_domain == "dev.writ.local" else None


def _svid_payload(now: int, **patch: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": AGENT, "aud": AUD, "iat": now, "exp": now + 300}
    claims.update(patch)
    return claims


HOSTILE_SVIDS: list[tuple[str, str, str]] = [
    # (id, payload template with $NOW, expected reason)
    ("utf16", "utf-16", "malformed"),
    ("bom", "utf-8-bom", "malformed"),
    ("dup-sub", '{"sub":"spiffe://dev.writ.local/agents/x","sub":"$AGENT","aud":"$AUD",'
                '"iat":$NOW,"exp":$EXP}', "malformed"),
    ("exp-inf", '{"sub":"$AGENT","aud":"$AUD","iat":$NOW,"exp":1e309}', "malformed"),
    ("exp-1e300", '{"sub":"$AGENT","aud":"$AUD","iat":$NOW,"exp":1e300}', "invalid_exp"),
    ("exp-negative", '{"sub":"$AGENT","aud":"$AUD","iat":$NOW,"exp":-1}', "invalid_exp"),
    ("exp-bool", '{"sub":"$AGENT","aud":"$AUD","iat":$NOW,"exp":true}', "invalid_exp"),
    ("exp-30-days", '{"sub":"$AGENT","aud":"$AUD","iat":$NOW,"exp":$MONTH}', "lifetime_too_long"),
    ("two-audiences", '{"sub":"$AGENT","aud":["$AUD","https://rs.example"],"iat":$NOW,'
                      '"exp":$EXP}', "too_many_audiences"),
    ("sub-newline", '{"sub":"$AGENT\\n","aud":"$AUD","iat":$NOW,"exp":$EXP}', "bad_sub"),
]


def _hostile(td: DevTrustDomain, template: str, now: int) -> str:
    valid = json.dumps(_svid_payload(now))
    if template in ("utf-16", "utf-8-bom"):
        data = valid.encode("utf-16") if template == "utf-16" else b"\xef\xbb\xbf" + valid.encode()
    else:
        text = (template.replace("$AGENT", AGENT).replace("$AUD", AUD)
                .replace("$NOW", str(now)).replace("$EXP", str(now + 300))
                .replace("$MONTH", str(now + 30 * 86400)))
        data = text.encode()
    header = json.dumps({"alg": "ES256", "kid": td.kid, "typ": "JWT"}).encode()
    return forge_raw(header, data, td._key)


@pytest.mark.parametrize(("name", "template", "reason"), HOSTILE_SVIDS,
                         ids=[h[0] for h in HOSTILE_SVIDS])
def test_svid_cache_never_holds_a_hostile_token(name: str, template: str, reason: str,
                                                clock: FrozenClock) -> None:
    td = DevTrustDomain.generate()
    v = SvidValidator(Bundles(td), clock=clock)
    token = _hostile(td, template, int(clock()))
    for _ in range(2):  # refused the second time too: nothing was cached
        with pytest.raises(SvidError) as info:
            v.validate(token, (AUD,))
        assert info.value.reason == reason
        assert len(v._cache) == 0
    good = td.mint_svid(AGENT, AUD, now=clock())
    assert v.validate(good, (AUD,)).spiffe_id == AGENT
    assert len(v._cache) == 1


def test_svid_bounds_are_settings(clock: FrozenClock) -> None:
    td = DevTrustDomain.generate()
    two = td.mint_svid(AGENT, [AUD, "https://rs.example"], now=clock())
    day = td.mint_svid(AGENT, AUD, now=clock(), ttl_s=86400)
    strict = SvidValidator(Bundles(td), clock=clock)
    for token, reason in ((two, "too_many_audiences"), (day, "lifetime_too_long")):
        with pytest.raises(SvidError) as info:
            strict.validate(token, (AUD,))
        assert info.value.reason == reason
    lenient = SvidValidator(Bundles(td), max_audiences=2, max_lifetime_s=86400, clock=clock)
    assert lenient.validate(two, (AUD,)).audience == (AUD, "https://rs.example")
    assert lenient.validate(day, (AUD,)).expires_at == int(clock()) + 86400


def test_settings_defaults_and_bounds() -> None:
    s = Settings()
    assert (s.svid_max_lifetime_s, s.svid_max_audiences) == (3600, 1)
    for bad in ({"svid_max_lifetime_s": 0}, {"svid_max_lifetime_s": 10**6},
                {"svid_max_audiences": 0}, {"svid_max_audiences": 1000}):
        with pytest.raises(ValidationError):
            Settings(**bad)  # type: ignore[arg-type]


# -- users' access tokens ------------------------------------------------------------------


def _user_token(idp: TestIssuer, payload: bytes) -> str:
    header = json.dumps({"alg": "ES256", "kid": idp.kid, "typ": "at+jwt"}).encode()
    signing_input = b64(header) + "." + b64(payload)
    signature = JWSRegistry().get_alg("ES256").sign(signing_input.encode(), idp.key)
    return f"{signing_input}.{b64(signature)}"


def _user_claims(idp: TestIssuer, now: int) -> str:
    return json.dumps(idp.claims("alice", now=now))


USER_CASES = [
    ("utf16", lambda c: c.encode("utf-16"), "malformed"),
    ("utf16le", lambda c: c.encode("utf-16-le"), "malformed"),
    ("bom", lambda c: b"\xef\xbb\xbf" + c.encode(), "malformed"),
    ("dup-sub", lambda c: c.replace('"sub": "alice"', '"sub": "bob", "sub": "alice"').encode(),
     "malformed"),
    ("dup-nested", lambda c: (c[:-1] + ', "may_act": {"sub": "a", "sub": "b"}}').encode(),
     "malformed"),
    ("exp-inf", lambda c: (c[:-1] + ', "nbf": 1e309}').encode(), "malformed"),
    ("exp-nan", lambda c: (c[:-1] + ', "nbf": NaN}').encode(), "malformed"),
    ("nbf-negative", lambda c: (c[:-1] + ', "nbf": -1}').encode(), "invalid_nbf"),
    ("iat-string", lambda c: (c[:-1] + ', "iat": "x"}').replace('"iat": ', '"_iat": ', 1)
     .encode(), "invalid_iat"),
]


@pytest.mark.parametrize(("name", "make", "reason"), USER_CASES, ids=[c[0] for c in USER_CASES])
def test_user_token_strictness(name: str, make: Any, reason: str, clock: FrozenClock) -> None:
    idp = TestIssuer("https://idp.example")
    view = IssuerView(issuer=idp.issuer, discovery=IssuerDiscovery.oidc, jwks_uri=None,
                      audiences=frozenset({idp.audience}), algorithms=("ES256",))
    users = UserTokenValidator(http=httpx.Client(transport=idp.transport()), prefetch=False,
                               clock=clock)
    try:
        token = _user_token(idp, make(_user_claims(idp, int(clock()))))
        with pytest.raises(UserTokenError) as info:
            users.validate(token, {idp.issuer: view})
        assert info.value.reason == reason
        assert len(users._cache) == 0
        good = _user_token(idp, _user_claims(idp, int(clock())).encode())
        assert users.validate(good, {idp.issuer: view}).subject == "alice"
    finally:
        users.close()


# -- RFC 7523 private_key_jwt client assertions at /token -----------------------------------

PK_GW = "spiffe://dev.writ.local/gateway/pkjwt"
PK_VALID = '"iss":"$GW","sub":"$GW","aud":"$AUD","jti":"$JTI","iat":$NOW'
PRIVATE_KEY_JWT_CASES = [
    ("utf16", "{" + PK_VALID + ',"exp":$EXP}', "utf-16", "malformed"),
    ("utf32", "{" + PK_VALID + ',"exp":$EXP}', "utf-32", "malformed"),
    ("bom", "{" + PK_VALID + ',"exp":$EXP}', "utf-8-bom", "malformed"),
    ("duplicate-sub", '{"sub":"spiffe://dev.writ.local/gateway/demo",' + PK_VALID
     + ',"exp":$EXP}', "utf-8", "malformed"),
    ("duplicate-exp", "{" + PK_VALID + ',"exp":$EXP,"exp":$EXP}', "utf-8", "malformed"),
    ("exp-1e309", "{" + PK_VALID + ',"exp":1e309}', "utf-8", "malformed"),
    ("exp-nan", "{" + PK_VALID + ',"exp":NaN}', "utf-8", "malformed"),
    ("exp-negative", "{" + PK_VALID + ',"exp":-1}', "utf-8", "expired"),
    ("exp-string", "{" + PK_VALID + ',"exp":"$EXP"}', "utf-8", "expired"),
    ("nbf-bool", "{" + PK_VALID + ',"exp":$EXP,"nbf":true}', "utf-8", "invalid_nbf"),
]


@pytest.mark.parametrize(("name", "template", "encoding", "reason"), PRIVATE_KEY_JWT_CASES,
                         ids=[c[0] for c in PRIVATE_KEY_JWT_CASES])
def test_private_key_jwt_strictness(name: str, template: str, encoding: str, reason: str,
                                    client: Any, seeded: DevTrustDomain, engine: Any,
                                    clock: FrozenClock) -> None:
    import uuid

    from joserfc.jwk import ECKey
    from sqlmodel import Session

    from jwks.keys import public_jwk
    from registry import store
    from registry.models import GatewayAuthMethod, GatewayCreate
    from tests.conftest import ISSUER
    from tests.forge import raw_json
    from tests.grants.test_token_endpoint import audit_rows, post_token, token_params

    key = ECKey.generate_key("P-256", private=True)
    with Session(engine) as s:
        store.create_gateway(s, GatewayCreate(
            client_id=PK_GW, auth_method=GatewayAuthMethod.private_key_jwt,
            agent_namespaces=["spiffe://dev.writ.local/agents/**"],
            jwks={"keys": [public_jwk(key, alg="ES256")]}), now=clock())
        s.commit()
    client.app.state.broker.snapshots.refresh()
    now = int(clock())
    text = (template.replace("$GW", PK_GW).replace("$AUD", f"{ISSUER}/token")
            .replace("$JTI", uuid.uuid4().hex).replace("$NOW", str(now))
            .replace("$EXP", str(now + 60)))
    header = json.dumps({"alg": "ES256", "kid": key.thumbprint()}).encode()
    assertion = forge_raw(header, raw_json(text, {}, encoding), key)
    params = token_params(seeded, clock(), client_assertion_type=(
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"), client_assertion=assertion)
    r = post_token(client, params)
    assert r.status_code == 401
    assert r.json() == {"error": "invalid_client",
                        "error_description": "client authentication failed"}
    rows = [row for row in audit_rows(engine) if row.kind == "token"]
    assert [(row.decision, row.reason) for row in rows] == [
        ("denied", f"client_assertion_{reason}")]
    assert rows[0].jti is None
    assert post_token(client, token_params(seeded, clock())).status_code == 200
