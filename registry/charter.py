"""Agent charters: what an enrolled agent may ever ask for (DESIGN §3 step 5).

Pure: no I/O. A charter is versioned in the registry and each version has a stable hash
that goes into every token as ``agentic_ctx.prov.manifest_hash``.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from jwks.patterns import SpiffePattern

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]{1,128}$")
MAX_TTL_CEILING_S = 3600

Scope = Annotated[str, Field(pattern=SCOPE_TOKEN.pattern)]


class ToolGrant(BaseModel):
    """One tool the agent may call, with the actions and resource patterns allowed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tool: str = Field(min_length=1, max_length=2048)
    actions: tuple[str, ...] = Field(default=("*",), max_length=64)
    resources: tuple[str, ...] = Field(default=("*",), max_length=64)


class Charter(BaseModel):
    """The charter document of one agent version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    purpose: str = Field(default="", max_length=1024)
    scopes: tuple[Scope, ...] = Field(default=(), max_length=128)
    max_ttl_s: int = Field(default=300, ge=1, le=MAX_TTL_CEILING_S)
    tools: tuple[ToolGrant, ...] = Field(default=(), max_length=128)
    environments: tuple[str, ...] = Field(default=(), max_length=32)
    delegate_to: tuple[str, ...] = Field(default=(), max_length=64)
    approval_required: tuple[str, ...] = Field(default=(), max_length=64)

    @field_validator("delegate_to")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for p in value:
            SpiffePattern.parse(p)
        return value

    @field_validator("scopes")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(value))


def canonical_json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def charter_hash(charter: Charter) -> str:
    """Stable hash of a charter version (``sha-256:`` + hex of its canonical JSON)."""
    return "sha-256:" + hashlib.sha256(canonical_json(charter.model_dump(mode="json"))).hexdigest()


def granted_scopes(requested: frozenset[str] | None, charter: Charter) -> frozenset[str]:
    """Scope never widens: the request ∩ the charter; no request means the whole charter."""
    allowed = frozenset(charter.scopes)
    return allowed if requested is None else requested & allowed
