"""JwksClient against httpx.MockTransport: caching, refetch on an unknown kid, the rate
limit, RFC 8414 discovery, size cap, refused key material and failures."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from token_signer import KeySigner

from jwks.client import JwksClient, StaticKeys, metadata_url, parse_jwks
from jwks.errors import JwksFetchError, UnknownKeyId
from jwks.keys import generate_key, public_jwk

ISSUER = "https://writ.dev.writ.local"
JWKS_URI = "https://writ.dev.writ.local/.well-known/jwks.json"
A = KeySigner(generate_key("ES256"), "ES256")
B = KeySigner(generate_key("ES256"), "ES256")


class Server:
    """A fake issuer: metadata and a JWKS that tests can rotate."""

    def __init__(self, keys: list[dict[str, Any]] | None = None) -> None:
        self.keys = [A.public_jwk()] if keys is None else keys
        self.metadata: dict[str, Any] = {"issuer": ISSUER, "jwks_uri": JWKS_URI}
        self.status = 200
        self.headers: dict[str, str] = {}
        self.body: bytes | None = None
        self.paths: list[str] = []
        self.delay_s = 0.0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if self.delay_s:
            time.sleep(self.delay_s)
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json=self.metadata)
        if self.body is not None:
            return httpx.Response(self.status, content=self.body, headers=self.headers)
        return httpx.Response(self.status, json={"keys": self.keys}, headers=self.headers)


class Clock:
    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def client(server: Callable[[httpx.Request], httpx.Response], clock: Clock | None = None,
           jwks_uri: str | None = JWKS_URI, **kw: Any) -> JwksClient:
    http = httpx.Client(transport=httpx.MockTransport(server))
    return JwksClient(jwks_uri, http=http, clock=clock or Clock(), **kw)


def test_keys_are_cached_until_ttl() -> None:
    server, clock = Server(), Clock()
    c = client(server, clock)
    assert c.get_key(A.kid).thumbprint() == A.kid
    clock.now += 299
    c.get_key(A.kid)
    assert server.paths == ["/.well-known/jwks.json"]
    clock.now += 1
    c.get_key(A.kid)
    assert len(server.paths) == 2


def test_unknown_kid_refetches_and_finds_a_rotated_key() -> None:
    server, clock = Server(), Clock()
    c = client(server, clock)
    c.get_key(A.kid)
    server.keys = [A.public_jwk(), B.public_jwk()]
    clock.now += 11
    assert c.get_key(B.kid).thumbprint() == B.kid
    assert len(server.paths) == 2


def test_unknown_kid_refetch_is_rate_limited() -> None:
    server, clock = Server(), Clock()
    c = client(server, clock)
    c.get_key(A.kid)
    clock.now += 11
    for _ in range(5):
        with pytest.raises(UnknownKeyId) as info:
            c.get_key("no-such-kid")
        assert info.value.code == "unknown_kid"
    assert len(server.paths) == 2  # the first miss refetched; the rest were refused locally
    clock.now += 9.9
    with pytest.raises(UnknownKeyId):
        c.get_key("no-such-kid")
    assert len(server.paths) == 2
    clock.now += 0.1
    server.keys = [A.public_jwk(), B.public_jwk()]
    c.get_key(B.kid)
    assert len(server.paths) == 3


def test_unknown_kid_right_after_first_fetch_is_not_refetched() -> None:
    server = Server()
    c = client(server)
    c.get_key(A.kid)
    with pytest.raises(UnknownKeyId):
        c.get_key(B.kid)
    assert len(server.paths) == 1


@pytest.mark.parametrize("kid", ["", None, 5], ids=["empty", "none", "number"])
def test_bad_kid_is_unknown_without_a_fetch(kid: Any) -> None:
    server = Server()
    with pytest.raises(UnknownKeyId):
        client(server).get_key(kid)
    assert server.paths == []


def test_discovery_from_issuer() -> None:
    server = Server()
    c = client(server, jwks_uri=None, issuer=ISSUER)
    assert c.jwks_uri is None
    c.get_key(A.kid)
    assert server.paths == ["/.well-known/oauth-authorization-server", "/.well-known/jwks.json"]
    assert c.jwks_uri == JWKS_URI
    server.keys = [B.public_jwk()]
    c.refresh()
    c.get_key(B.kid)
    assert server.paths[2:] == ["/.well-known/jwks.json"]  # metadata is not fetched again


@pytest.mark.parametrize(
    "metadata",
    [
        {"issuer": "https://evil.example", "jwks_uri": JWKS_URI},
        {"issuer": ISSUER + "/", "jwks_uri": JWKS_URI},
        {"jwks_uri": JWKS_URI},
        {"issuer": ISSUER},
        {"issuer": ISSUER, "jwks_uri": "file:///etc/passwd"},
        {"issuer": ISSUER, "jwks_uri": 7},
    ],
    ids=["issuer-mismatch", "issuer-trailing-slash", "issuer-missing", "jwks-uri-missing",
         "jwks-uri-file-scheme", "jwks-uri-number"],
)
def test_discovery_refusals(metadata: dict[str, Any]) -> None:
    server = Server()
    server.metadata = metadata
    with pytest.raises(JwksFetchError) as info:
        client(server, jwks_uri=None, issuer=ISSUER).get_key(A.kid)
    assert info.value.code == "jwks_unavailable"
    assert "/.well-known/jwks.json" not in server.paths


@pytest.mark.parametrize(
    ("issuer", "url"),
    [
        ("https://writ.example", "https://writ.example/.well-known/oauth-authorization-server"),
        ("https://writ.example/", "https://writ.example/.well-known/oauth-authorization-server"),
        ("https://writ.example/tenant/a",
         "https://writ.example/.well-known/oauth-authorization-server/tenant/a"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/.well-known/oauth-authorization-server"),
    ],
)
def test_metadata_url_follows_rfc8414(issuer: str, url: str) -> None:
    assert metadata_url(issuer) == url


def test_jwks_over_size_cap_is_refused() -> None:
    server = Server()
    server.body = json.dumps({"keys": [A.public_jwk()], "pad": "x" * 5000}).encode()
    with pytest.raises(JwksFetchError) as info:
        client(server, max_bytes=4096).get_key(A.kid)
    assert "exceeds" in str(info.value)


def test_jwks_with_advertised_length_over_cap_is_refused() -> None:
    def lying(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": "999999"},
                              stream=httpx.ByteStream(b"{}"))

    with pytest.raises(JwksFetchError):
        client(lying, max_bytes=4096).get_key(A.kid)


def private_jwk() -> dict[str, Any]:
    key = generate_key("ES256")
    return {**key.as_dict(private=True), "kid": key.thumbprint(), "use": "sig"}


@pytest.mark.parametrize(
    "keys",
    [
        [A.public_jwk(), private_jwk()],
        [A.public_jwk(), {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}],
        [{**A.public_jwk(), "d": "AAAA"}],
        [A.public_jwk(), A.public_jwk()],
        [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "broken"}],
        [{"kty": "oct", "kid": "oct-without-k"}],
        ["not-a-jwk"],
    ],
    ids=["private-ec-key", "symmetric-key", "public-key-with-d", "duplicate-kid",
         "malformed-ec-key", "unsupported-kty", "member-not-object"],
)
def test_refused_key_material_fails_the_whole_set(keys: list[Any]) -> None:
    server = Server(keys)
    with pytest.raises(JwksFetchError) as info:
        client(server).get_key(A.kid)
    assert info.value.code == "jwks_unavailable"


def test_keys_not_for_signing_or_without_kid_are_skipped() -> None:
    enc = {**B.public_jwk(), "use": "enc"}
    no_kid = {k: v for k, v in public_jwk(generate_key("ES256"), alg="ES256").items()
              if k != "kid"}
    c = client(Server([A.public_jwk(), enc, no_kid]))
    c.get_key(A.kid)
    with pytest.raises(UnknownKeyId):
        c.get_key(B.kid)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b'{"keys": []}'),
        (404, b"not found"),
        (302, b""),
        (200, b"<html>"),
        (200, b'{"keys": {}}'),
        (200, b'["keys"]'),
        (200, b'{"keys": [], "keys": []}'),
        (200, b"[" * 5000 + b"]" * 5000),
    ],
    ids=["http-500", "http-404", "redirect-not-followed", "not-json", "keys-not-array",
         "not-an-object", "duplicate-member", "deeply-nested"],
)
def test_bad_responses_raise_fetch_error(status: int, body: bytes) -> None:
    server = Server()
    server.status, server.body = status, body
    server.headers = {"Location": "https://evil.example/jwks.json"} if status == 302 else {}
    with pytest.raises(JwksFetchError) as info:
        client(server, max_bytes=16384).get_key(A.kid)
    assert info.value.code == "jwks_unavailable"
    assert server.paths == ["/.well-known/jwks.json"]


def test_transport_error_raises_fetch_error() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    with pytest.raises(JwksFetchError):
        client(down).get_key(A.kid)


def test_failed_fetch_is_not_retried_within_the_interval() -> None:
    server, clock = Server(), Clock()
    server.status = 500
    c = client(server, clock)
    for _ in range(3):
        with pytest.raises(JwksFetchError):
            c.get_key(A.kid)
    assert len(server.paths) == 1
    clock.now += 10
    server.status = 200
    c.get_key(A.kid)
    assert len(server.paths) == 2


def test_failed_refresh_after_expiry_fails_closed() -> None:
    server, clock = Server(), Clock()
    c = client(server, clock)
    c.get_key(A.kid)
    clock.now += 300
    server.status = 500
    with pytest.raises(JwksFetchError):
        c.get_key(A.kid)


def test_failed_refetch_for_unknown_kid_keeps_the_fresh_set() -> None:
    server, clock = Server(), Clock()
    c = client(server, clock)
    c.get_key(A.kid)
    clock.now += 10
    server.status = 500
    with pytest.raises(JwksFetchError):
        c.get_key(B.kid)
    assert c.get_key(A.kid).thumbprint() == A.kid


@pytest.mark.parametrize(
    ("cache_control", "ttl"),
    [
        ("max-age=60", 60),
        ("public, max-age=120, must-revalidate", 120),
        ("max-age=999999", 300),
        ("max-age=0", 10),
        ("no-store", 10),
        ("no-cache", 10),
        ("max-age=abc", 300),
        ("", 300),
    ],
)
def test_cache_control_max_age_within_bounds(cache_control: str, ttl: int) -> None:
    server, clock = Server(), Clock()
    server.headers = {"Cache-Control": cache_control}
    c = client(server, clock)
    c.get_key(A.kid)
    clock.now += ttl - 0.5
    c.get_key(A.kid)
    assert len(server.paths) == 1
    clock.now += 0.5
    c.get_key(A.kid)
    assert len(server.paths) == 2


def test_concurrent_cold_start_fetches_once() -> None:
    server = Server()
    server.delay_s = 0.05
    c = client(server, Clock())
    results: list[str] = []

    def worker() -> None:
        results.append(c.get_key(A.kid).thumbprint())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [A.kid] * 16
    assert len(server.paths) == 1


@pytest.mark.parametrize(
    "kw",
    [
        {"jwks_uri": None},
        {"jwks_uri": "ftp://writ.example/jwks"},
        {"jwks_uri": None, "issuer": "writ.example"},
        {"cache_ttl_s": 5},
        {"cache_ttl_s": 86401},
        {"min_refetch_interval_s": -1},
        {"max_bytes": 10},
    ],
    ids=["nothing-to-fetch", "ftp-scheme", "issuer-not-url", "ttl-below-refetch-interval",
         "ttl-above-a-day", "negative-interval", "tiny-cap"],
)
def test_constructor_refuses(kw: dict[str, Any]) -> None:
    kw.setdefault("jwks_uri", JWKS_URI)
    with pytest.raises(ValueError):
        JwksClient(kw.pop("jwks_uri"), **kw)


def test_owned_http_client_is_closed() -> None:
    with JwksClient(JWKS_URI) as c:
        assert "JwksClient(" in repr(c)
    assert c._http.is_closed


def test_static_keys() -> None:
    keys = StaticKeys({"keys": [A.public_jwk()]})
    assert keys.get_key(A.kid).thumbprint() == A.kid
    with pytest.raises(UnknownKeyId):
        keys.get_key(B.kid)
    with pytest.raises(JwksFetchError):
        StaticKeys({"keys": [private_jwk()]})


def test_parse_jwks_returns_keys_by_kid() -> None:
    assert set(parse_jwks({"keys": [A.public_jwk(), B.public_jwk()]})) == {A.kid, B.kid}
