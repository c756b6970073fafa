"""The in-memory revocation set every replica consults (DESIGN §6). Pure: no I/O.

An entry revokes by ``jti`` (one token), by ``txn`` (every token of a transaction,
replacements included), or, for credentials issued up to the moment of revocation, by
agent (any actor in the chain), by gateway (``req_wl``) or by subject (``sub``). The set is
rebuilt whole from the ``revocations`` table after every registry change
(``broker.revocation.store``) and swapped, so readers never see half an update.

Usage, for any token or credential Writ is asked to trust::

    if broker.revocations.is_revoked(claims):  # a claims mapping, TxnTokenClaims or TokenFacts
        raise AccessDenied(...)
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from jwks.claims import TxnTokenClaims

#: Agent, gateway and subject entries also cover credentials issued this long after the
#: revocation: a replica that has not yet heard of it (≤ 1 s) may still mint, and ``iat`` is
#: whole seconds.
ISSUED_AFTER_GRACE_S: Final = 2.0
#: ``act`` nests earlier actors (RFC 8693 §4.1); walk at most this deep.
_MAX_ACT_DEPTH: Final = 32


class RevocationKind(StrEnum):
    jti = "jti"
    txn = "txn"
    agent = "agent"
    gateway = "gateway"
    subject = "subject"


#: Kinds that cover one token or transaction whatever its ``iat``.
EXACT_KINDS: Final = frozenset({RevocationKind.jti, RevocationKind.txn})


@dataclass(frozen=True, slots=True)
class RevocationEntry:
    kind: RevocationKind
    value: str
    revoked_at: float
    #: after this, every token the entry could cover has expired and it may be pruned
    expires_at: float

    def covers_issued_at(self, issued_at: float | None) -> bool:
        if self.kind in EXACT_KINDS:
            return True
        # fail closed: a credential without iat is covered
        return issued_at is None or issued_at <= self.revoked_at + ISSUED_AFTER_GRACE_S


@dataclass(frozen=True, slots=True)
class TokenFacts:
    """What a revocation can match in a token or credential."""

    jti: str | None = None
    txn: str | None = None
    issued_at: float | None = None
    actors: tuple[str, ...] = ()
    gateway: str | None = None
    subject: str | None = None
    #: every gateway of the ``req_wl`` call chain; a replacement minted through another
    #: gateway is still covered by a revocation of one earlier in its chain
    gateways: tuple[str, ...] = ()
    #: jtis of the tokens this one was derived from (``act_chain[].jti``), oldest first
    ancestors: tuple[str, ...] = ()

    @classmethod
    def of(cls, token: Mapping[str, Any] | TxnTokenClaims | TokenFacts) -> TokenFacts:
        if isinstance(token, TokenFacts):
            return token
        claims = token.raw if isinstance(token, TxnTokenClaims) else token
        return cls(
            jti=_str(claims.get("jti")),
            txn=_str(claims.get("txn")),
            issued_at=_num(claims.get("iat")),
            actors=_actors(claims),
            gateway=_str(claims.get("req_wl")),
            subject=_str(claims.get("sub")),
            gateways=_gateways(claims.get("req_wl")),
            ancestors=_ancestors(claims),
        )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _gateways(req_wl: Any) -> tuple[str, ...]:
    # draft-ietf-oauth-transaction-tokens-10, agents-02 §3.4.1: req_wl lists the requesters
    # of a transaction's tokens, comma-separated
    if not isinstance(req_wl, str):
        return ()
    return tuple(g for g in req_wl.split(",")[:_MAX_ACT_DEPTH] if g)


def _agentic_actors(claims: Mapping[str, Any]) -> list[str]:
    """agents-02 §3.6.1: the current actor and originator (the only place an autonomous
    token or a profile-agents-02 replacement names its agent), and Writ's ``txn_path``."""
    agentic = claims.get("agentic_ctx")
    if not isinstance(agentic, Mapping):
        return []
    found = [s for s in (_str(agentic.get("current_actor")), _str(agentic.get("originator")))
             if s]
    meta = agentic.get("chain_metadata")
    path = meta.get("txn_path") if isinstance(meta, Mapping) else None
    if isinstance(path, list | tuple):
        found.extend(s for p in path[:_MAX_ACT_DEPTH] if (s := _str(p)))
    return found


def _actors(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """Every actor named in ``act`` (nested), ``act_chain`` and ``agentic_ctx``."""
    found: list[str] = []
    node = claims.get("act")
    for _ in range(_MAX_ACT_DEPTH):
        if not isinstance(node, Mapping):
            break
        if sub := _str(node.get("sub")):
            found.append(sub)
        node = node.get("act")
    chain = claims.get("act_chain")
    if isinstance(chain, list | tuple):
        for hop in chain[:_MAX_ACT_DEPTH]:
            if isinstance(hop, Mapping) and (sub := _str(hop.get("sub"))):
                found.append(sub)
    found.extend(_agentic_actors(claims))
    return tuple(dict.fromkeys(found))


def _ancestors(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """The jtis ``act_chain`` records: revoking one of them revokes this token too."""
    chain = claims.get("act_chain")
    if not isinstance(chain, list | tuple):
        return ()
    return tuple(jti for hop in chain[:_MAX_ACT_DEPTH]
                 if isinstance(hop, Mapping) and (jti := _str(hop.get("jti"))))


_Index = Mapping[RevocationKind, Mapping[str, RevocationEntry]]


def _index(entries: Iterable[RevocationEntry]) -> _Index:
    by_kind: dict[RevocationKind, dict[str, RevocationEntry]] = {k: {} for k in RevocationKind}
    for e in entries:
        table = by_kind[e.kind]
        held = table.get(e.value)
        # the latest revocation covers the most; the longest expiry keeps it the longest
        table[e.value] = e if held is None else RevocationEntry(
            e.kind,
            e.value,
            max(e.revoked_at, held.revoked_at),
            max(e.expires_at, held.expires_at),
        )
    return MappingProxyType({k: MappingProxyType(v) for k, v in by_kind.items()})


class RevocationSet:
    """Thread-safe for readers without a lock: the index is immutable and swapped whole."""

    def __init__(self, entries: Iterable[RevocationEntry] = ()) -> None:
        self._index = _index(entries)
        self._write = threading.Lock()

    def replace(self, entries: Iterable[RevocationEntry]) -> None:
        """Install the whole set (after a reload from the database)."""
        index = _index(entries)
        with self._write:
            self._index = index

    def add(self, entry: RevocationEntry) -> None:
        """Apply one entry at once on this replica, before the reload catches up."""
        with self._write:
            self._index = _index([*self.entries(), entry])

    def entries(self) -> list[RevocationEntry]:
        return [e for table in self._index.values() for e in table.values()]

    def __len__(self) -> int:
        return sum(len(t) for t in self._index.values())

    def match(
        self, token: Mapping[str, Any] | TxnTokenClaims | TokenFacts
    ) -> RevocationEntry | None:
        """The entry that revokes ``token``, or None."""
        facts = TokenFacts.of(token)
        index = self._index
        candidates = (
            (RevocationKind.jti, facts.jti),
            (RevocationKind.txn, facts.txn),
            (RevocationKind.gateway, facts.gateway),
            *((RevocationKind.gateway, g) for g in facts.gateways),
            (RevocationKind.subject, facts.subject),
            *((RevocationKind.agent, a) for a in facts.actors),
            # a token derived from a revoked one (docs/revocation.md "Replacements")
            *((RevocationKind.jti, j) for j in facts.ancestors),
        )
        for kind, value in candidates:
            if value is None:
                continue
            entry = index[kind].get(value)
            if entry is not None and entry.covers_issued_at(facts.issued_at):
                return entry
        return None

    def is_revoked(self, token: Mapping[str, Any] | TxnTokenClaims | TokenFacts) -> bool:
        """True when any entry covers ``token`` (a claims mapping, ``TxnTokenClaims`` or
        ``TokenFacts``): its jti, its txn, an actor in its chain, its ``req_wl`` gateway or
        its ``sub``, the last three for credentials issued up to the revocation."""
        return self.match(token) is not None
