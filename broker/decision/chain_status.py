"""The kill switch reaches the whole chain (docs/revocation.md "Suspension and the chain"):
a Txn-Token whose actor chain holds an agent that is no longer active is never replaced
again, whichever hop that agent was. Pure: reads the in-memory snapshot only.

``/introspect`` applies the same rule to every actor of a token
(``broker/revocation/introspection.py``); this gate applies it before a replacement.
"""

from __future__ import annotations

from broker.decision.gates import Decision, Gate
from broker.decision.rules import enrolled_agent
from broker.errors import AccessDenied, OAuthError
from jwks.claims import TxnTokenClaims


def chain_gate(parent: TxnTokenClaims) -> Gate:
    """Every earlier actor of the parent (``act_chain``) is still enrolled and active; the
    parent's current actor is the delegator, checked by the delegation gate."""

    def gate(d: Decision) -> str:
        earlier = tuple(hop.sub for hop in parent.actor_chain)
        for actor in earlier:
            try:
                enrolled_agent(d.snapshot, actor, d.now)
            except OAuthError as err:
                raise AccessDenied("an earlier agent of the transaction may no longer act",
                                   reason=f"chain_{err.reason}") from err
        if not earlier:
            return "no earlier agents in the chain"
        return f"every earlier agent of the chain is active ({len(earlier)})"

    return ("chain", gate)
