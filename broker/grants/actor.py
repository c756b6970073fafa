"""The agent behind an ``actor_token`` (on-behalf-of and replacement profiles)."""

from __future__ import annotations

from broker.auth.svid import SvidError, ValidatedSvid
from broker.errors import InvalidRequest
from broker.grants.base import TokenContext
from jwks.claims import TOKEN_TYPE_JWT


def actor_svid(params: dict[str, str], ctx: TokenContext) -> ValidatedSvid:
    """Validate the agent's JWT-SVID presented as ``actor_token``."""
    # RFC 8693 §2.1: actor_token_type identifies the actor token's type; an agent proves
    # itself with a JWT-SVID only
    if params.get("actor_token_type") != TOKEN_TYPE_JWT:
        raise InvalidRequest(
            "actor_token_type must be urn:ietf:params:oauth:token-type:jwt",
            reason="unsupported_actor_token_type",
        )
    try:
        svid = ctx.svids.validate(params["actor_token"], (ctx.issuer,))
    except SvidError as err:
        # RFC 8693 §2.2.2: an invalid actor_token is invalid_request
        raise InvalidRequest(
            "actor_token is not a valid JWT-SVID", reason=f"actor_token_{err.reason}"
        ) from err
    ctx.notes["agent"] = svid.spiffe_id
    ctx.notes["actor_token_sha256"] = svid.fingerprint
    return svid
