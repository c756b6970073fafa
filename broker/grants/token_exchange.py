"""RFC 8693 token exchange: common parameter rules, then a profile chosen from a table
keyed by (subject_token_type, whether an actor_token is present)."""

from __future__ import annotations

from typing import Protocol

from broker.auth.clients import AuthenticatedClient
from broker.decision.rules import gateway_token_type
from broker.errors import InvalidRequest
from broker.grants.base import Issued, TokenContext
from jwks.claims import TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_TXN_TOKEN

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
SUPPORTED_REQUESTED_TYPES = (TOKEN_TYPE_TXN_TOKEN, TOKEN_TYPE_ACCESS_TOKEN)


class Profile(Protocol):
    @property
    def requested_token_types(self) -> tuple[str, ...]:
        """The ``requested_token_type`` values this profile issues."""
        ...

    def issue(
        self,
        params: dict[str, str],
        client: AuthenticatedClient,
        ctx: TokenContext,
        requested_token_type: str,
    ) -> Issued: ...


class TokenExchangeGrant:
    def __init__(self, profiles: dict[tuple[str, bool], Profile]) -> None:
        self._profiles = profiles

    def handle(
        self, params: dict[str, str], client: AuthenticatedClient, ctx: TokenContext
    ) -> Issued:
        # RFC 8693 §2.1: subject_token and subject_token_type are REQUIRED
        if not params.get("subject_token"):
            raise InvalidRequest("subject_token is required", reason="subject_token_missing")
        subject_type = params.get("subject_token_type")
        if not subject_type:
            raise InvalidRequest(
                "subject_token_type is required", reason="subject_token_type_missing"
            )
        has_actor = "actor_token" in params
        # RFC 8693 §2.1: actor_token_type is REQUIRED when actor_token is present and
        # MUST NOT be included otherwise
        if has_actor and not params.get("actor_token_type"):
            raise InvalidRequest(
                "actor_token_type is required with actor_token", reason="actor_token_type_missing"
            )
        if not has_actor and "actor_token_type" in params:
            raise InvalidRequest(
                "actor_token_type without actor_token", reason="actor_token_type_without_actor"
            )
        if has_actor and not params["actor_token"]:
            raise InvalidRequest("actor_token is empty", reason="actor_token_missing")
        requested = params.get("requested_token_type")
        # draft-ietf-oauth-transaction-tokens-10 §Txn-Token Request: REQUIRED; without it
        # Writ would have to guess which token the client wants
        if not requested:
            raise InvalidRequest("requested_token_type is required",
                                 reason="requested_token_type_missing")
        if requested not in SUPPORTED_REQUESTED_TYPES:
            raise InvalidRequest(
                "requested_token_type is not supported", reason="unsupported_requested_token_type"
            )
        gateway_token_type(client.gateway, requested)
        profile = self._profiles.get((subject_type, has_actor))
        if profile is None:
            raise InvalidRequest(
                "this subject_token_type / actor_token combination is not supported",
                reason="unsupported_subject_token_type",
            )
        if requested not in profile.requested_token_types:
            raise InvalidRequest(
                "this profile does not issue the requested_token_type",
                reason="unsupported_requested_token_type",
            )
        return profile.issue(params, client, ctx, requested)
