"""Binding a user's access token to where it belongs (docs/delegation.md "Binding user
tokens"): the client it was issued to, the agents its issuer may serve, and the users the
agent's charter lets it act for. Pure: reads the token's verified claims and the snapshot.

Two gates for the on-behalf-of profiles, placed by ``with_user_binding``:

- ``user_client`` (first): when the token names a client (``azp``, OIDC Core §2; or
  ``client_id``, RFC 9068 §2.2), that client must be in the issuer's ``allowed_clients``.
  Deny by default: an issuer with none listed takes no token that names a client.
- ``tenancy`` (after enrollment): the agent lies in the issuer's ``agent_namespaces``
  (deny by default: none), and, when the charter has ``acts_for``, one entry matches the
  user's issuer, ``sub`` and required claims.

A replacement checks the delegate's ``tenancy`` too (``replacement_tenancy_gate``), on what
the parent Txn-Token carries (``sub_id``): the user's claims are not in it, so an
``acts_for`` entry that requires claims cannot admit a delegate (deny by default).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from broker.decision.delegation import parent_subject_id
from broker.decision.gates import Decision, Gate
from broker.errors import AccessDenied, InvalidRequest
from jwks.claims import TxnTokenClaims
from registry.charter import ActsFor, Charter, ClaimValue
from registry.issuers import IssuerView
from registry.namespace import within


class BoundUser(Protocol):
    """A verified user token (``broker.auth.user_tokens.UserToken``) or a ``NamedUser``."""

    @property
    def issuer(self) -> str: ...

    @property
    def subject(self) -> str: ...

    @property
    def claims(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class NamedUser:
    """A user named by issuer, ``sub`` and claims: to explain (unverified), or a
    replacement's user from the parent's ``sub_id`` (no claims)."""

    issuer: str
    subject: str
    claims: Mapping[str, Any] = field(default_factory=dict)


#: Claims that name the client a token was issued to.
CLIENT_CLAIMS = ("azp", "client_id")


def token_client(claims: Mapping[str, Any]) -> str | None:
    """The client the token names, or None when it names none. Raises ``InvalidRequest``
    when ``azp`` and ``client_id`` disagree or are not non-empty strings: a verifier and a
    policy must never read two different clients."""
    named = {name: claims[name] for name in CLIENT_CLAIMS if name in claims}
    if any(not isinstance(v, str) or not v for v in named.values()):
        raise InvalidRequest("the user token's client claim is malformed",
                             reason="subject_token_client_malformed")
    values = set(named.values())
    if len(values) > 1:
        raise InvalidRequest("the user token names two different clients",
                             reason="subject_token_client_ambiguous")
    return values.pop() if values else None


def check_client(claims: Mapping[str, Any], issuer: IssuerView) -> str:
    client = token_client(claims)
    if client is None:
        # bound to Writ by its audience alone (checked when the token was read)
        return "the user token names no client; its audience names Writ"
    if client not in issuer.allowed_clients:
        raise InvalidRequest("the user token was issued to a client this issuer's tokens "
                             "are not accepted from", reason="subject_token_client_not_allowed")
    return f"issued to client {client}, allowed for {issuer.issuer}"


@lru_cache(maxsize=4096)
def _subject_regex(pattern: str) -> re.Pattern[str]:
    # '*' is the only wildcard; everything else is literal
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def subject_matches(subject: str, patterns: tuple[str, ...]) -> bool:
    return any(_subject_regex(p).fullmatch(subject) is not None for p in patterns)


def _same(value: Any, wanted: ClaimValue) -> bool:
    # exact type as well as value: True is not 1, "1" is not 1
    return type(value) is type(wanted) and value == wanted


def claim_matches(value: Any, wanted: ClaimValue) -> bool:
    """A scalar claim equals ``wanted``; an array claim contains it."""
    if isinstance(value, list):
        return any(_same(v, wanted) for v in value)
    return _same(value, wanted)


def acts_for_refusal(rules: tuple[ActsFor, ...], issuer: str, subject: str,
                     claims: Mapping[str, Any]) -> str | None:
    """None when a rule admits the user; else the most specific reason none did."""
    of_issuer = [r for r in rules if r.issuer == issuer]
    if not of_issuer:
        return "acts_for_issuer"
    of_subject = [r for r in of_issuer if subject_matches(subject, r.subjects)]
    if not of_subject:
        return "acts_for_subject"
    for rule in of_subject:
        if all(name in claims and claim_matches(claims[name], want)
               for name, want in rule.claims.items()):
            return None
    return "acts_for_claim"


def check_tenancy(user: BoundUser, issuer: IssuerView, agent_id: str, charter: Charter) -> str:
    if not within(agent_id, issuer.agent_namespaces):
        raise AccessDenied("the user's issuer does not serve this agent",
                           reason="issuer_agent_namespace")
    if not charter.acts_for:
        return f"{issuer.issuer} serves {agent_id}; the charter names no acts_for"
    refusal = acts_for_refusal(charter.acts_for, user.issuer, user.subject, user.claims)
    if refusal is not None:
        raise AccessDenied("the agent's charter does not let it act for this user",
                           reason=refusal)
    return f"{issuer.issuer} serves {agent_id}; the charter's acts_for admits the user"


def _issuer(d: Decision, user: BoundUser) -> IssuerView:
    view = d.snapshot.issuers.get(user.issuer)
    if view is None:  # removed since the token was read
        raise InvalidRequest("subject_token is not a valid user access token",
                             reason="subject_token_unknown_issuer")
    return view


def with_user_binding(gates: tuple[Gate, ...], user: BoundUser) -> tuple[Gate, ...]:
    """``gates`` with ``user_client`` first and ``tenancy`` right after ``enrollment``."""

    def client_gate(d: Decision) -> str:
        return check_client(user.claims, _issuer(d, user))

    def tenancy_gate(d: Decision) -> str:
        assert d.agent_id is not None
        return check_tenancy(user, _issuer(d, user), d.agent_id, d.charter)

    out: list[Gate] = [("user_client", client_gate)]
    for gate in gates:
        out.append(gate)
        if gate[0] == "enrollment":
            out.append(("tenancy", tenancy_gate))
    return tuple(out)


def replacement_tenancy_gate(parent: TxnTokenClaims) -> Gate:
    """The delegate may act for the transaction's user as the first agent had to: its
    issuer still trusted and serving the delegate, the delegate's ``acts_for`` admitting
    the user. A transaction of an autonomous agent (no user) passes."""

    def gate(d: Decision) -> str:
        assert d.agent_id is not None
        sub_id = parent_subject_id(parent)
        if sub_id is None:
            if parent.subject.startswith("spiffe://"):
                return "the transaction acts for no user"
            # fail closed: a user principal Writ cannot place under an issuer
            raise AccessDenied("the transaction's user cannot be bound to an issuer",
                               reason="tenancy_unknown_user")
        view = d.snapshot.issuers.get(sub_id["iss"])
        if view is None:
            raise AccessDenied("the user's issuer is no longer trusted",
                               reason="issuer_not_trusted")
        return check_tenancy(NamedUser(sub_id["iss"], sub_id["sub"]), view, d.agent_id,
                             d.charter)

    return ("tenancy", gate)
