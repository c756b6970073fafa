"""Registry tables and their API models (Base / Create / Update / Public families).

No route returns a table row, and no Public model carries a secret. Times are epoch
seconds (float) from the injected clock.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import field_validator
from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from jwks.patterns import SpiffePattern, parse_spiffe_id
from registry.charter import Charter


class Status(StrEnum):
    active = "active"
    suspended = "suspended"
    revoked = "revoked"


class GatewayAuthMethod(StrEnum):
    # draft-ietf-oauth-spiffe-client-auth: the gateway's own JWT-SVID as client assertion
    jwt_spiffe = "jwt_spiffe"
    # RFC 7523 §2.2 / OIDC Core §9 private_key_jwt with registered public keys
    private_key_jwt = "private_key_jwt"


class BundleSourceKind(StrEnum):
    file = "file"
    endpoint = "endpoint"
    workload_api = "workload_api"
    inline = "inline"


class EndpointProfile(StrEnum):
    # SPIFFE Federation §5.2.1: Web PKI (the system store, or a CA file of this source)
    https_web = "https_web"
    # SPIFFE Federation §5.2.2: the endpoint's X509-SVID against its trust domain's bundle
    https_spiffe = "https_spiffe"


def _spiffe_id(value: str) -> str:
    parse_spiffe_id(value)
    return value


def _patterns(value: list[str]) -> list[str]:
    for p in value:
        SpiffePattern.parse(p)
    return value


# --- trust domains -------------------------------------------------------------------


class TrustDomainBase(SQLModel):
    name: str = Field(primary_key=True, min_length=1, max_length=255, regex=r"^[a-z0-9._-]+$")
    source: BundleSourceKind = BundleSourceKind.inline
    location: str | None = Field(default=None, max_length=2048)
    # endpoint sources only (SPIFFE Federation §5.1): the profile, None meaning https_web
    endpoint_profile: str | None = Field(default=None, max_length=16)
    # https_spiffe: the SPIFFE ID the endpoint's X509-SVID must carry (§5.2.2.2)
    endpoint_spiffe_id: str | None = Field(default=None, max_length=2048)
    # https_web: a PEM file of the CAs trusted for this endpoint alone
    ca_file: str | None = Field(default=None, max_length=4096)


class TrustDomainRecord(TrustDomainBase, table=True):
    __tablename__ = "trust_domains"
    # inline: the bundle; https_spiffe: the operator's bootstrap bundle (public keys only)
    bundle: str | None = None
    # the last good bundle a replica fetched, so a restart starts from it (public keys only)
    latest_bundle: str | None = None
    # the last refresh as a replica saw it (BundleStatus); written without a registry change
    refresh_status: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: float = 0.0
    updated_at: float = 0.0


class TrustDomainCreate(TrustDomainBase):
    bundle: dict[str, Any] | None = None

    @field_validator("endpoint_profile")
    @classmethod
    def _profile(cls, value: str | None) -> str | None:
        return None if value is None else EndpointProfile(value).value


class TrustDomainUpdate(SQLModel):
    source: BundleSourceKind | None = None
    location: str | None = None
    endpoint_profile: EndpointProfile | None = None
    endpoint_spiffe_id: str | None = Field(default=None, max_length=2048)
    ca_file: str | None = Field(default=None, max_length=4096)
    bundle: dict[str, Any] | None = None


class BundleStatus(SQLModel):
    """How fresh a trust domain's bundle is (docs/operations.md); never key material."""

    fresh: bool
    key_count: int | None = None
    x509_authority_count: int | None = None
    ignored_elements: int = 0
    sequence: int | None = None
    refresh_hint_s: int | None = None
    last_refresh_at: float | None = None
    last_attempt_at: float | None = None
    next_refresh_at: float | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    # which replica saw it (host:pid); the admin API answers with its own view
    replica: str | None = None


class TrustDomainPublic(TrustDomainBase):
    key_count: int = 0
    updated_at: float = 0.0
    status: BundleStatus | None = None


# --- agents and charters -------------------------------------------------------------


class AgentBase(SQLModel):
    spiffe_id: str = Field(primary_key=True, max_length=2048)
    owner: str = Field(max_length=255)
    description: str = Field(default="", max_length=1024)
    enrollment_expires_at: float | None = None


class Agent(AgentBase, table=True):
    __tablename__ = "agents"
    status: Status = Status.active
    charter_version: int = 0
    enrolled_by: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0


class AgentCreate(AgentBase):
    charter: Charter

    _check_id = field_validator("spiffe_id")(_spiffe_id)


class AgentUpdate(SQLModel):
    owner: str | None = Field(default=None, max_length=255)
    description: str | None = Field(default=None, max_length=1024)
    enrollment_expires_at: float | None = None
    charter: Charter | None = None


class AgentPublic(AgentBase):
    status: Status
    charter_version: int
    charter_hash: str
    charter: Charter
    enrolled_by: str
    created_at: float
    updated_at: float


class CharterVersion(SQLModel, table=True):
    __tablename__ = "charter_versions"
    __table_args__ = (UniqueConstraint("agent_spiffe_id", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    agent_spiffe_id: str = Field(index=True, max_length=2048)
    version: int
    document: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    hash: str
    created_at: float = 0.0
    created_by: str = ""


# --- gateways ------------------------------------------------------------------------


class GatewayBase(SQLModel):
    client_id: str = Field(primary_key=True, max_length=2048)
    auth_method: GatewayAuthMethod = GatewayAuthMethod.jwt_spiffe
    description: str = Field(default="", max_length=1024)


class Gateway(GatewayBase, table=True):
    __tablename__ = "gateways"
    agent_namespaces: list[str] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    token_types: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    jwks: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    status: Status = Status.active
    created_at: float = 0.0
    updated_at: float = 0.0


class GatewayCreate(GatewayBase):
    agent_namespaces: list[str] = Field(default_factory=list, max_length=64)
    token_types: list[str] = Field(
        default_factory=lambda: ["urn:ietf:params:oauth:token-type:txn_token"], max_length=8
    )
    jwks: dict[str, Any] | None = None  # public keys for private_key_jwt

    _check_id = field_validator("client_id")(_spiffe_id)
    _check_ns = field_validator("agent_namespaces")(_patterns)


class GatewayUpdate(SQLModel):
    description: str | None = None
    agent_namespaces: list[str] | None = None
    token_types: list[str] | None = None
    jwks: dict[str, Any] | None = None

    _check_ns = field_validator("agent_namespaces")(lambda v: v if v is None else _patterns(v))


class GatewayPublic(GatewayBase):
    agent_namespaces: list[str]
    token_types: list[str]
    jwks: dict[str, Any] | None
    status: Status
    created_at: float
    updated_at: float


# --- change counter --------------------------------------------------------------------


class RegistryVersion(SQLModel, table=True):
    """One row whose ``version`` every registry write bumps: replicas poll or are
    notified and rebuild their in-memory snapshot (DESIGN §6)."""

    __tablename__ = "registry_version"
    id: int = Field(default=1, primary_key=True)
    version: int = 0


class RegistryChange(SQLModel, table=True):
    """What each registry version changed, so replicas apply it as a delta (DESIGN §6):
    ``kind`` names the table (``agent``, ``gateway``, ``tool`` ...) and ``key`` the row;
    ``kind = "*"`` asks for a full reload. Old rows are pruned: a replica further behind
    than what is kept reloads in full."""

    __tablename__ = "registry_changes"
    version: int = Field(primary_key=True)
    kind: str = Field(max_length=32)
    key: str = Field(default="", max_length=2048)
