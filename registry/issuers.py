"""Trusted user-token issuers (DESIGN §1, "user"): the authorization servers whose access
tokens Writ accepts as ``subject_token`` for the on-behalf-of profiles.

A registrar names the issuer, how its keys are found (OpenID Connect Discovery, RFC 8414
metadata, or a pinned ``jwks_uri``), the audiences a user token must carry, the
signature algorithms it may use, the clients (``azp`` / ``client_id``) whose tokens Writ
takes, and the agent namespaces its users may be served by (deny by default: none). The
token path reads ``IssuerView`` from the snapshot, never this table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, field_validator
from sqlalchemy import JSON, Column
from sqlmodel import Field, Session, SQLModel, select

from jwks.errors import UnsupportedAlgorithm
from jwks.keys import check_algorithms
from jwks.patterns import SpiffePattern
from registry.errors import Conflict, NotFound
from registry.store import bump_version

#: Asymmetric algorithms a user token may be signed with (RFC 7518 §3.1, RFC 9864);
#: ``none`` and HS* are never accepted (DESIGN §8).
USER_TOKEN_ALGORITHMS: Final = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "Ed25519",
)
DEFAULT_USER_TOKEN_ALGORITHMS: Final = ("RS256", "ES256")
MAX_CLIENT_ID_CHARS: Final = 256


class IssuerDiscovery(StrEnum):
    # OpenID Connect Discovery 1.0 §4: <issuer>/.well-known/openid-configuration
    oidc = "oidc"
    # RFC 8414 §3.1: /.well-known/oauth-authorization-server inserted before the path
    rfc8414 = "rfc8414"


def _https_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    # OIDC Discovery §3 / RFC 8414 §2: an https URL with no query or fragment
    if (
        parts.scheme != "https"
        or not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or parts.query
        or parts.fragment
    ):
        raise ValueError(f"{what} must be an https URL without userinfo, query or fragment")
    return value


def check_ca_file_path(value: str) -> str:
    """A CA file is named by an absolute path of printable characters."""
    if not value.startswith("/") or not value.isprintable() or "\x00" in value:
        raise ValueError("ca_file must be an absolute path")
    return value


class TrustedIssuerBase(SQLModel):
    issuer: str = Field(primary_key=True, min_length=9, max_length=2048)
    description: str = Field(default="", max_length=1024)
    discovery: str = Field(default=IssuerDiscovery.oidc.value, max_length=16)
    jwks_uri: str | None = Field(default=None, max_length=2048)
    # a PEM file of the CAs trusted for this issuer's discovery and JWKS alone (else the
    # system store); read by every replica, so the same path must exist on each
    ca_file: str | None = Field(default=None, max_length=4096)


class TrustedIssuer(TrustedIssuerBase, table=True):
    __tablename__ = "trusted_issuers"
    audiences: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    algorithms: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # docs/delegation.md "Binding user tokens": both deny by default when empty
    allowed_clients: list[str] = Field(default_factory=list,
                                       sa_column=Column(JSON, nullable=False))
    agent_namespaces: list[str] = Field(default_factory=list,
                                        sa_column=Column(JSON, nullable=False))
    created_by: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0


class TrustedIssuerCreate(TrustedIssuerBase):
    audiences: list[str] = Field(min_length=1, max_length=16)
    algorithms: list[str] = Field(
        default_factory=lambda: list(DEFAULT_USER_TOKEN_ALGORITHMS), min_length=1, max_length=10
    )
    allowed_clients: list[str] = Field(default_factory=list, max_length=64)
    agent_namespaces: list[str] = Field(default_factory=list, max_length=64)

    @field_validator("allowed_clients")
    @classmethod
    def _clients(cls, value: list[str]) -> list[str]:
        # printable, no spaces: a client id is compared exactly (RFC 6749 §2.2, VSCHAR)
        if any(not c or len(c) > MAX_CLIENT_ID_CHARS or not c.isprintable() or " " in c
               for c in value):
            raise ValueError(f"each allowed client must be 1 to {MAX_CLIENT_ID_CHARS} "
                             "printable characters without spaces")
        return list(dict.fromkeys(value))

    @field_validator("agent_namespaces")
    @classmethod
    def _namespaces(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not pattern.isprintable():  # one canonical form per identity
                raise ValueError("an agent namespace holds no control characters")
            SpiffePattern.parse(pattern)
        return list(dict.fromkeys(value))

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        return _https_url(value, "issuer")

    @field_validator("jwks_uri")
    @classmethod
    def _jwks_uri(cls, value: str | None) -> str | None:
        return None if value is None else _https_url(value, "jwks_uri")

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, value: str | None) -> str | None:
        return None if value is None else check_ca_file_path(value)

    @field_validator("discovery")
    @classmethod
    def _discovery(cls, value: str) -> str:
        return IssuerDiscovery(value).value

    @field_validator("audiences")
    @classmethod
    def _audiences(cls, value: list[str]) -> list[str]:
        if any(not isinstance(a, str) or not a or len(a) > 2048 for a in value):
            raise ValueError("each audience must be a string of 1 to 2048 characters")
        return list(dict.fromkeys(value))

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        try:
            check_algorithms(value)  # refuses none and HS* by name
        except UnsupportedAlgorithm as err:
            raise ValueError(str(err)) from err
        unknown = [a for a in value if a not in USER_TOKEN_ALGORITHMS]
        if unknown:
            raise ValueError(f"unsupported algorithm(s) {unknown}; allowed: "
                             f"{', '.join(USER_TOKEN_ALGORITHMS)}")
        return list(dict.fromkeys(value))


class TrustedIssuerUpdate(BaseModel):
    """What a registrar may change of a trusted issuer in place (``PATCH``); nothing else
    is read silently."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(default=None, max_length=1024)
    allowed_clients: list[str] | None = Field(default=None, max_length=64)
    agent_namespaces: list[str] | None = Field(default=None, max_length=64)

    @field_validator("allowed_clients")
    @classmethod
    def _clients(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else TrustedIssuerCreate._clients(value)

    @field_validator("agent_namespaces")
    @classmethod
    def _namespaces(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else TrustedIssuerCreate._namespaces(value)


class TrustedIssuerPublic(TrustedIssuerBase):
    audiences: list[str]
    algorithms: list[str]
    allowed_clients: list[str]
    agent_namespaces: list[str]
    created_by: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class IssuerView:
    """What the token path needs of one trusted issuer."""

    issuer: str
    discovery: IssuerDiscovery
    jwks_uri: str | None
    audiences: frozenset[str]
    algorithms: tuple[str, ...]
    ca_file: str | None = None
    # clients (azp / client_id) whose tokens are taken; agent namespaces served
    allowed_clients: frozenset[str] = frozenset()
    agent_namespaces: tuple[str, ...] = ()


def _public(row: TrustedIssuer) -> TrustedIssuerPublic:
    return TrustedIssuerPublic.model_validate(row, from_attributes=True)


def create_issuer(
    session: Session, data: TrustedIssuerCreate, *, now: float, by: str
) -> TrustedIssuerPublic:
    if session.get(TrustedIssuer, data.issuer) is not None:
        raise Conflict(f"issuer {data.issuer} is already trusted")
    row = TrustedIssuer(**data.model_dump(), created_by=by, created_at=now, updated_at=now)
    session.add(row)
    bump_version(session, "issuer", data.issuer)
    session.flush()
    return _public(row)


def fetch_issuer(session: Session, issuer: str) -> TrustedIssuerPublic | None:
    row = session.get(TrustedIssuer, issuer)
    return None if row is None else _public(row)


def list_issuers(session: Session) -> list[TrustedIssuerPublic]:
    return [_public(r) for r in session.exec(select(TrustedIssuer).order_by(TrustedIssuer.issuer))]


def update_issuer(
    session: Session, issuer: str, data: TrustedIssuerUpdate, *, now: float
) -> TrustedIssuerPublic:
    row = session.get(TrustedIssuer, issuer)
    if row is None:
        raise NotFound(f"no trusted issuer {issuer}")
    for name, value in data.model_dump(exclude_none=True).items():
        setattr(row, name, value)
    row.updated_at = now
    session.add(row)
    bump_version(session)
    session.flush()
    return _public(row)


def delete_issuer(session: Session, issuer: str) -> None:
    row = session.get(TrustedIssuer, issuer)
    if row is None:
        raise NotFound(f"no trusted issuer {issuer}")
    session.delete(row)
    bump_version(session, "issuer", issuer)
    session.flush()


def load_issuer_views(session: Session) -> Mapping[str, IssuerView]:
    """Every trusted issuer, for the in-memory registry snapshot."""
    views = {
        r.issuer: IssuerView(
            issuer=r.issuer,
            discovery=IssuerDiscovery(r.discovery),
            jwks_uri=r.jwks_uri,
            audiences=frozenset(r.audiences),
            algorithms=tuple(a for a in r.algorithms if a in USER_TOKEN_ALGORITHMS),
            ca_file=r.ca_file,
            allowed_clients=frozenset(r.allowed_clients or ()),
            agent_namespaces=tuple(r.agent_namespaces or ()),
        )
        for r in session.exec(select(TrustedIssuer))
    }
    return MappingProxyType(views)
