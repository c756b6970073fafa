"""Resource servers allowed to call ``POST /introspect`` (RFC 7662 §2.1), and the audiences
whose tokens each may introspect.

A resource server is registered by an admin with its SPIFFE ID as client id and one method:
its own JWT-SVID (as ``Authorization: Bearer`` or as a ``jwt-spiffe`` client assertion) or
RFC 7523 ``private_key_jwt`` with registered public keys. No shared secret exists. Writes bump
``registry_version``; every replica keeps the set in memory (``ResourceServerSet``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pydantic import field_validator
from sqlalchemy import JSON, Column
from sqlmodel import AutoString, Field, Session, SQLModel, select

from jwks.errors import JwksError
from jwks.keys import AnyKey, import_public_jwk
from jwks.patterns import parse_spiffe_id
from registry.errors import Conflict, Invalid, NotFound
from registry.models import GatewayAuthMethod, Status
from registry.snapshot import GatewayView, RegistrySnapshot
from registry.store import bump_version


def _spiffe_id(value: str) -> str:
    parse_spiffe_id(value)
    return value


def _audiences(value: list[str]) -> list[str]:
    if any(not a or len(a) > 2048 or any(ord(c) < 0x21 for c in a) for a in value):
        raise ValueError("each audience is a non-empty string without spaces")
    return sorted(set(value))


class ResourceServerBase(SQLModel):
    client_id: str = Field(primary_key=True, max_length=2048)
    auth_method: GatewayAuthMethod = GatewayAuthMethod.jwt_spiffe
    description: str = Field(default="", max_length=1024)


class ResourceServer(ResourceServerBase, table=True):
    __tablename__ = "resource_servers"
    auth_method: GatewayAuthMethod = Field(
        default=GatewayAuthMethod.jwt_spiffe, sa_type=AutoString, max_length=16
    )
    audiences: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    jwks: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    status: Status = Field(default=Status.active, sa_type=AutoString, max_length=16)
    created_at: float = 0.0
    updated_at: float = 0.0


class ResourceServerCreate(ResourceServerBase):
    #: token audiences (``aud`` values) this server may introspect; at least one
    audiences: list[str] = Field(min_length=1, max_length=64)
    jwks: dict[str, Any] | None = None  # public keys, for private_key_jwt

    _check_id = field_validator("client_id")(_spiffe_id)
    _check_aud = field_validator("audiences")(_audiences)


class ResourceServerUpdate(SQLModel):
    description: str | None = Field(default=None, max_length=1024)
    audiences: list[str] | None = Field(default=None, min_length=1, max_length=64)
    jwks: dict[str, Any] | None = None

    _check_aud = field_validator("audiences")(lambda v: v if v is None else _audiences(v))


class ResourceServerPublic(ResourceServerBase):
    audiences: list[str]
    jwks: dict[str, Any] | None
    status: Status
    created_at: float
    updated_at: float


# --- store verbs -----------------------------------------------------------------------


def _check_keys(method: GatewayAuthMethod, jwks: dict[str, Any] | None) -> None:
    if jwks is None:
        keys: Any = []
    elif not isinstance(jwks, dict) or not isinstance(keys := jwks.get("keys"), list):
        raise Invalid("jwks must have a 'keys' array")
    for jwk in keys:
        if not isinstance(jwk, dict) or not jwk.get("kid"):
            raise Invalid("every key needs a kid")
        try:
            import_public_jwk(jwk)  # refuses private members and symmetric keys
        except JwksError as err:
            raise Invalid(f"key {jwk.get('kid')}: {err}") from err
    if method is GatewayAuthMethod.private_key_jwt and not keys:
        raise Invalid("private_key_jwt needs a JWKS with at least one public key")


def _public(row: ResourceServer) -> ResourceServerPublic:
    return ResourceServerPublic.model_validate(row, from_attributes=True)


def create_resource_server(
    session: Session, data: ResourceServerCreate, *, now: float
) -> ResourceServerPublic:
    if session.get(ResourceServer, data.client_id) is not None:
        raise Conflict(f"resource server {data.client_id} is already registered")
    _check_keys(data.auth_method, data.jwks)
    bump_version(session, "resource_server", data.client_id)
    row = ResourceServer(**data.model_dump(), status=Status.active, created_at=now,
                         updated_at=now)
    session.add(row)
    session.flush()
    return _public(row)


def fetch_resource_server(session: Session, client_id: str) -> ResourceServerPublic | None:
    row = session.get(ResourceServer, client_id)
    return None if row is None else _public(row)


def list_resource_servers(
    session: Session, *, offset: int = 0, limit: int = 100
) -> list[ResourceServerPublic]:
    stmt = select(ResourceServer).order_by(ResourceServer.client_id).offset(offset).limit(limit)
    return [_public(r) for r in session.exec(stmt)]


def update_resource_server(
    session: Session, client_id: str, data: ResourceServerUpdate, *, now: float
) -> ResourceServerPublic:
    row = session.get(ResourceServer, client_id)
    if row is None:
        raise NotFound(f"no resource server {client_id}")
    for key, value in data.model_dump(exclude_unset=True).items():
        if value is None:
            raise Invalid(f"{key} cannot be null")
        setattr(row, key, value)
    _check_keys(GatewayAuthMethod(row.auth_method), row.jwks)
    bump_version(session, "resource_server", client_id)
    row.updated_at = now
    session.add(row)
    session.flush()
    return _public(row)


def set_resource_server_status(
    session: Session, client_id: str, status: Status, *, now: float
) -> ResourceServerPublic:
    row = session.get(ResourceServer, client_id)
    if row is None:
        raise NotFound(f"no resource server {client_id}")
    bump_version(session, "resource_server", client_id)
    row.status = status
    row.updated_at = now
    session.add(row)
    session.flush()
    return _public(row)


def delete_resource_server(session: Session, client_id: str) -> None:
    row = session.get(ResourceServer, client_id)
    if row is None:
        raise NotFound(f"no resource server {client_id}")
    bump_version(session, "resource_server", client_id)
    session.delete(row)
    session.flush()


# --- in memory -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResourceServerView:
    client_id: str
    auth_method: GatewayAuthMethod
    status: Status
    audiences: frozenset[str]
    keys: Mapping[str, AnyKey]


def _keys(jwks: dict[str, Any] | None) -> Mapping[str, AnyKey]:
    out: dict[str, AnyKey] = {}
    for jwk in (jwks or {}).get("keys", []):
        if isinstance(jwk, dict) and isinstance(jwk.get("kid"), str):
            out[jwk["kid"]] = import_public_jwk(jwk)
    return MappingProxyType(out)


def load_views(session: Session) -> dict[str, ResourceServerView]:
    return {
        r.client_id: ResourceServerView(
            client_id=r.client_id,
            auth_method=GatewayAuthMethod(r.auth_method),
            status=Status(r.status),
            audiences=frozenset(r.audiences),
            keys=_keys(r.jwks),
        )
        for r in session.exec(select(ResourceServer))
    }


class ResourceServerSet:
    """The registered resource servers, swapped whole after every registry change."""

    def __init__(self) -> None:
        self._views: Mapping[str, ResourceServerView] = MappingProxyType({})
        self._clients = RegistrySnapshot(version=0)
        self._lock = threading.Lock()

    def replace(self, views: Mapping[str, ResourceServerView]) -> None:
        # the client authenticators look callers up as registered clients of a snapshot
        clients = {
            v.client_id: GatewayView(v.client_id, v.auth_method, v.status, (), (), v.keys)
            for v in views.values()
        }
        with self._lock:
            self._views = MappingProxyType(dict(views))
            self._clients = RegistrySnapshot(version=0, gateways=MappingProxyType(clients))

    def get(self, client_id: str) -> ResourceServerView | None:
        return self._views.get(client_id)

    @property
    def as_clients(self) -> RegistrySnapshot:
        """A snapshot whose registered clients are the resource servers, for
        ``broker.auth.clients`` (same checks: registered, active, method)."""
        return self._clients
