"""JWT-SVID validation exactly per the SPIFFE JWT-SVID standard, with a bounded cache.

A validated SVID is cached by the SHA-256 of its bytes until its ``exp``; a change of any
trust bundle clears the cache (DESIGN §6), so a removed key stops working at once.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

from joserfc import jws
from joserfc.errors import JoseError

from jwks.errors import InvalidSpiffeId
from jwks.jose import JoseRefused, TimeClaims, audience_values, json_object, split_compact
from jwks.keys import SVID_ALGORITHMS, AnyKey
from jwks.spiffe_id import parse_spiffe_id

_ALLOWED_HEADERS = frozenset({"alg", "kid", "typ"})  # JWT-SVID §2
_ALLOWED_TYP = frozenset({"JWT", "JOSE"})  # JWT-SVID §2.3


class SvidError(Exception):
    """Why an SVID was refused; ``reason`` is machine-readable, the message is safe."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class BundleSource(Protocol):
    @property
    def version(self) -> int: ...

    def keys_for(self, trust_domain: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class ValidatedSvid:
    spiffe_id: str
    trust_domain: str
    audience: tuple[str, ...]
    expires_at: float
    issued_at: float | None
    fingerprint: str  # SHA-256 of the token, hex: the only form a token is logged in


def token_fingerprint(token: str | bytes) -> str:
    data = token.encode() if isinstance(token, str) else token
    return hashlib.sha256(data).hexdigest()


def b64json(part: str, what: str) -> dict[str, Any]:
    """One strict JSON object from a base64url segment (``jwks.jose``), as ``SvidError``."""
    try:
        return json_object(part, what)
    except JoseRefused as err:
        raise SvidError(err.code, str(err)) from err


class SvidValidator:
    """``max_lifetime_s`` bounds ``exp - iat`` (``exp - now`` without ``iat``);
    ``max_audiences`` is how many audiences an SVID presented to Writ may name (JWT-SVID
    §7.2: 1, Writ alone, by default)."""

    def __init__(
        self,
        bundles: BundleSource,
        *,
        leeway_s: int = 30,
        cache_size: int = 10_000,
        max_token_bytes: int = 8192,
        max_lifetime_s: int = 3600,
        max_audiences: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._bundles = bundles
        self._leeway = leeway_s
        self._max_lifetime = max_lifetime_s
        self._max_audiences = max_audiences
        self._cache_size = cache_size
        self._max = max_token_bytes
        self._clock = clock
        self._cache: dict[tuple[bytes, frozenset[str]], ValidatedSvid] = {}
        self._cache_version = -1

    def validate(self, token: str, audiences: Collection[str]) -> ValidatedSvid:
        """Validate ``token``; its ``aud`` must contain one of ``audiences``."""
        if not isinstance(token, str) or not token:
            raise SvidError("missing", "token is empty")
        if len(token) > self._max:
            raise SvidError("oversized", "token exceeds the size limit")
        now = self._clock()
        version = self._bundles.version
        if version != self._cache_version:
            self._cache.clear()
            self._cache_version = version
        key = (hashlib.sha256(token.encode()).digest(), frozenset(audiences))
        hit = self._cache.get(key)
        if hit is not None:
            if now < hit.expires_at + self._leeway:
                return hit
            del self._cache[key]
        svid = self._validate(token, audiences, now)
        if self._cache_size:
            if len(self._cache) >= self._cache_size:
                self._evict(now)
            self._cache[key] = svid
        return svid

    def clear(self) -> None:
        self._cache.clear()

    def _evict(self, now: float) -> None:
        """Drop the oldest tenth of the cache (insertion order tracks expiry closely), so a
        full cache costs one amortised pass, not a scan per insert."""
        drop = max(1, self._cache_size // 10)
        for k in list(itertools.islice(self._cache, drop)):
            del self._cache[k]

    def _validate(self, token: str, audiences: Collection[str], now: float) -> ValidatedSvid:
        try:
            parts = split_compact(token)
        except JoseRefused as err:
            raise SvidError("malformed", "not a compact JWS") from err
        header = b64json(parts[0], "header")
        if not _ALLOWED_HEADERS.issuperset(header):
            raise SvidError("bad_header", "only alg, kid and typ headers are allowed")
        alg = header.get("alg")
        if alg not in SVID_ALGORITHMS:
            raise SvidError("bad_alg", "algorithm not allowed for JWT-SVIDs")
        if "typ" in header and header["typ"] not in _ALLOWED_TYP:
            raise SvidError("bad_typ", "typ must be JWT or JOSE")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise SvidError("missing_kid", "kid header is required")
        claims = b64json(parts[1], "payload")
        sub = claims.get("sub")
        if not isinstance(sub, str):
            raise SvidError("missing_sub", "'sub' claim is required")
        try:
            sid = parse_spiffe_id(sub)
        except InvalidSpiffeId as err:
            raise SvidError("bad_sub", "'sub' is not a well-formed SPIFFE ID") from err
        if not sid.path:
            raise SvidError("bad_sub", "'sub' must name a workload, not a trust domain")
        td = sid.trust_domain
        keys = self._bundles.keys_for(td)
        if keys is None:
            raise SvidError("unknown_trust_domain", "no trust bundle for the SVID's trust domain")
        public: AnyKey | None = keys.get(kid)
        if public is None:
            raise SvidError("unknown_kid", "kid not in the trust bundle")
        try:
            jws.deserialize_compact(token, public, algorithms=[alg])
        except JoseError as err:
            raise SvidError("bad_signature", "signature verification failed") from err
        except ValueError as err:  # key type does not fit alg
            raise SvidError("bad_signature", "signature verification failed") from err
        try:
            # finite NumericDates in range; lifetime bounded as SPIRE bounds its own SVIDs
            times = TimeClaims(
                now, self._leeway, max_lifetime_s=self._max_lifetime
            ).check(claims)
        except JoseRefused as err:
            raise SvidError(err.code, str(err)) from err
        aud_list = audience_values(claims.get("aud"))
        if aud_list is None:
            raise SvidError("missing_aud", "'aud' claim is required")
        if not set(aud_list).intersection(audiences):
            raise SvidError("wrong_aud", "the SVID's audience does not name this service")
        # JWT-SVID §7.2: an SVID naming other audiences too can be replayed by any of them
        if len(set(aud_list)) > self._max_audiences:
            raise SvidError("too_many_audiences", "the SVID names audiences besides this one")
        return ValidatedSvid(
            spiffe_id=sub,
            trust_domain=td,
            audience=aud_list,
            expires_at=float(times.exp),
            issued_at=None if times.iat is None else float(times.iat),
            fingerprint=token_fingerprint(token),
        )
