"""SPIFFE trust bundles: parsing vectors, the in-memory store, and its three sources.

The bundle endpoint is a real HTTPS server on loopback (tests/tls.py). The Workload API
source cannot reach a SPIRE agent here: its tests cover the missing-socket error and the
conversion of pyspiffe's JWT bundles through a stand-in client, not the gRPC stream itself.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from spiffe import JwtBundle, JwtBundleSet, TrustDomain

from jwks.keys import SVID_ALGORITHMS
from registry.bundles.parse import (
    MAX_BUNDLE_BYTES,
    BundleError,
    BundleFetchError,
    TrustBundle,
    parse_bundle,
)
from registry.bundles.sources import EndpointBundleSource, FileBundleSource, WorkloadApiBundleSource
from registry.bundles.trust import TrustBundles
from tests.tls import https_server, make_pki

VECTORS = Path(__file__).parents[1] / "vectors"
TD = "example.org"
NOW = 1_750_000_000.0


def _cases(name: str) -> list[Any]:
    doc = json.loads((VECTORS / f"bundles_{name}.json").read_text())
    return [pytest.param(case, id=case["id"]) for case in doc["cases"]]


def _raw(case: dict[str, Any]) -> bytes:
    if "raw" in case:
        return str(case["raw"]).encode()
    if "raw_b64" in case:
        return base64.b64decode(case["raw_b64"])
    data = json.dumps(case["bundle"]).encode()
    return data.ljust(case.get("pad_to", 0), b" ")


@cache
def _key(kid: str) -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid}, private=True)


def _jwk(kid: str) -> dict[str, Any]:
    return {**_key(kid).as_dict(private=False), "use": "jwt-svid", "kid": kid}


def _doc(*kids: str, hint: int | None = None, sequence: int | None = None) -> bytes:
    doc: dict[str, Any] = {"keys": [_jwk(kid) for kid in kids]}
    if hint is not None:
        doc["spiffe_refresh_hint"] = hint
    if sequence is not None:
        doc["spiffe_sequence"] = sequence
    return json.dumps(doc).encode()


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", _cases("valid"))
def test_valid_bundle(case: dict[str, Any]) -> None:
    bundle = parse_bundle(case["trust_domain"], _raw(case), now=NOW)
    assert bundle.trust_domain == case["trust_domain"]
    assert sorted(bundle.keys) == case["kids"]
    assert bundle.refresh_hint_s == case["refresh_hint_s"]
    assert bundle.sequence == case["sequence"]
    assert bundle.fetched_at == NOW
    assert re.fullmatch(r"[0-9a-f]{64}", bundle.digest)
    assert len(bundle.ignored) == case["ignored"]
    assert len(bundle.x509_authorities) == case["x509_authorities"]
    for kid, key in bundle.keys.items():
        assert isinstance(key, ECKey | RSAKey)
        assert key.kid == kid
        assert not key.is_private


def test_an_ignored_element_is_logged_without_key_material(
    caplog: pytest.LogCaptureFixture,
) -> None:
    odd = {**_jwk("odd"), "use": "future-svid"}
    no_use = {k: v for k, v in _jwk("no-use").items() if k != "use"}
    doc = json.dumps({"keys": [odd, no_use, _jwk("kept")]}).encode()
    with caplog.at_level("WARNING", logger="registry.bundles.parse"):
        bundle = parse_bundle(TD, doc, now=NOW)
    assert list(bundle.keys) == ["kept"]
    assert bundle.ignored == (
        "keys[0] ignored: unknown use 'future-svid' (Trust Domain and Bundle §4.2.2)",
        "keys[1] ignored: use missing (Trust Domain and Bundle §4.2.2)",
    )
    assert [r.getMessage() for r in caplog.records] == [
        f"trust bundle of {TD}: {reason}" for reason in bundle.ignored
    ]
    for member in ("x", "y"):  # the public coordinates stay out of the log too
        assert odd[member] not in caplog.text and no_use[member] not in caplog.text


@pytest.mark.parametrize("case", _cases("invalid"))
def test_invalid_bundle(case: dict[str, Any]) -> None:
    kwargs = {"max_bytes": case["max_bytes"]} if "max_bytes" in case else {}
    with pytest.raises(BundleError, match=re.escape(case["error"])):
        parse_bundle(case.get("trust_domain", TD), _raw(case), now=NOW, **kwargs)


def test_default_size_cap_is_256_kib() -> None:
    assert MAX_BUNDLE_BYTES == 256 * 1024
    padded = _doc("a").ljust(MAX_BUNDLE_BYTES, b" ")
    assert list(parse_bundle(TD, padded, now=NOW).keys) == ["a"]


def test_digest_follows_the_jwt_svid_keys_only() -> None:
    first = parse_bundle(TD, _doc("a", "b", hint=60, sequence=1), now=NOW)
    reordered = parse_bundle(TD, _doc("b", "a", hint=600, sequence=2), now=NOW + 1)
    rotated = parse_bundle(TD, _doc("a", "c"), now=NOW)
    assert first.digest == reordered.digest
    assert first.digest != rotated.digest
    assert parse_bundle(TD, b'{"keys": []}', now=NOW).digest != first.digest


def test_keys_are_read_only_and_not_in_repr() -> None:
    bundle = parse_bundle(TD, _doc("a"), now=NOW)
    with pytest.raises(TypeError):
        bundle.keys["x"] = _key("x")  # type: ignore[index]
    assert str(_key("a").as_dict()["x"]) not in repr(bundle)


def test_bundle_key_verifies_a_jwt_svid() -> None:
    bundle = parse_bundle(TD, _doc("signer"), now=NOW)
    claims = {"sub": "spiffe://example.org/agents/a", "aud": ["writ"], "exp": int(NOW) + 60}
    token = jwt.encode({"alg": "ES256", "kid": "signer", "typ": "JWT"}, claims, _key("signer"))
    decoded = jwt.decode(token, bundle.keys["signer"], algorithms=list(SVID_ALGORITHMS))
    assert decoded.claims["sub"] == "spiffe://example.org/agents/a"


# --- the store -------------------------------------------------------------------------


def test_store_set_get_remove_and_version() -> None:
    store = TrustBundles(clock=Clock())
    assert store.keys_for(TD) is None
    assert store.get(TD) is None
    assert store.version == 0

    store.set(TD, parse_bundle(TD, _doc("a"), now=NOW))
    assert store.version == 1
    keys = store.keys_for(TD)
    assert keys is not None and list(keys) == ["a"]
    assert store.domains() == (TD,)

    store.set(TD, parse_bundle(TD, _doc("a", hint=60), now=NOW + 5))  # same keys
    assert store.version == 1
    bundle = store.get(TD)
    assert bundle is not None and bundle.fetched_at == NOW + 5

    store.set(TD, parse_bundle(TD, b'{"keys": []}', now=NOW))
    assert store.version == 2
    assert store.keys_for(TD) == {}  # known domain, every SVID rejected

    store.remove(TD)
    assert store.version == 3
    assert store.keys_for(TD) is None
    assert store.domains() == ()


def test_store_refuses_a_bundle_of_another_domain() -> None:
    store = TrustBundles()
    with pytest.raises(BundleError, match="offered for"):
        store.set("other.org", parse_bundle(TD, _doc("a"), now=NOW))


@pytest.mark.parametrize(
    ("min_s", "default_s", "max_s"), [(0, 1, 2), (5, 4, 10), (1, 20, 10)], ids=str
)
def test_store_refresh_bounds_are_checked(min_s: float, default_s: float, max_s: float) -> None:
    with pytest.raises(ValueError, match="min_refresh_s"):
        TrustBundles(min_refresh_s=min_s, default_refresh_s=default_s, max_refresh_s=max_s)


def test_refresh_of_a_domain_without_source_raises() -> None:
    with pytest.raises(KeyError):
        TrustBundles().refresh(TD)


def test_sequence_going_back_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_bytes(_doc("a", sequence=7))
    with TrustBundles(clock=Clock()) as store:
        store.add_source(TD, FileBundleSource(path))
        assert store.refresh(TD)
        path.write_bytes(_doc("evil", sequence=6))
        assert not store.refresh(TD)
        assert list(store.keys_for(TD) or ()) == ["a"]
        assert "spiffe_sequence went back from 7 to 6" in (store.status()[TD].last_error or "")


def test_status_reports_no_key_material(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_bytes(_doc("a", hint=60, sequence=3))
    clock = Clock()
    with TrustBundles(clock=clock) as store:
        store.add_source(TD, FileBundleSource(path))
        store.refresh(TD)
        status = store.status()[TD]
        assert (status.source, status.key_count, status.sequence, status.refresh_hint_s) == (
            "file",
            1,
            3,
            60,
        )
        assert (status.last_refresh_at, status.last_error, status.next_refresh_at) == (
            NOW,
            None,
            NOW + 60,
        )
        assert str(_key("a").as_dict()["x"]) not in repr(store.status())


# --- file source -----------------------------------------------------------------------


def test_file_source_reload_picks_up_an_edited_file(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_bytes(_doc("a"))
    with TrustBundles(clock=Clock()) as store:
        store.add_source(TD, FileBundleSource(path))
        assert not store.ready()
        assert store.refresh(TD)
        assert store.ready()
        version = store.version

        path.write_bytes(_doc("a", "b"))
        assert store.refresh(TD)
        assert sorted(store.keys_for(TD) or ()) == ["a", "b"]
        assert store.version == version + 1


def test_file_source_missing_file_keeps_last_good(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_bytes(_doc("a"))
    with TrustBundles(clock=Clock()) as store:
        store.add_source(TD, FileBundleSource(path))
        store.refresh(TD)
        path.unlink()
        assert not store.refresh(TD)
        assert list(store.keys_for(TD) or ()) == ["a"]
        assert "cannot read" in (store.status()[TD].last_error or "")


# --- bundle endpoint over real TLS -----------------------------------------------------


@dataclass
class Endpoint:
    """What the loopback bundle endpoint answers; tests change it between fetches."""

    url: str
    ca_file: str
    status: int = 200
    body: bytes = field(default_factory=lambda: _doc("a"))
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    delay_s: float = 0.0
    hits: int = 0

    def source(self, **kwargs: Any) -> EndpointBundleSource:
        return EndpointBundleSource(self.url + "/bundle", ca_file=self.ca_file, **kwargs)


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    state = Endpoint(url="", ca_file="")
    lock = threading.Lock()

    def handler(path: str) -> tuple[int, dict[str, str], bytes]:
        with lock:
            state.hits += 1
        time.sleep(state.delay_s)
        return state.status, state.headers, state.body

    with https_server(handler) as (url, ca_file):
        state.url, state.ca_file = url, ca_file
        yield state


def test_endpoint_fetch_with_the_configured_ca(endpoint: Endpoint) -> None:
    endpoint.body = _doc("a", hint=120, sequence=1)
    with TrustBundles(clock=Clock()) as store:
        store.add_source(TD, endpoint.source())
        assert store.refresh(TD)
        assert list(store.keys_for(TD) or ()) == ["a"]
        assert store.ready()
        assert store.status()[TD].source == "endpoint"


def test_endpoint_with_a_shared_client(endpoint: Endpoint) -> None:
    context = ssl.create_default_context(cafile=endpoint.ca_file)
    with httpx.Client(verify=context, follow_redirects=True) as http:
        source = EndpointBundleSource(endpoint.url + "/bundle", http=http)
        assert list(source.fetch(TD, now=NOW).keys) == ["a"]
        endpoint.status, endpoint.headers = 302, {"Location": endpoint.url + "/elsewhere"}
        with pytest.raises(BundleFetchError, match="HTTP 302"):
            source.fetch(TD, now=NOW)  # never follows, whatever the client says
        source.close()
        assert not http.is_closed


@pytest.mark.parametrize(
    ("hint", "expected_interval"),
    [(120, 120), (1, 5), (10**9, 3600), (None, 300), (0, 5)],
    ids=["hint-120s", "below-min", "above-max", "no-hint-default", "zero"],
)
def test_endpoint_refresh_hint_is_honoured(
    endpoint: Endpoint, hint: int | None, expected_interval: float
) -> None:
    endpoint.body = _doc("a", hint=hint)
    clock = Clock()
    with TrustBundles(clock=clock) as store:
        store.add_source(TD, endpoint.source())
        assert store.run_pending() == 1
        assert store.status()[TD].next_refresh_at == NOW + expected_interval

        clock.now = NOW + expected_interval - 0.5
        assert store.run_pending() == 0
        assert endpoint.hits == 1
        clock.now = NOW + expected_interval
        assert store.run_pending() == 1
        assert endpoint.hits == 2


def _garbage(e: Endpoint) -> None:
    e.body = b"<html>not a bundle</html>"


def _server_error(e: Endpoint) -> None:
    e.status = 500


def _redirect(e: Endpoint) -> None:
    e.status, e.headers = 301, {"Location": e.url + "/moved"}


def _slow(e: Endpoint) -> None:
    e.delay_s = 1.0


def _oversized(e: Endpoint) -> None:
    e.body = _doc("a").ljust(MAX_BUNDLE_BYTES + 10, b" ")


def _not_modified_but_empty(e: Endpoint) -> None:
    e.status, e.body = 204, b""


@pytest.mark.parametrize(
    ("breakage", "error"),
    [
        (_server_error, "HTTP 500"),
        (_garbage, "not valid JSON"),
        (_redirect, "HTTP 301 (redirects are not followed)"),
        (_slow, "timed out"),
        (_oversized, "byte cap"),
        (_not_modified_but_empty, "HTTP 204"),
    ],
    ids=["500", "garbage", "redirect", "timeout", "oversized", "204"],
)
def test_endpoint_failure_keeps_the_last_good_bundle(
    endpoint: Endpoint, breakage: Any, error: str
) -> None:
    clock = Clock()
    with TrustBundles(clock=clock) as store:
        store.add_source(TD, endpoint.source(timeout_s=0.3))
        assert store.refresh(TD)
        good, version = store.get(TD), store.version

        breakage(endpoint)
        clock.now = NOW + 10
        assert not store.refresh(TD)
        assert store.get(TD) is good
        assert store.version == version
        assert store.ready()
        status = store.status()[TD]
        assert error in (status.last_error or "")
        assert status.consecutive_failures == 1
        assert status.last_refresh_at == NOW
        assert status.last_attempt_at == NOW + 10
        assert status.next_refresh_at == NOW + 10 + 5  # backoff starts at min_refresh_s

        assert not store.refresh(TD)
        assert store.status()[TD].next_refresh_at == NOW + 10 + 10  # and doubles


def test_endpoint_key_rotation_is_picked_up(endpoint: Endpoint) -> None:
    with TrustBundles(clock=Clock()) as store:
        store.add_source(TD, endpoint.source())
        store.refresh(TD)
        version = store.version

        store.refresh(TD)  # unchanged at the server
        assert store.version == version

        endpoint.body = _doc("a", "b")  # new key published ahead of use
        store.refresh(TD)
        assert sorted(store.keys_for(TD) or ()) == ["a", "b"]
        assert store.version == version + 1

        endpoint.body = _doc("b")  # old key retired
        store.refresh(TD)
        assert list(store.keys_for(TD) or ()) == ["b"]
        assert store.version == version + 2


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8443/bundle",
        "ftp://example.org/b",
        "https:///nohost",
        "https://user:pw@example.org/b",
    ],
    ids=["http", "ftp", "no-host", "userinfo"],
)
def test_endpoint_refuses_non_https_urls(url: str) -> None:
    with pytest.raises(BundleError, match=r"https:// URL|userinfo"):
        EndpointBundleSource(url)


def test_endpoint_refuses_ca_file_with_shared_client() -> None:
    with httpx.Client() as http, pytest.raises(ValueError, match="ca_file"):
        EndpointBundleSource("https://example.org/b", http=http, ca_file="/tmp/ca.pem")


def test_endpoint_refuses_an_untrusted_certificate(endpoint: Endpoint, tmp_path: Path) -> None:
    other_ca, _, _ = make_pki().write(tmp_path)
    for source in (
        EndpointBundleSource(endpoint.url + "/bundle"),  # system store
        EndpointBundleSource(endpoint.url + "/bundle", ca_file=other_ca),
    ):
        with TrustBundles(clock=Clock()) as store:
            store.add_source(TD, source)
            assert not store.refresh(TD)
            assert not store.ready()
            assert store.keys_for(TD) is None
            assert "TLS certificate not trusted" in (store.status()[TD].last_error or "")
    assert endpoint.hits == 0


def test_background_refresher_follows_rotation_and_stops_promptly(endpoint: Endpoint) -> None:
    store = TrustBundles(min_refresh_s=0.05, default_refresh_s=0.1, max_refresh_s=0.2)
    store.add_source(TD, endpoint.source())
    store.start()
    try:
        _wait_for(lambda: store.ready())
        version = store.version
        endpoint.body = _doc("b")
        _wait_for(lambda: store.version > version)
        assert list(store.keys_for(TD) or ()) == ["b"]
    finally:
        started = time.monotonic()
        store.close()
        assert time.monotonic() - started < 1.0
    assert not any(t.name == "writ-trust-bundles" for t in threading.enumerate())


def _wait_for(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# --- Workload API ----------------------------------------------------------------------


def test_workload_api_missing_socket_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "agent.sock"
    with TrustBundles(clock=Clock()) as store:
        store.add_source(TD, WorkloadApiBundleSource(str(missing)))
        assert not store.refresh(TD)
        error = store.status()[TD].last_error or ""
        assert "Workload API unavailable" in error
        assert "does not exist" in error
        assert not store.ready()


class _StandInWorkloadApi:
    """Answers ``fetch_jwt_bundles`` as pyspiffe's WorkloadApiClient would."""

    def __init__(self, bundles: dict[str, JwtBundle]) -> None:
        self.bundles = bundles
        self.closed = False

    def fetch_jwt_bundles(self, timeout: float | None = None) -> JwtBundleSet:
        return JwtBundleSet({TrustDomain(td): b for td, b in self.bundles.items()})

    def close(self) -> None:
        self.closed = True


def test_workload_api_bundles_are_converted() -> None:
    parsed = JwtBundle.parse(TrustDomain(TD), _doc("a", "b"))
    client = _StandInWorkloadApi({TD: parsed})
    source = WorkloadApiBundleSource(client=client)
    bundle = source.fetch(TD, now=NOW)
    assert sorted(bundle.keys) == ["a", "b"]
    assert bundle.digest == parse_bundle(TD, _doc("b", "a"), now=NOW).digest
    with pytest.raises(BundleFetchError, match=re.escape("no JWT bundle for other.org")):
        source.fetch("other.org", now=NOW)
    source.close()
    assert not client.closed  # the caller owns a client it passed in


def test_workload_api_refuses_weak_keys() -> None:
    weak = {"kty": "RSA", "kid": "w", "use": "jwt-svid", "n": _weak_rsa_n(), "e": "AQAB"}
    parsed = JwtBundle.parse(TrustDomain(TD), json.dumps({"keys": [weak]}).encode())
    source = WorkloadApiBundleSource(client=_StandInWorkloadApi({TD: parsed}))
    with pytest.raises(BundleError, match="2048 bits"):
        source.fetch(TD, now=NOW)


def _weak_rsa_n() -> str:
    case = next(c for c in _cases("invalid") if c.id == "rsa-1024").values[0]
    return str(case["bundle"]["keys"][0]["n"])


def test_trust_bundle_is_frozen() -> None:
    bundle = parse_bundle(TD, _doc("a"), now=NOW)
    assert isinstance(bundle, TrustBundle)
    with pytest.raises(AttributeError):
        bundle.digest = "x"  # type: ignore[misc]
