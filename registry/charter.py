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


#: A claim value ``acts_for.claims`` may require: compared exactly, never coerced.
ClaimValue = str | int | bool
MAX_USER_SUBJECT_CHARS = 1024


class ActsFor(BaseModel):
    """Users this agent may act for (docs/delegation.md "Tenancy"): users of ``issuer``
    whose ``sub`` matches one of ``subjects`` (``*`` matches any run of characters) and
    whose token carries every claim of ``claims`` with that value (or, for an array claim,
    containing it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(min_length=9, max_length=2048)
    subjects: tuple[str, ...] = Field(default=("*",), min_length=1, max_length=64)
    claims: dict[str, ClaimValue] = Field(default_factory=dict, max_length=16)

    @field_validator("subjects")
    @classmethod
    def _subjects(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not s or len(s) > MAX_USER_SUBJECT_CHARS or not s.isprintable() for s in value):
            raise ValueError("each subject pattern must be 1 to 1024 printable characters")
        return value

    @field_validator("claims")
    @classmethod
    def _claim_names(cls, value: dict[str, ClaimValue]) -> dict[str, ClaimValue]:
        # the token's own identity claims are matched by issuer and subjects, not here
        reserved = {"iss", "sub", "aud", "exp", "iat", "nbf", "jti"}
        for name, v in value.items():
            if not name or len(name) > 128 or name in reserved:
                raise ValueError(f"claim name {name!r} cannot be required here")
            if isinstance(v, str) and len(v) > 1024:
                raise ValueError("a required claim value is at most 1024 characters")
        return value


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
    # empty: any user the trusted issuer lets this agent serve (registry/issuers.py)
    acts_for: tuple[ActsFor, ...] = Field(default=(), max_length=32)

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
    doc = charter.model_dump(mode="json")
    if not doc["acts_for"]:
        del doc["acts_for"]  # charters written before acts_for keep their hash
    return "sha-256:" + hashlib.sha256(canonical_json(doc)).hexdigest()


def granted_scopes(requested: frozenset[str] | None, charter: Charter) -> frozenset[str]:
    """Scope never widens: the request ∩ the charter; no request means the whole charter."""
    allowed = frozenset(charter.scopes)
    return allowed if requested is None else requested & allowed
