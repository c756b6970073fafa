"""What every grant receives and returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from broker.audit.writer import AuditEvent
from broker.auth.clients import AuthenticatedClient
from broker.auth.svid import SvidValidator
from broker.claims.txn_token import TokenProfile
from broker.decision.rules import TtlBounds
from broker.signing.signer import Signer
from registry.snapshot import RegistrySnapshot


@dataclass(frozen=True, slots=True)
class TokenContext:
    """The per-request view of the broker: in-memory state only, no database handle."""

    issuer: str
    trust_domain: str
    snapshot: RegistrySnapshot
    svids: SvidValidator
    signer: Signer
    ttl: TtlBounds
    max_json_depth: int
    now: float
    new_id: Callable[[], str]
    peer_ip: str | None
    notes: dict[str, Any]  # what is known so far, for the audit record of a refusal
    profile: TokenProfile = TokenProfile.writ  # WRIT_TOKEN_PROFILE
    # "peer" (the TCP peer) or "forwarded" (by a trusted proxy): broker/routes/client_address.py
    peer_ip_source: str = "peer"


@dataclass(frozen=True, slots=True)
class Issued:
    response: dict[str, Any]
    audit: AuditEvent


class Grant(Protocol):
    def handle(
        self, params: dict[str, str], client: AuthenticatedClient, ctx: TokenContext
    ) -> Issued: ...
