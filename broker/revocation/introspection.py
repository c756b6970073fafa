"""Is a token Writ issued still active? (RFC 7662 §2.2; RFC 7009 §2.1 for ``/revoke``.)

Everything is answered from memory: the key ring's published keys, the registry snapshot and
the revocation set. No database row is read. Pure apart from those in-memory inputs.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from joserfc import jws
from joserfc.errors import JoseError

from broker.auth.svid import SvidError, b64json, token_fingerprint
from broker.revocation.revoked import RevocationSet
from jwks.claims import AT_JWT_TYP, TXN_TOKEN_TYP, TxnTokenClaims
from jwks.client import StaticKeys
from jwks.errors import InvalidToken, UnknownKeyId
from jwks.jose import loads_strict_json
from jwks.keys import TOKEN_ALGORITHMS
from registry.models import Status
from registry.snapshot import RegistrySnapshot

#: The JOSE ``typ`` of every token Writ signs (Txn-Token; RFC 9068 access token).
WRIT_TYPS = frozenset({TXN_TOKEN_TYP, AT_JWT_TYP})
_HEADER = frozenset({"alg", "kid", "typ"})


class PublishedKeys(Protocol):
    """What the key ring offers: its JWKS, its ETag, and its retired keys."""

    def jwks(self) -> dict[str, Any]: ...

    def published(self) -> Any: ...

    def retired(self) -> Mapping[str, float]: ...


@dataclass(frozen=True, slots=True)
class Verified:
    claims: TxnTokenClaims
    kid: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Inspection:
    active: bool
    #: "active", or why not: expired, revoked, key_retired, agent_suspended, ...
    reason: str
    verified: Verified | None = None


class TokenInspector:
    def __init__(
        self,
        keys: PublishedKeys,
        revocations: RevocationSet,
        *,
        issuer: str,
        max_token_bytes: int,
        leeway_s: float = 30.0,
    ) -> None:
        self._keys = keys
        self._revocations = revocations
        self._issuer = issuer
        self._max_bytes = max_token_bytes
        self._leeway = leeway_s
        self._cache: tuple[str, StaticKeys] | None = None
        self._lock = threading.Lock()

    def _static_keys(self) -> StaticKeys:
        etag = self._keys.published().etag
        cached = self._cache
        if cached is not None and cached[0] == etag:
            return cached[1]
        with self._lock:
            keys = StaticKeys(self._keys.jwks())
            self._cache = (etag, keys)
        return keys

    def verify(self, token: str) -> Verified:
        """Signature by a key Writ publishes, header and claim types; not time or status.
        Raises ``InvalidToken`` (``code`` says why)."""
        if len(token) > self._max_bytes:
            raise InvalidToken("token too large", code="oversized")
        parts = token.split(".")
        if len(parts) != 3 or not all(parts):
            raise InvalidToken("not a JWS compact serialization", code="malformed")
        try:
            header = b64json(parts[0], "header")
        except SvidError as err:
            raise InvalidToken("undecodable header", code="malformed") from err
        alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
        # RFC 8725 §3.1 / §3.11: Writ's own algorithms and explicit types only
        if not _HEADER.issuperset(header) or alg not in TOKEN_ALGORITHMS or typ not in WRIT_TYPS:
            raise InvalidToken("not a token Writ signs", code="invalid_header")
        if not isinstance(kid, str):
            raise InvalidToken("no kid", code="invalid_header")
        key = self._static_keys().get_key(kid)  # UnknownKeyId: never or no longer published
        try:
            signed = jws.deserialize_compact(token, key, algorithms=[alg])
        except (JoseError, ValueError) as err:
            raise InvalidToken("signature does not verify", code="bad_signature") from err
        try:
            payload = loads_strict_json(signed.payload)
        except (ValueError, UnicodeDecodeError, RecursionError) as err:
            raise InvalidToken("payload is not JSON", code="malformed") from err
        claims = TxnTokenClaims.from_claims(payload)
        if claims.issuer != self._issuer:
            raise InvalidToken("another issuer", code="invalid_iss")
        return Verified(claims, kid, token_fingerprint(token))

    def inspect(
        self,
        token: str,
        snapshot: RegistrySnapshot,
        now: float,
        *,
        audiences: frozenset[str] | None = None,
    ) -> Inspection:
        """RFC 7662 §2.2: active only if Writ issued it, it has not expired, its key is not
        retired, nothing revokes it, and its gateway and every actor are still active.
        With ``audiences``, a token for any other audience is reported inactive."""
        try:
            verified = self.verify(token)
        except UnknownKeyId:
            return Inspection(False, "unknown_key")
        except InvalidToken as err:
            return Inspection(False, err.code)
        claims = verified.claims
        # RFC 7662 §2.2: a token the caller may not introspect is reported not active
        if audiences is not None and not audiences.intersection(claims.audience):
            return Inspection(False, "audience_not_allowed", verified)
        reason = self._inactive_reason(verified, snapshot, now)
        return Inspection(reason is None, reason or "active", verified)

    def _inactive_reason(
        self, verified: Verified, snapshot: RegistrySnapshot, now: float
    ) -> str | None:
        claims = verified.claims
        if now >= claims.expires_at:
            return "expired"
        if claims.issued_at > now + self._leeway:
            return "not_yet_valid"
        retired_at = self._keys.retired().get(verified.kid)
        # signed before its key was retired; a replica that had not yet seen the rotation
        # may have signed with it afterwards, and those tokens stay active
        if retired_at is not None and claims.issued_at < math.floor(retired_at):
            return "key_retired"
        if self._revocations.is_revoked(claims):
            return "revoked"
        gateway = claims.requesting_workload
        if gateway is not None:
            gw = snapshot.gateways.get(gateway)
            if gw is None:
                return "gateway_unknown"
            if gw.status is not Status.active:
                return f"gateway_{gw.status.value}"
        for actor in claims.actors:
            agent = snapshot.agents.get(actor)
            if agent is None:
                return "agent_not_enrolled"
            if agent.status is not Status.active:
                return f"agent_{agent.status.value}"
            if not agent.usable(now):
                return "enrollment_expired"
        return None


def introspection_body(inspection: Inspection) -> dict[str, Any]:
    """RFC 7662 §2.2: ``active`` alone when inactive; the token's claims when active."""
    if not inspection.active or inspection.verified is None:
        return {"active": False}
    claims = inspection.verified.claims
    body: dict[str, Any] = {"active": True, **claims.raw}
    body["aud"] = list(claims.audience) if len(claims.audience) > 1 else claims.audience[0]
    if claims.requesting_workload is not None:
        # RFC 7662 §2.2 client_id: the client that requested the token
        body["client_id"] = claims.requesting_workload
    return _thaw(body)


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(v) for v in value]
    return value
