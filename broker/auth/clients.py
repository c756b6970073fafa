"""Gateway (client) authentication at the token endpoint (DESIGN §1).

Two methods, each a class keyed by its ``client_assertion_type`` (RFC 7521 §4.2):
the gateway's own JWT-SVID (draft-ietf-oauth-spiffe-client-auth) and RFC 7523
``private_key_jwt`` with keys registered for the gateway.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from joserfc import jwt
from joserfc.errors import JoseError

from broker.auth.authorization import (
    MalformedAuthorization,
    parse_authorization,
    require_one_method,
)
from broker.auth.svid import SvidError, SvidValidator, b64json, token_fingerprint
from broker.errors import InvalidClient, InvalidRequest
from broker.responses import challenge
from jwks.jose import JoseRefused, TimeClaims, audience_values
from jwks.keys import SVID_ALGORITHMS
from registry.models import GatewayAuthMethod, Status
from registry.snapshot import GatewayView, RegistrySnapshot

JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PRIVATE_KEY_JWT_ALGORITHMS = (*SVID_ALGORITHMS, "Ed25519")


@dataclass(frozen=True, slots=True)
class AuthenticatedClient:
    gateway: GatewayView
    method: GatewayAuthMethod
    assertion_fingerprint: str


class ClientAuthMethod(Protocol):
    method: GatewayAuthMethod

    def authenticate(
        self, assertion: str, client_id: str | None, snapshot: RegistrySnapshot
    ) -> AuthenticatedClient: ...


def _registered(
    snapshot: RegistrySnapshot, client_id: str, method: GatewayAuthMethod
) -> GatewayView:
    gw = snapshot.gateways.get(client_id)
    if gw is None:
        raise InvalidClient("client authentication failed", reason="unknown_gateway")
    if gw.auth_method is not method:
        raise InvalidClient("client authentication failed", reason="wrong_auth_method")
    if gw.status is not Status.active:
        raise InvalidClient("client authentication failed", reason=f"gateway_{gw.status.value}")
    return gw


class JwtSpiffeAuth:
    method = GatewayAuthMethod.jwt_spiffe

    def __init__(self, svids: SvidValidator, issuer: str) -> None:
        self._svids = svids
        self._audiences = (issuer,)

    def authenticate(
        self, assertion: str, client_id: str | None, snapshot: RegistrySnapshot
    ) -> AuthenticatedClient:
        try:
            # the assertion's aud must be the authorization server's issuer identifier
            svid = self._svids.validate(assertion, self._audiences)
        except SvidError as err:
            raise InvalidClient(
                "client authentication failed", reason=f"client_assertion_{err.reason}"
            ) from err
        if client_id is not None and client_id != svid.spiffe_id:
            raise InvalidClient("client authentication failed", reason="client_id_mismatch")
        gw = _registered(snapshot, svid.spiffe_id, self.method)
        return AuthenticatedClient(gw, self.method, svid.fingerprint)


class PrivateKeyJwtAuth:
    method = GatewayAuthMethod.private_key_jwt

    def __init__(
        self,
        audiences: tuple[str, ...],
        *,
        leeway_s: int = 30,
        max_lifetime_s: int = 600,
        clock: Callable[[], float] = time.time,
        seen: dict[str, float] | None = None,
    ) -> None:
        self._audiences = frozenset(audiences)
        self._leeway = leeway_s
        self._max_lifetime = max_lifetime_s
        self._clock = clock
        # (sub, jti) -> exp, RFC 7523 §3 item 7 replay defence
        self._seen: dict[str, float] = {} if seen is None else seen

    def for_audiences(self, audiences: tuple[str, ...]) -> PrivateKeyJwtAuth:
        """The same checks for another endpoint's audiences (RFC 7523 §3 item 3), sharing
        this one's replay set, so an assertion is used once across every endpoint."""
        return PrivateKeyJwtAuth(audiences, leeway_s=self._leeway,
                                 max_lifetime_s=self._max_lifetime, clock=self._clock,
                                 seen=self._seen)

    def authenticate(
        self, assertion: str, client_id: str | None, snapshot: RegistrySnapshot
    ) -> AuthenticatedClient:
        parts = assertion.split(".")
        if len(parts) != 3:
            raise InvalidClient("client authentication failed", reason="client_assertion_malformed")
        try:
            # jwks.jose: strict UTF-8 JSON, no duplicate members (RFC 8725 §3.7, RFC 7515 §4)
            header = b64json(parts[0], "header")
            claims = b64json(parts[1], "payload")
        except SvidError as err:
            raise InvalidClient(
                "client authentication failed", reason="client_assertion_malformed"
            ) from err
        sub = claims.get("sub")
        if not isinstance(sub, str) or claims.get("iss") != sub:
            # RFC 7523 §3: iss and sub MUST both be the client_id
            raise InvalidClient("client authentication failed", reason="client_assertion_iss_sub")
        if client_id is not None and client_id != sub:
            raise InvalidClient("client authentication failed", reason="client_id_mismatch")
        gw = _registered(snapshot, sub, self.method)
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in PRIVATE_KEY_JWT_ALGORITHMS:
            raise InvalidClient("client authentication failed", reason="client_assertion_bad_alg")
        key = gw.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidClient(
                "client authentication failed", reason="client_assertion_unknown_kid"
            )
        try:
            jwt.decode(assertion, key, algorithms=[alg])
        except (JoseError, ValueError) as err:
            raise InvalidClient(
                "client authentication failed", reason="client_assertion_bad_signature"
            ) from err
        now = self._clock()
        jti, aud = claims.get("jti"), claims.get("aud")
        try:
            exp = TimeClaims(now, self._leeway).check(claims).exp
        except JoseRefused as err:
            # RFC 7523 §3 item 4: exp is required; a missing, malformed or past one is expired
            reason = "expired" if err.code.endswith("_exp") else err.code
            raise InvalidClient(
                "client authentication failed", reason=f"client_assertion_{reason}"
            ) from err
        if exp - now > self._max_lifetime:
            raise InvalidClient("client authentication failed", reason="client_assertion_too_long")
        if not self._audiences.intersection(audience_values(aud) or ()):
            raise InvalidClient("client authentication failed", reason="client_assertion_wrong_aud")
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            raise InvalidClient("client authentication failed", reason="client_assertion_no_jti")
        self._prune(now)
        seen_key = f"{sub}\x00{jti}"
        if seen_key in self._seen:
            raise InvalidClient("client authentication failed", reason="client_assertion_replayed")
        self._seen[seen_key] = float(exp) + self._leeway
        return AuthenticatedClient(gw, self.method, token_fingerprint(assertion))

    def _prune(self, now: float) -> None:
        if len(self._seen) > 10_000:
            # a copy: the set is shared by endpoints that may run on other threads
            for k in [k for k, v in list(self._seen.items()) if v <= now]:
                self._seen.pop(k, None)


class ClientAuthenticator:
    """Dispatches on ``client_assertion_type``; any other scheme is ``invalid_client``."""

    def __init__(self, methods: dict[str, ClientAuthMethod]) -> None:
        self._methods = methods

    def method(self, assertion_type: str) -> ClientAuthMethod | None:
        return self._methods.get(assertion_type)

    def authenticate(
        self, params: dict[str, str], *, authorization: str | Sequence[str] | None,
        snapshot: RegistrySnapshot,
    ) -> AuthenticatedClient:
        """``authorization``: every ``Authorization`` field of the request (a second one is
        malformed)."""
        try:
            header = parse_authorization(authorization)
        except MalformedAuthorization as err:
            raise InvalidClient("client authentication failed", reason=err.reason) from err
        require_one_method(header, params)  # RFC 6749 §2.3
        if header is not None:
            # RFC 6749 §5.2: 401 with WWW-Authenticate matching the scheme the client used
            raise InvalidClient(
                "client authentication failed",
                reason="unsupported_auth_scheme",
                headers=challenge(header.scheme, InvalidClient.error),
            )
        if "client_secret" in params:
            # no shared secrets: gateways authenticate with assertions only
            raise InvalidClient("client authentication failed", reason="unsupported_auth_method")
        atype = params.get("client_assertion_type")
        assertion = params.get("client_assertion")
        if atype is None and assertion is None:
            raise InvalidClient("client authentication is required", reason="no_client_auth")
        if not atype or not assertion:
            raise InvalidRequest(
                "client_assertion_type and client_assertion go together",
                reason="client_assertion_incomplete",
            )
        method = self._methods.get(atype)
        if method is None:
            raise InvalidClient("client authentication failed", reason="unsupported_assertion_type")
        return method.authenticate(assertion, params.get("client_id"), snapshot)
