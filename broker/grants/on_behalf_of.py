"""Profiles "on-behalf-of" and "OBO access token for a tool" (DESIGN §2): subject_token = a
user's access token from a trusted issuer, actor_token = the agent's JWT-SVID.

Result: a Txn-Token (or, with ``requested_token_type`` = access_token, an RFC 9068
``at+jwt`` for one tool) whose ``sub`` is the user, unique in the trust domain
(``<issuer>#<subject>``), ``sub_id`` the RFC 9493 ``iss_sub`` pair, and ``act.sub`` the agent
(the user token's own ``act`` nested inside it, or in profile ``agents-02`` copied as
``act``). The agent goes through the same
ordered gates as an autonomous agent (``broker/decision/gates.py``); the user's scope narrows the
result last: scope = user ∩ charter ∩ bounds ∩ request (∩ the tool's scopes). A user token
without any scope is refused, never read as unconstrained.
"""

from __future__ import annotations

from dataclasses import replace

from broker.auth.clients import AuthenticatedClient
from broker.auth.user_tokens import (
    IssuerKeysUnavailable,
    UserToken,
    UserTokenError,
    UserTokenValidator,
)
from broker.claims.txn_token import (
    AccessTokenPlan,
    TxnTokenPlan,
    first_act,
    user_subject,
    user_subject_id,
)
from broker.decision.gates import AGENT_GATES, Decision, Gate, txn_context, walk
from broker.decision.request import (
    RequestContext,
    RequestDetails,
    parse_json_object,
    parse_model,
    values_of,
)
from broker.decision.rules import parse_scope
from broker.decision.user_binding import with_user_binding
from broker.errors import (
    AccessDenied,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    TemporarilyUnavailable,
)
from broker.grants.access_token import issue_access_token
from broker.grants.actor import actor_svid
from broker.grants.autonomous import token_decision
from broker.grants.base import Issued, TokenContext
from broker.grants.mint import issue_txn_token
from jwks.claims import TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_TXN_TOKEN
from registry.tools import TokenKind


def target_gate(d: Decision) -> str:
    """RFC 8693 §2.1 for an access token: ``resource`` or ``audience`` names the target,
    here a registered tool (by its tool id) that takes access tokens from Writ. Either may be
    repeated; an RFC 9068 token has one tool's audience, so they must all name that tool."""
    named = {*values_of(d.params, "resource"), *values_of(d.params, "audience")}
    if not named:
        raise InvalidTarget("an access token needs a resource or audience naming the tool",
                            reason="target_missing")
    if len(named) > 1:
        raise InvalidTarget("resource and audience name different targets",
                            reason="target_ambiguous")
    tool_id = named.pop()
    tool = d.snapshot.tools.get(tool_id)
    if tool is None:
        raise InvalidTarget("the target is not a registered tool", reason="unknown_tool")
    if tool.token_kind is not TokenKind.access_token:
        raise InvalidTarget("the tool does not take access tokens from Writ",
                            reason="tool_token_kind")
    d.requested_scope = parse_scope(d.params.get("scope"))
    details = parse_model(RequestDetails, parse_json_object(
        d.params.get("request_details"), "request_details", max_depth=d.max_json_depth),
        "request_details")
    if details.tool is not None and details.tool != tool_id:
        raise InvalidTarget("request_details.tool is not the target", reason="target_mismatch")
    d.details = details.model_copy(update={"tool": tool_id})
    d.context = parse_model(RequestContext, parse_json_object(
        d.params.get("request_context"), "request_context", max_depth=d.max_json_depth),
        "request_context")
    d.audience = tool.audience  # RFC 9068 §3: aud = the resource server
    d.notes["tool"] = tool_id
    d.notes["intent"] = details.intent
    return f"access token for {tool_id} (audience {tool.audience})"


def user_scope_gate(user: UserToken) -> Gate:
    """Last: the user's own scope bounds what the agent gets on their behalf."""

    def gate(d: Decision) -> str:
        assert user.scopes is not None  # checked when the user token was read
        if d.requested_scope is not None and d.requested_scope - user.scopes:
            raise InvalidScope("requested scope exceeds the user's scope",
                               reason="scope_exceeds_user")
        scope = frozenset(d.scope) & user.scopes
        if not scope:
            raise InvalidScope("no scope can be granted", reason="scope_empty")
        d.scope = tuple(sorted(scope))
        return f"within the scope of {user.subject}: {' '.join(d.scope)}"

    return ("user", gate)


# DESIGN §3 in order; the agent is the actor_token's, so "subject" checks nothing more
_REQUEST_GATE = next(g for g in AGENT_GATES if g[0] == "request")
_AGENT_GATES = tuple(g for g in AGENT_GATES if g[0] != "request")
TXN_TOKEN_GATES: tuple[Gate, ...] = (_REQUEST_GATE, *_AGENT_GATES)
ACCESS_TOKEN_GATES: tuple[Gate, ...] = (("target", target_gate), *_AGENT_GATES)


class OnBehalfOfProfile:
    requested_token_types: tuple[str, ...] = (TOKEN_TYPE_TXN_TOKEN, TOKEN_TYPE_ACCESS_TOKEN)

    def __init__(self, users: UserTokenValidator) -> None:
        self._users = users

    def issue(
        self,
        params: dict[str, str],
        client: AuthenticatedClient,
        ctx: TokenContext,
        requested_token_type: str,
    ) -> Issued:
        agent_id = actor_svid(params, ctx).spiffe_id
        user = self._user(params["subject_token"], ctx)
        # RFC 8693 §4.4: may_act names who may act for the subject; it must be this agent
        if user.may_act is not None and user.may_act.get("sub") != agent_id:
            raise AccessDenied("the user token does not allow this agent to act",
                               reason="may_act_mismatch")
        access_token = requested_token_type == TOKEN_TYPE_ACCESS_TOKEN
        gates = ACCESS_TOKEN_GATES if access_token else TXN_TOKEN_GATES
        d = replace(token_decision(params, client, ctx, requested_token_type),
                    validate_subject=None, agent_id=agent_id)
        d = walk(d, with_user_binding((*gates, user_scope_gate(user)), user))
        assert d.agent is not None
        gateway = client.gateway.client_id
        now = int(ctx.now)
        # never outlive the user's own token
        expires_at = max(now + 1, min(now + d.ttl_s, int(user.expires_at)))
        subject_id = user_subject_id(user.issuer, user.subject)
        # draft-ietf-oauth-transaction-tokens-10 §JWT Body Claims: unique in the trust domain
        subject = user_subject(user.issuer, user.subject)
        detail = {
            "profile": "on_behalf_of",
            "user_issuer": user.issuer,
            "intent": d.details.intent,
            "charter_version": d.agent.charter_version,
            "actor_token_sha256": ctx.notes.get("actor_token_sha256"),
            "subject_token_sha256": user.fingerprint,
        }
        if access_token:
            assert d.tool is not None
            issued = issue_access_token(
                ctx,
                AccessTokenPlan(
                    issuer=ctx.issuer,
                    audience=d.audience,
                    subject=subject,
                    client_id=gateway,
                    scope=d.scope,
                    actor=agent_id,
                    jti=ctx.new_id(),
                    issued_at=now,
                    expires_at=expires_at,
                    subject_id=subject_id,
                    upstream_act=user.act,
                ),
                gateway=gateway, agent=agent_id, tool=d.tool.tool_id, detail=detail,
            )
        else:
            rctx = {"req_ip": d.context.client_ip, "gateway_ip": ctx.peer_ip,
                    "gateway_ip_source": ctx.peer_ip_source,
                    "env": d.context.environment}
            issued = issue_txn_token(
                ctx,
                TxnTokenPlan(
                    issuer=ctx.issuer,
                    audience=d.audience,
                    subject=subject,
                    scope=d.scope,
                    requesting_workload=gateway,
                    actor=agent_id,
                    txn=ctx.new_id(),
                    jti=ctx.new_id(),
                    issued_at=now,
                    expires_at=expires_at,
                    tctx=txn_context(d),
                    rctx={k: v for k, v in rctx.items() if v is not None},
                    manifest_hash=d.agent.charter_hash,
                    subject_id=subject_id,
                    act=first_act(ctx.profile, agent_id, subject, user.act),
                    profile=ctx.profile,
                ),
                gateway=gateway, agent=agent_id, tool=d.details.tool, detail=detail,
            )
        if d.tool is not None:
            # extension member (docs/tools.md): where the gateway sends the agent's call
            issued.response["tool_endpoint"] = d.tool.endpoint
        return issued

    def _user(self, token: str, ctx: TokenContext) -> UserToken:
        try:
            user = self._users.validate(token, ctx.snapshot.issuers)
        except IssuerKeysUnavailable as err:
            # DESIGN §8: a fault fails closed with a clear error
            raise TemporarilyUnavailable(
                "the user token's issuer keys are unavailable; try again", reason=err.reason
            ) from err
        except UserTokenError as err:
            # RFC 8693 §2.2.2: an invalid subject_token is invalid_request
            raise InvalidRequest(
                "subject_token is not a valid user access token",
                reason=f"subject_token_{err.reason}",
            ) from err
        ctx.notes["subject"] = user_subject(user.issuer, user.subject)
        ctx.notes["subject_token_sha256"] = user.fingerprint
        if user.scopes is None:
            # draft-ietf-oauth-transaction-tokens: without the user's scope, nothing
            raise InvalidScope("the user token states no scope", reason="user_scope_missing")
        return user
