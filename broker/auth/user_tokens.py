"""Validation of users' access tokens from trusted issuers (the on-behalf-of profiles).

The issuer comes from the in-memory snapshot (``snapshot.issuers``), its keys from a
``jwks.JwksClient`` per issuer (OpenID Connect Discovery or RFC 8414, cached in memory,
refetched on an unknown ``kid``). A validated token is cached by the SHA-256 of its bytes
until its ``exp``. No database row is read.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import httpx
from joserfc import jws
from joserfc.errors import JoseError

from jwks.claims import act_subjects
from jwks.client import DEFAULT_TIMEOUT_S, JwksClient
from jwks.errors import InvalidToken, JwksFetchError, UnknownKeyId
from jwks.jose import JoseRefused, TimeClaims, audience_values, json_object, split_compact
from jwks.keys import AnyKey
from registry.charter import SCOPE_TOKEN
from registry.issuers import IssuerDiscovery, IssuerView

log = logging.getLogger(__name__)

# header members that point at keys the token brings itself: never trusted (RFC 8725 §3.10)
_KEY_CARRYING_HEADERS = frozenset({"jku", "jwk", "x5u", "x5c", "crit"})
# RFC 9068 §2.1 "at+jwt"; many issuers still send "JWT" or nothing (RFC 7519 §5.1)
_ACCEPTED_TYP = frozenset({None, "JWT", "jwt", "at+jwt", "application/at+jwt"})
_DISCOVERY = {
    IssuerDiscovery.oidc: "openid-configuration",
    IssuerDiscovery.rfc8414: "oauth-authorization-server",
}
MAX_SUBJECT_CHARS = 1024


class UserTokenError(Exception):
    """Why a user token was refused; ``reason`` is machine-readable, the message safe."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class IssuerKeysUnavailable(UserTokenError):
    """The issuer's JWKS could not be fetched: a fault, not a bad token."""


@dataclass(frozen=True, slots=True)
class UserToken:
    issuer: str
    subject: str
    # None when the token states no scope at all: never read as "unconstrained"
    scopes: frozenset[str] | None
    may_act: Mapping[str, Any] | None
    expires_at: float
    fingerprint: str
    # the token's own RFC 8693 ``act`` (an earlier delegation), None when absent
    act: Mapping[str, Any] | None = None
    # the verified claims, for the binding checks (broker/decision/user_binding.py)
    claims: Mapping[str, Any] = field(default_factory=dict)


def _scopes(claims: Mapping[str, Any]) -> frozenset[str] | None:
    """RFC 9068 §2.2.3 ``scope`` (space-delimited string); ``scp`` (array) as some issuers
    send it. Absent both: None."""
    if "scope" in claims:
        raw = claims["scope"]
        if not isinstance(raw, str):
            raise UserTokenError("bad_scope", "'scope' must be a string")
        tokens = [t for t in raw.split(" ") if t]
    elif "scp" in claims:
        raw = claims["scp"]
        if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
            raise UserTokenError("bad_scope", "'scp' must be an array of strings")
        tokens = list(raw)
    else:
        return None
    if len(tokens) > 256 or any(not SCOPE_TOKEN.match(t) for t in tokens):
        raise UserTokenError("bad_scope", "the token's scope is malformed")
    return frozenset(tokens)


class UserTokenValidator:
    def __init__(
        self,
        *,
        leeway_s: int = 30,
        max_token_bytes: int = 8192,
        cache_size: int = 10_000,
        jwks_cache_ttl_s: float = 300,
        jwks_min_refetch_s: float = 10,
        http: httpx.Client | None = None,
        prefetch: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._leeway = leeway_s
        self._max = max_token_bytes
        self._cache_size = cache_size
        self._jwks_ttl = jwks_cache_ttl_s
        self._jwks_min_refetch = jwks_min_refetch_s
        self._http = http or httpx.Client(timeout=DEFAULT_TIMEOUT_S, follow_redirects=False)
        self.prefetch = prefetch
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: dict[str, tuple[IssuerView, JwksClient]] = {}
        self._cache: dict[bytes, UserToken] = {}
        # issuers with their own CA file have their own client (issuer -> client)
        self._own_http: dict[str, httpx.Client] = {}

    def use_http(self, http: httpx.Client) -> None:
        """Replace the HTTP client (tests, or a client with its own CA bundle)."""
        old, self._http = self._http, http
        with self._lock:
            self._clients.clear()
            self._cache.clear()
        old.close()

    def close(self) -> None:
        self._http.close()
        with self._lock:
            own, self._own_http = list(self._own_http.values()), {}
        for http in own:
            http.close()

    # --- registry changes (snapshot hook, never the token path) ----------------------

    def sync(self, issuers: Mapping[str, IssuerView]) -> None:
        """Follow the trusted issuers: drop clients of removed or changed issuers, and warm
        the JWKS of new ones on a background thread."""
        fresh: list[JwksClient] = []
        with self._lock:
            for name in list(self._clients):
                if issuers.get(name) != self._clients[name][0]:
                    del self._clients[name]
                    self._cache.clear()  # a token validated under the old settings
                    own = self._own_http.pop(name, None)
                    if own is not None:
                        own.close()
            for name, view in issuers.items():
                if name not in self._clients:
                    self._clients[name] = (view, self._new_client(view))
                    fresh.append(self._clients[name][1])
        if fresh and self.prefetch:
            threading.Thread(
                target=self._warm, args=(fresh,), name="writ-issuer-jwks", daemon=True
            ).start()

    @staticmethod
    def _warm(clients: list[JwksClient]) -> None:
        for client in clients:
            try:
                client.refresh()
            except Exception as err:  # the token path retries and fails closed
                log.warning("issuer JWKS prefetch failed: %s", err)

    def _new_client(self, view: IssuerView) -> JwksClient:
        http = self._http
        if view.ca_file is not None:
            http = httpx.Client(verify=_ca_file_context(view.issuer, view.ca_file),
                                timeout=DEFAULT_TIMEOUT_S, follow_redirects=False,
                                trust_env=False)
            old = self._own_http.pop(view.issuer, None)
            self._own_http[view.issuer] = http
            if old is not None:
                old.close()
        return JwksClient(
            jwks_uri=view.jwks_uri,
            issuer=view.issuer,
            discovery=_DISCOVERY[view.discovery],
            http=http,
            cache_ttl_s=max(self._jwks_ttl, self._jwks_min_refetch),
            min_refetch_interval_s=self._jwks_min_refetch,
            clock=self._clock,
        )

    def _client(self, view: IssuerView) -> JwksClient:
        entry = self._clients.get(view.issuer)
        if entry is not None and entry[0] == view:
            return entry[1]
        with self._lock:
            entry = self._clients.get(view.issuer)
            if entry is None or entry[0] != view:
                entry = (view, self._new_client(view))
                self._clients[view.issuer] = entry
            return entry[1]

    # --- the token path -------------------------------------------------------------------

    def validate(self, token: str, issuers: Mapping[str, IssuerView]) -> UserToken:
        if not isinstance(token, str) or not token:
            raise UserTokenError("missing", "token is empty")
        if len(token) > self._max:
            raise UserTokenError("oversized", "token exceeds the size limit")
        now = self._clock()
        digest = hashlib.sha256(token.encode()).digest()
        hit = self._cache.get(digest)
        if hit is not None:
            if now < hit.expires_at + self._leeway and hit.issuer in issuers:
                return hit
            self._cache.pop(digest, None)
        user = self._validate(token, issuers, now, digest.hex())
        if self._cache_size:
            if len(self._cache) >= self._cache_size:
                self._evict(now)
            self._cache[digest] = user
        return user

    def _evict(self, now: float) -> None:
        with self._lock:
            for k in [k for k, v in self._cache.items() if v.expires_at + self._leeway <= now]:
                del self._cache[k]
            while len(self._cache) >= self._cache_size:
                del self._cache[next(iter(self._cache))]

    def _validate(
        self, token: str, issuers: Mapping[str, IssuerView], now: float, fingerprint: str
    ) -> UserToken:
        try:
            # jwks.jose: strict UTF-8 JSON, no duplicate members (RFC 8725 §3.7, RFC 7515 §4)
            parts = split_compact(token)
            header = json_object(parts[0], "header")
            claims = json_object(parts[1], "payload")
        except JoseRefused as err:
            raise UserTokenError("malformed", str(err)) from err
        if _KEY_CARRYING_HEADERS.intersection(header):
            raise UserTokenError("bad_header", "the token names its own keys")
        if header.get("typ") not in _ACCEPTED_TYP:
            raise UserTokenError("bad_typ", "the token's typ is not an access token type")
        iss = claims.get("iss")
        view = issuers.get(iss) if isinstance(iss, str) else None
        if view is None:
            raise UserTokenError("unknown_issuer", "the token's issuer is not trusted")
        alg = header.get("alg")
        # RFC 8725 §3.1: only the issuer's allow-list; never none or HS* (registry/issuers.py)
        if not isinstance(alg, str) or alg not in view.algorithms:
            raise UserTokenError("bad_alg", "algorithm not allowed for this issuer")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise UserTokenError("missing_kid", "kid header is required")
        key = self._key(view, kid)
        try:
            jws.deserialize_compact(token, key, algorithms=[alg])
        except (JoseError, ValueError) as err:
            raise UserTokenError("bad_signature", "signature verification failed") from err
        try:
            times = TimeClaims(now, self._leeway).check(claims)
        except JoseRefused as err:
            raise UserTokenError(err.code, str(err)) from err
        exp = float(times.exp)
        # RFC 9068 §4: the audience must be one this issuer's tokens are accepted for
        if not view.audiences.intersection(audience_values(claims.get("aud")) or ()):
            raise UserTokenError("wrong_aud", "the token's audience is not accepted")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > MAX_SUBJECT_CHARS:
            raise UserTokenError("missing_sub", "'sub' claim is required")
        if sub[:9].lower() == "spiffe://":  # SPIFFE-ID §2.4: the scheme is case-insensitive
            # a user principal never reads as a workload principal (docs/delegation.md)
            raise UserTokenError("spiffe_sub", "a user's 'sub' cannot be a SPIFFE ID")
        may_act = claims.get("may_act")
        if may_act is not None and not (
            isinstance(may_act, dict) and isinstance(may_act.get("sub"), str)
        ):
            raise UserTokenError("bad_may_act", "'may_act' must be an object with 'sub'")
        act = claims.get("act")
        try:
            # RFC 8693 §4.1; agents-02 §3.7.1 copies it into the Txn-Token unmodified
            act_subjects(act)
        except InvalidToken as err:
            raise UserTokenError("bad_act", "'act' must nest objects naming a 'sub'") from err
        return UserToken(
            issuer=view.issuer,
            subject=sub,
            scopes=_scopes(claims),
            may_act=may_act,
            expires_at=exp,
            fingerprint=fingerprint,
            act=act,
            claims=MappingProxyType(dict(claims)),
        )

    def _key(self, view: IssuerView, kid: str) -> AnyKey:
        try:
            return self._client(view).get_key(kid)
        except UnknownKeyId as err:
            raise UserTokenError("unknown_kid", "kid not in the issuer's JWKS") from err
        except JwksFetchError as err:
            log.warning("issuer JWKS unavailable: %s", err)
            raise IssuerKeysUnavailable(
                "issuer_keys_unavailable", "the issuer's keys are unavailable"
            ) from err


def _ca_file_context(issuer: str, ca_file: str) -> ssl.SSLContext:
    """Only the CAs of ``ca_file``; a missing or broken file trusts nothing (fail closed)."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as err:
        log.warning("issuer %s: cannot load the CA file %s (%s); its keys cannot be fetched",
                    issuer, ca_file, err)
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies against no CA at all
