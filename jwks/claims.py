"""The claims of a verified Txn-Token (draft-ietf-oauth-transaction-tokens) or RFC 9068
access token, as a typed read-only value.

``TxnTokenClaims.from_claims`` checks member types strictly and requires the members every
Writ token carries (``iss``, ``aud``, ``sub``, ``jti``, ``iat``, ``exp``); ``txn`` (Txn-Tokens
only) and every time/audience/issuer check are the verifier's job.

It reads both token profiles (docs/token-format.md "Token profiles"): ``writ``, where ``act``
nests the agents with the current one outermost and ``act_chain`` lists the earlier ones, and
``agents-02``, where ``act`` is immutable and the current agent is named only in
``agentic_ctx.current_actor``. The current actor is ``agentic_ctx.current_actor`` when present,
else ``act.sub`` (tokens issued before the member existed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from jwks.errors import InvalidSpiffeId, InvalidToken
from jwks.jose import is_numeric_date
from jwks.spiffe_id import parse_spiffe_id

#: draft-ietf-oauth-transaction-tokens: JOSE ``typ`` of a Txn-Token.
TXN_TOKEN_TYP: Final = "txntoken+jwt"  # noqa: S105
#: RFC 9068 §2.1: JOSE ``typ`` of a JWT access token.
AT_JWT_TYP: Final = "at+jwt"
#: Token type identifiers (RFC 8693 §3, draft-ietf-oauth-transaction-tokens).
TOKEN_TYPE_TXN_TOKEN: Final = "urn:ietf:params:oauth:token-type:txn_token"  # noqa: S105
TOKEN_TYPE_JWT: Final = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105
TOKEN_TYPE_ACCESS_TOKEN: Final = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105

# RFC 8693 §4.1 allows nesting without limit; a bound keeps hostile input cheap.
MAX_ACT_DEPTH: Final = 32


def _invalid(member: str, why: str) -> InvalidToken:
    return InvalidToken(f"claim {member!r} {why}", code="invalid_claim")


def _str(claims: Mapping[str, Any], member: str, *, required: bool) -> str | None:
    value = claims.get(member)
    if value is None:
        if required:
            raise InvalidToken(f"claim {member!r} is required", code="missing_claim")
        return None
    if not isinstance(value, str) or not value:
        raise _invalid(member, "must be a non-empty string")
    return value


def _numeric_date(value: Any, member: str) -> int:
    # RFC 7519 §2 NumericDate; Writ issues whole seconds, so only integers are accepted.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(member, "must be an integer NumericDate")
    if not is_numeric_date(value, integer=True):  # jwks.jose bounds
        raise _invalid(member, "is out of the NumericDate range")
    return value


def _spiffe_id(value: Any, member: str) -> str:
    if not isinstance(value, str):
        raise _invalid(member, "must be a SPIFFE ID string")
    try:
        parse_spiffe_id(value)
    except InvalidSpiffeId as err:
        raise _invalid(member, "must be a SPIFFE ID") from err
    return value


def _object(claims: Mapping[str, Any], member: str) -> Mapping[str, Any]:
    value = claims.get(member)
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, dict):
        raise _invalid(member, "must be a JSON object")
    return freeze(value)


def freeze(value: Any) -> Any:
    """Deep read-only copy of decoded JSON: objects become mapping proxies, arrays tuples."""
    if isinstance(value, dict):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


@dataclass(frozen=True, slots=True)
class ActorHop:
    """One earlier actor of the transaction (an ``act_chain`` entry)."""

    sub: str
    iat: int
    #: the jti of the token this actor held (a Writ extension), when the issuer records it
    jti: str | None = None


def _audience(value: Any) -> tuple[str, ...]:
    # RFC 7519 §4.1.3: a string or an array of strings.
    if value is None:
        raise InvalidToken("claim 'aud' is required", code="missing_claim")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _invalid("aud", "must be a string or a non-empty array of strings")
    if not all(isinstance(a, str) and a for a in value):
        raise _invalid("aud", "must contain only non-empty strings")
    return tuple(value)


def _scope(value: Any) -> frozenset[str]:
    # RFC 8693 §4.2 / RFC 6749 §3.3: space-delimited string.
    if value is None:
        return frozenset()
    if not isinstance(value, str):
        raise _invalid("scope", "must be a space-delimited string")
    return frozenset(s for s in value.split(" ") if s)


def act_subjects(value: Any) -> tuple[str, ...]:
    """The ``sub`` of every level of a nested ``act`` claim, outermost first."""
    # RFC 8693 §4.1: ``act`` is a JSON object whose ``sub`` names the actor; earlier actors
    # nest inside. A level copied from a user's access token (agents-02 §3.7.1) need not
    # name a SPIFFE ID, but every level names its actor by ``sub``.
    if value is None:
        return ()
    subs: list[str] = []
    node = value
    while node is not None:
        if len(subs) >= MAX_ACT_DEPTH:
            raise _invalid("act", f"nests deeper than {MAX_ACT_DEPTH}")
        if not isinstance(node, Mapping):
            raise _invalid("act", "must be a JSON object")
        sub = node.get("sub")
        if not isinstance(sub, str) or not sub:
            raise _invalid("act.sub", "must be a non-empty string")
        subs.append(sub)
        node = node.get("act")
    return tuple(subs)


def _agentic_member(agentic: Any, member: str) -> str | None:
    # agents-02 §3.6.1: current_actor and originator are strings; Writ's are SPIFFE IDs
    if not isinstance(agentic, dict) or agentic.get(member) is None:
        return None
    return _spiffe_id(agentic[member], f"agentic_ctx.{member}")


def _txn_path(agentic: Any) -> tuple[str, ...] | None:
    # a Writ extension (agents-02 §4.2.3 allows a path, defines none): every actor, oldest first
    meta = agentic.get("chain_metadata") if isinstance(agentic, dict) else None
    if not isinstance(meta, dict) or meta.get("txn_path") is None:
        return None
    path = meta["txn_path"]
    if not isinstance(path, list) or len(path) > MAX_ACT_DEPTH:
        raise _invalid("agentic_ctx.chain_metadata.txn_path",
                       f"must be an array of at most {MAX_ACT_DEPTH} SPIFFE IDs")
    return tuple(_spiffe_id(p, "agentic_ctx.chain_metadata.txn_path[]") for p in path)


def _requesting_workloads(value: Any) -> tuple[str, ...]:
    # draft-ietf-oauth-transaction-tokens-10 §Security Considerations and agents-02 §3.4.1:
    # a replacement appends its requester to req_wl, comma-separated (no SPIFFE ID has a comma)
    if value is None:
        return ()
    if not isinstance(value, str):
        raise _invalid("req_wl", "must be a string")
    parts = value.split(",")
    if len(parts) > MAX_ACT_DEPTH:
        raise _invalid("req_wl", f"names more than {MAX_ACT_DEPTH} workloads")
    return tuple(_spiffe_id(p, "req_wl") for p in parts)


def _earlier_actors(
    actor: str | None, chain: tuple[ActorHop, ...], path: tuple[str, ...] | None,
    originator: str | None,
) -> tuple[str, ...]:
    """Who acted before the current actor, oldest first: ``act_chain`` (profile ``writ``),
    else ``txn_path`` without its last entry, else the originator when it is not the
    current actor (profile ``agents-02`` without the extension)."""
    if chain:
        return tuple(hop.sub for hop in chain)
    if path and path[-1] == actor:
        return path[:-1]
    if originator is not None and originator != actor:
        return (originator,)
    return ()


def _actor_chain(value: Any) -> tuple[ActorHop, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _invalid("act_chain", "must be an array")
    if len(value) > MAX_ACT_DEPTH:
        raise _invalid("act_chain", f"is longer than {MAX_ACT_DEPTH}")
    hops = []
    for entry in value:
        if not isinstance(entry, dict):
            raise _invalid("act_chain", "entries must be JSON objects")
        sub = _spiffe_id(entry.get("sub"), "act_chain[].sub")
        iat = _numeric_date(entry.get("iat"), "act_chain[].iat")
        jti = entry.get("jti")
        if jti is not None and (not isinstance(jti, str) or not jti):
            raise _invalid("act_chain", "entries' jti must be a non-empty string")
        hops.append(ActorHop(sub, iat, jti))
    return tuple(hops)


@dataclass(frozen=True, slots=True)
class TxnTokenClaims:
    """Verified claims. Only ``actor`` counts for access control; the rest is evidence."""

    issuer: str
    audience: tuple[str, ...]
    subject: str
    scope: frozenset[str]
    txn: str | None
    jti: str
    issued_at: int
    expires_at: int
    #: the workload that requested this token: the last entry of ``req_wl``
    requesting_workload: str | None
    actor: str | None
    actor_chain: tuple[ActorHop, ...]
    tctx: Mapping[str, Any]
    rctx: Mapping[str, Any]
    agentic_ctx: Mapping[str, Any]
    raw: Mapping[str, Any]
    #: the call chain of requesting workloads (``req_wl``), oldest first
    requesting_workloads: tuple[str, ...] = ()
    #: every actor before the current one, oldest first, in either token profile
    earlier_actors: tuple[str, ...] = ()
    #: agents-02 §3.6.1 ``agentic_ctx.originator``: the first actor, when the token names it
    originator: str | None = None

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> TxnTokenClaims:
        """Build from a decoded payload, raising ``InvalidToken`` (``invalid_claim`` or
        ``missing_claim``) on any member of the wrong type."""
        if not isinstance(claims, Mapping):
            raise InvalidToken("claims must be a JSON object", code="malformed")
        for member in ("iat", "exp"):
            if claims.get(member) is None:
                raise InvalidToken(f"claim {member!r} is required", code="missing_claim")
        issued_at = _numeric_date(claims["iat"], "iat")
        expires_at = _numeric_date(claims["exp"], "exp")
        if expires_at <= issued_at:
            raise _invalid("exp", "must be after 'iat'")
        if claims.get("nbf") is not None:
            _numeric_date(claims["nbf"], "nbf")
        workloads = _requesting_workloads(claims.get("req_wl"))
        agentic = claims.get("agentic_ctx")
        act = act_subjects(claims.get("act"))
        current = _agentic_member(agentic, "current_actor")
        if current is None and act:
            current = _spiffe_id(act[0], "act.sub")
        originator = _agentic_member(agentic, "originator")
        chain = _actor_chain(claims.get("act_chain"))
        return cls(
            issuer=_str(claims, "iss", required=True) or "",
            audience=_audience(claims.get("aud")),
            subject=_str(claims, "sub", required=True) or "",
            scope=_scope(claims.get("scope")),
            txn=_str(claims, "txn", required=False),
            jti=_str(claims, "jti", required=True) or "",
            issued_at=issued_at,
            expires_at=expires_at,
            requesting_workload=workloads[-1] if workloads else None,
            actor=current,
            actor_chain=chain,
            tctx=_object(claims, "tctx"),
            rctx=_object(claims, "rctx"),
            agentic_ctx=_object(claims, "agentic_ctx"),
            raw=freeze(dict(claims)),
            requesting_workloads=workloads,
            earlier_actors=_earlier_actors(current, chain, _txn_path(agentic), originator),
            originator=originator,
        )

    @property
    def actors(self) -> tuple[str, ...]:
        """Every actor, oldest first: the earlier ones then the current one."""
        earlier = self.earlier_actors or tuple(hop.sub for hop in self.actor_chain)
        return earlier if self.actor is None else (*earlier, self.actor)

    @property
    def hop_count(self) -> int:
        """Agents that have acted in the transaction, the current one included (1 for a first
        token); the same count Writ writes into ``agentic_ctx.chain_metadata.hop_count``."""
        return len(self.actors)
