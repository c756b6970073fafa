"""Fetching what a verifier needs over HTTP: the issuer's JWKS (RFC 7517 §5), found through
RFC 8414 metadata when only the issuer is known, and an RFC 7662 introspection check.

Both fail closed: anything unreachable, oversized or malformed raises ``JwksFetchError``.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx

from jwks.errors import JwksError, JwksFetchError, TokenInactive, UnknownKeyId
from jwks.jose import loads_strict_json
from jwks.keys import AnyKey, import_public_jwk

Clock = Callable[[], float]

DEFAULT_TIMEOUT_S: Final = 5.0
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,10})\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\s*(?:,|$)", re.IGNORECASE)


class KeySource(Protocol):
    """Anything that maps a ``kid`` to a public key (``JwksClient``, ``StaticKeys``)."""

    def get_key(self, kid: str) -> AnyKey: ...


def _bounded(name: str, value: float, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}")
    return value


def loads_strict(data: bytes | str) -> Any:
    """Strict JSON (``jwks.jose``): UTF-8 only, no duplicate member names (RFC 7515 §5.2
    step 4 allows refusing them), finite numbers only."""
    return loads_strict_json(data.encode() if isinstance(data, str) else data)


def _read_json(response: httpx.Response, what: str, max_bytes: int) -> Any:
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise JwksFetchError(f"{what} exceeds {max_bytes} bytes")
    body = bytearray()
    try:
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > max_bytes:
                raise JwksFetchError(f"{what} exceeds {max_bytes} bytes")
    except httpx.HTTPError as err:
        raise JwksFetchError(f"{what} unreadable: {type(err).__name__}") from err
    try:
        return loads_strict(bytes(body))
    except (ValueError, RecursionError) as err:
        raise JwksFetchError(f"{what} is not valid JSON") from err


def _check_url(url: Any, what: str) -> str:
    if not isinstance(url, str) or urlsplit(url).scheme not in ("https", "http"):
        raise JwksFetchError(f"{what} must be an http(s) URL")
    return url


def _config_url(url: Any, what: str) -> str:
    try:
        return _check_url(url, what)
    except JwksFetchError as err:
        raise ValueError(str(err)) from None


def metadata_url(issuer: str) -> str:
    """RFC 8414 §3.1: insert the well-known segment between the host and any path."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    return urlunsplit(
        (parts.scheme, parts.netloc, f"/.well-known/oauth-authorization-server{path}", "", "")
    )


def openid_configuration_url(issuer: str) -> str:
    """OpenID Connect Discovery 1.0 §4: append the well-known segment to the issuer."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


#: How ``JwksClient`` finds the JWKS when given only the issuer.
DISCOVERY_URLS: Final = {
    "oauth-authorization-server": metadata_url,
    "openid-configuration": openid_configuration_url,
}


def parse_jwks(document: Any) -> dict[str, AnyKey]:
    """Public keys by ``kid`` from a JWK Set; refuses the whole set if any member carries
    private or symmetric material, or a ``kid`` repeats."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksFetchError("JWKS must be an object with a 'keys' array")
    keys: dict[str, AnyKey] = {}
    for jwk in document["keys"]:
        try:
            key = import_public_jwk(jwk)
        except JwksError as err:
            raise JwksFetchError(f"JWKS refused: {err}") from err
        kid = jwk.get("kid")
        # RFC 7517 §4.2: a key whose "use" is not "sig" never verifies a signature.
        if not isinstance(kid, str) or not kid or jwk.get("use", "sig") != "sig":
            continue
        if kid in keys:
            raise JwksFetchError("JWKS refused: duplicate kid")
        keys[kid] = key
    return keys


class StaticKeys:
    """A fixed key set, for an issuer verifying its own tokens or for offline use."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self._keys = parse_jwks(dict(jwks))

    def get_key(self, kid: str) -> AnyKey:
        key = self._keys.get(kid)
        if key is None:
            raise UnknownKeyId("no key with this kid")
        return key


@dataclass(frozen=True, slots=True)
class _Snapshot:
    keys: Mapping[str, AnyKey]
    expires_at: float


class JwksClient:
    """Fetches, caches and refreshes an issuer's JWKS. Thread-safe.

    A cached set is used until its TTL runs out (the response's ``Cache-Control: max-age``
    clamped to ``[min_refetch_interval_s, cache_ttl_s]``, else ``cache_ttl_s``). An unknown
    ``kid`` triggers a refetch, at most once per ``min_refetch_interval_s``; failed fetches
    count too, so an unreachable issuer is not hammered. Given only the issuer, the JWKS is
    found through RFC 8414 metadata, or OpenID Connect Discovery with
    ``discovery="openid-configuration"``.
    """

    def __init__(
        self,
        jwks_uri: str | None = None,
        issuer: str | None = None,
        *,
        http: httpx.Client | None = None,
        cache_ttl_s: float = 300,
        min_refetch_interval_s: float = 10,
        max_bytes: int = 64 * 1024,
        clock: Clock = time.time,
        discovery: str = "oauth-authorization-server",
    ) -> None:
        if jwks_uri is None and issuer is None:
            raise ValueError("give jwks_uri, issuer, or both")
        if discovery not in DISCOVERY_URLS:
            raise ValueError(f"discovery must be one of {sorted(DISCOVERY_URLS)}")
        self._discovery_url = DISCOVERY_URLS[discovery]
        if jwks_uri is not None:
            _config_url(jwks_uri, "jwks_uri")
        if issuer is not None:
            _config_url(issuer, "issuer")
        self._min_refetch = _bounded("min_refetch_interval_s", min_refetch_interval_s, 0, 3600)
        self._ttl = _bounded("cache_ttl_s", cache_ttl_s, self._min_refetch, 86400)
        self._max_bytes = int(_bounded("max_bytes", max_bytes, 1024, 1024 * 1024))
        self._jwks_uri = jwks_uri
        self._issuer = issuer
        self._owns_http = http is None
        self._http = http or httpx.Client(timeout=DEFAULT_TIMEOUT_S, follow_redirects=False)
        self._clock = clock
        self._snapshot: _Snapshot | None = None
        self._last_attempt: float | None = None
        self._lock = threading.Lock()

    @property
    def jwks_uri(self) -> str | None:
        """The configured or discovered JWKS URL (None until discovery has run)."""
        return self._jwks_uri

    def get_key(self, kid: str) -> AnyKey:
        """The public key named ``kid``; raises ``UnknownKeyId`` or ``JwksFetchError``."""
        if not isinstance(kid, str) or not kid:
            raise UnknownKeyId("kid must be a non-empty string")
        snap = self._snapshot
        if snap is not None and self._clock() < snap.expires_at and kid in snap.keys:
            return snap.keys[kid]
        with self._lock:
            now = self._clock()
            snap = self._snapshot
            fresh = snap is not None and now < snap.expires_at
            if snap is not None and fresh and kid in snap.keys:
                return snap.keys[kid]  # another thread refreshed meanwhile
            recent = self._last_attempt is not None and now - self._last_attempt < self._min_refetch
            if recent:
                if fresh:
                    raise UnknownKeyId("no key with this kid (refetch rate-limited)")
                raise JwksFetchError("JWKS unavailable; last fetch failed")
            self._last_attempt = now
            snap = self._refresh(now)
        key = snap.keys.get(kid)
        if key is None:
            raise UnknownKeyId("no key with this kid")
        return key

    def refresh(self) -> None:
        """Fetch the JWKS now, whatever the cache holds (e.g. at start-up)."""
        with self._lock:
            now = self._clock()
            self._last_attempt = now
            self._refresh(now)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> JwksClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"JwksClient(jwks_uri={self._jwks_uri!r}, issuer={self._issuer!r})"

    def _refresh(self, now: float) -> _Snapshot:
        uri = self._jwks_uri or self._discover()
        with self._get(uri, "JWKS") as response:
            keys = parse_jwks(_read_json(response, "JWKS", self._max_bytes))
            ttl = self._ttl_from(response.headers.get("cache-control", ""))
        snap = _Snapshot(keys, now + ttl)
        self._snapshot = snap
        return snap

    def _discover(self) -> str:
        assert self._issuer is not None
        with self._get(self._discovery_url(self._issuer), "issuer metadata") as response:
            metadata = _read_json(response, "issuer metadata", self._max_bytes)
        if not isinstance(metadata, dict):
            raise JwksFetchError("issuer metadata must be a JSON object")
        # RFC 8414 §3.3 and OIDC Discovery §4.3: the issuer returned MUST be identical to
        # the one configured.
        if metadata.get("issuer") != self._issuer:
            raise JwksFetchError("issuer metadata names a different issuer")
        self._jwks_uri = _check_url(metadata.get("jwks_uri"), "jwks_uri")
        return self._jwks_uri

    def _get(self, url: str, what: str) -> _Response:
        return _Response(self._http, "GET", url, what, headers={"Accept": "application/json"})

    def _ttl_from(self, cache_control: str) -> float:
        if _NO_CACHE.search(cache_control):
            return self._min_refetch
        match = _MAX_AGE.search(cache_control)
        if match is None:
            return self._ttl
        return min(max(float(match.group(1)), self._min_refetch), self._ttl)


class _Response:
    """Streams one request, translating transport errors and non-200 answers."""

    def __init__(self, http: httpx.Client, method: str, url: str, what: str, **kw: Any) -> None:
        self._cm = http.stream(method, url, **kw)
        self._what = what

    def __enter__(self) -> httpx.Response:
        try:
            response = self._cm.__enter__()
        except (httpx.HTTPError, httpx.InvalidURL) as err:
            raise JwksFetchError(f"{self._what} unreachable: {type(err).__name__}") from err
        if response.status_code != 200:
            self._cm.__exit__(None, None, None)
            raise JwksFetchError(f"{self._what} answered HTTP {response.status_code}")
        return response

    def __exit__(self, *exc_info: Any) -> None:
        self._cm.__exit__(*exc_info)


class IntrospectionCheck:
    """RFC 7662 online check: POST the token to ``endpoint`` with client credentials and
    refuse it unless ``active`` is true. Answers are cached per token hash for
    ``cache_ttl_s`` (at most 30 s, so revocation is seen quickly). Thread-safe."""

    MAX_CACHE_TTL_S: Final = 30.0

    def __init__(
        self,
        endpoint: str,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        auth: httpx.Auth | None = None,
        http: httpx.Client | None = None,
        cache_ttl_s: float = 5,
        max_cache_entries: int = 10_000,
        max_bytes: int = 64 * 1024,
        clock: Clock = time.time,
    ) -> None:
        _config_url(endpoint, "introspection endpoint")
        if auth is None:
            if not client_id or client_secret is None:
                raise ValueError("give client_id and client_secret, or auth")
            # RFC 7662 §2.1 / RFC 6749 §2.3.1: HTTP Basic client authentication.
            auth = httpx.BasicAuth(client_id, client_secret)
        elif client_id is not None or client_secret is not None:
            raise ValueError("give client credentials or auth, not both")
        self._endpoint = endpoint
        self._auth = auth
        self._owns_http = http is None
        self._http = http or httpx.Client(timeout=DEFAULT_TIMEOUT_S, follow_redirects=False)
        self._ttl = _bounded("cache_ttl_s", cache_ttl_s, 0, self.MAX_CACHE_TTL_S)
        self._max_entries = int(_bounded("max_cache_entries", max_cache_entries, 1, 10**6))
        self._max_bytes = int(_bounded("max_bytes", max_bytes, 1024, 1024 * 1024))
        self._clock = clock
        self._cache: dict[str, tuple[bool, float]] = {}
        self._lock = threading.Lock()

    def check(self, token: str) -> None:
        """Raise ``TokenInactive`` unless the issuer says the token is active;
        ``JwksFetchError`` when it cannot say."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = self._clock()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and now < cached[1]:
            active = cached[0]
        else:
            active = self._ask(token)
            self._remember(digest, active, now)
        if not active:
            raise TokenInactive("the issuer reports the token inactive")

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __repr__(self) -> str:
        return f"IntrospectionCheck(endpoint={self._endpoint!r})"

    def _ask(self, token: str) -> bool:
        request = _Response(
            self._http, "POST", self._endpoint, "introspection endpoint",
            data={"token": token}, auth=self._auth, headers={"Accept": "application/json"},
        )
        with request as response:
            answer = _read_json(response, "introspection response", self._max_bytes)
        # RFC 7662 §2.2: "active" is REQUIRED and boolean.
        if not isinstance(answer, dict) or not isinstance(answer.get("active"), bool):
            raise JwksFetchError("introspection response lacks a boolean 'active'")
        active: bool = answer["active"]
        return active

    def _remember(self, digest: str, active: bool, now: float) -> None:
        if self._ttl <= 0:
            return
        with self._lock:
            if len(self._cache) >= self._max_entries:
                for k in [k for k, (_, exp) in self._cache.items() if exp <= now]:
                    del self._cache[k]
                while len(self._cache) >= self._max_entries:
                    del self._cache[next(iter(self._cache))]
            self._cache[digest] = (active, now + self._ttl)
