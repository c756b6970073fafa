"""Registry writes and reads (fosite-style verbs: create_, fetch_, list_, update_, delete_).

Every write bumps ``registry_version`` in the same transaction, so replicas rebuild
their snapshot; callers commit.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, text, update
from sqlmodel import Session, col, select

from jwks.errors import JwksError
from jwks.keys import import_public_jwk
from registry.charter import Charter, charter_hash
from registry.errors import Conflict, Invalid, NotFound
from registry.models import (
    Agent,
    AgentCreate,
    AgentPublic,
    AgentUpdate,
    BundleStatus,
    CharterVersion,
    Gateway,
    GatewayAuthMethod,
    GatewayCreate,
    GatewayPublic,
    GatewayUpdate,
    RegistryChange,
    RegistryVersion,
    Status,
    TrustDomainCreate,
    TrustDomainPublic,
    TrustDomainRecord,
    TrustDomainUpdate,
)

CHANGE_CHANNEL = "writ_registry"


#: registry versions whose change rows are kept; a replica further behind reloads in full
CHANGES_KEPT = 10_000
FULL = "*"


def bump_version(session: Session, kind: str = FULL, key: str = "") -> None:
    """Move ``registry_version`` and record what changed (``kind``, ``key``), in the caller's
    transaction. The version row's lock orders concurrent writers, so versions commit in
    order and every version has exactly one change row."""
    version = session.execute(
        update(RegistryVersion)
        .where(col(RegistryVersion.id) == 1)
        .values(version=col(RegistryVersion.version) + 1)
        .returning(col(RegistryVersion.version))
    ).scalar_one_or_none()
    if version is None:
        version = 1
        session.add(RegistryVersion(id=1, version=version))
        session.flush()
    session.add(RegistryChange(version=version, kind=kind, key=key))
    if version % 1000 == 0:
        session.execute(
            delete(RegistryChange).where(col(RegistryChange.version) <= version - CHANGES_KEPT)
        )
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        # delivered at commit to every replica's listener (DESIGN §6)
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANGE_CHANNEL})


# --- agents --------------------------------------------------------------------------


def _agent_public(session: Session, agent: Agent) -> AgentPublic:
    cv = session.exec(
        select(CharterVersion).where(
            CharterVersion.agent_spiffe_id == agent.spiffe_id,
            CharterVersion.version == agent.charter_version,
        )
    ).one()
    return AgentPublic(
        **agent.model_dump(exclude={"status", "charter_version"}),
        status=Status(agent.status),
        charter_version=agent.charter_version,
        charter_hash=cv.hash,
        charter=Charter.model_validate(cv.document),
    )


def _add_charter(
    session: Session, spiffe_id: str, version: int, charter: Charter, *, now: float, by: str
) -> None:
    session.add(
        CharterVersion(
            agent_spiffe_id=spiffe_id,
            version=version,
            document=charter.model_dump(mode="json"),
            hash=charter_hash(charter),
            created_at=now,
            created_by=by,
        )
    )


def create_agent(session: Session, data: AgentCreate, *, now: float, by: str) -> AgentPublic:
    if session.get(Agent, data.spiffe_id) is not None:
        raise Conflict(f"agent {data.spiffe_id} is already enrolled")
    agent = Agent(
        spiffe_id=data.spiffe_id,
        owner=data.owner,
        description=data.description,
        enrollment_expires_at=data.enrollment_expires_at,
        status=Status.active,
        charter_version=1,
        enrolled_by=by,
        created_at=now,
        updated_at=now,
    )
    session.add(agent)
    _add_charter(session, data.spiffe_id, 1, data.charter, now=now, by=by)
    bump_version(session, "agent", data.spiffe_id)
    session.flush()
    return _agent_public(session, agent)


def fetch_agent(session: Session, spiffe_id: str) -> AgentPublic | None:
    agent = session.get(Agent, spiffe_id)
    return None if agent is None else _agent_public(session, agent)


def list_agents(session: Session, *, offset: int = 0, limit: int = 100) -> list[AgentPublic]:
    rows = session.exec(select(Agent).order_by(Agent.spiffe_id).offset(offset).limit(limit))
    return [_agent_public(session, a) for a in rows]


def update_agent(
    session: Session, spiffe_id: str, data: AgentUpdate, *, now: float, by: str
) -> AgentPublic:
    agent = session.get(Agent, spiffe_id)
    if agent is None:
        raise NotFound(f"no agent {spiffe_id}")
    changes = data.model_dump(exclude_unset=True, exclude={"charter"})
    for key, value in changes.items():
        setattr(agent, key, value)
    if data.charter is not None:
        agent.charter_version += 1
        _add_charter(session, spiffe_id, agent.charter_version, data.charter, now=now, by=by)
    agent.updated_at = now
    session.add(agent)
    bump_version(session, "agent", spiffe_id)
    session.flush()
    return _agent_public(session, agent)


def set_agent_status(
    session: Session, spiffe_id: str, status: Status, *, now: float
) -> AgentPublic:
    agent = session.get(Agent, spiffe_id)
    if agent is None:
        raise NotFound(f"no agent {spiffe_id}")
    if agent.status == Status.revoked and status != Status.revoked:
        raise Conflict("a revoked agent cannot be resumed; enroll it again")
    agent.status = status
    agent.updated_at = now
    session.add(agent)
    bump_version(session, "agent", spiffe_id)
    session.flush()
    return _agent_public(session, agent)


def delete_agent(session: Session, spiffe_id: str) -> None:
    agent = session.get(Agent, spiffe_id)
    if agent is None:
        raise NotFound(f"no agent {spiffe_id}")
    for cv in session.exec(
        select(CharterVersion).where(CharterVersion.agent_spiffe_id == spiffe_id)
    ):
        session.delete(cv)
    session.delete(agent)
    bump_version(session, "agent", spiffe_id)
    session.flush()


# --- gateways ------------------------------------------------------------------------


def _check_gateway_keys(auth_method: GatewayAuthMethod, jwks: dict[str, Any] | None) -> None:
    for jwk in (jwks or {}).get("keys", []) if isinstance(jwks, dict) else []:
        try:
            import_public_jwk(jwk)  # refuses private members and symmetric keys
        except JwksError as err:
            raise Invalid(f"gateway key: {err}") from err
    if auth_method is GatewayAuthMethod.private_key_jwt:
        keys = (jwks or {}).get("keys")
        if not isinstance(keys, list) or not keys:
            raise Invalid("private_key_jwt needs a JWKS with at least one public key")
        for jwk in keys:
            if not isinstance(jwk, dict) or not jwk.get("kid"):
                raise Invalid("every gateway key needs a kid")
            try:
                import_public_jwk(jwk)
            except JwksError as err:
                raise Invalid(f"gateway key {jwk.get('kid')}: {err}") from err


def _gateway_public(g: Gateway) -> GatewayPublic:
    return GatewayPublic.model_validate(g, from_attributes=True)


def create_gateway(session: Session, data: GatewayCreate, *, now: float) -> GatewayPublic:
    if session.get(Gateway, data.client_id) is not None:
        raise Conflict(f"gateway {data.client_id} is already registered")
    _check_gateway_keys(data.auth_method, data.jwks)
    g = Gateway(**data.model_dump(), status=Status.active, created_at=now, updated_at=now)
    session.add(g)
    bump_version(session, "gateway", data.client_id)
    session.flush()
    return _gateway_public(g)


def fetch_gateway(session: Session, client_id: str) -> GatewayPublic | None:
    g = session.get(Gateway, client_id)
    return None if g is None else _gateway_public(g)


def list_gateways(session: Session, *, offset: int = 0, limit: int = 100) -> list[GatewayPublic]:
    rows = session.exec(select(Gateway).order_by(Gateway.client_id).offset(offset).limit(limit))
    return [_gateway_public(g) for g in rows]


def update_gateway(
    session: Session, client_id: str, data: GatewayUpdate, *, now: float
) -> GatewayPublic:
    g = session.get(Gateway, client_id)
    if g is None:
        raise NotFound(f"no gateway {client_id}")
    for key, value in data.model_dump(exclude_unset=True).items():
        setattr(g, key, value)
    _check_gateway_keys(GatewayAuthMethod(g.auth_method), g.jwks)
    g.updated_at = now
    session.add(g)
    bump_version(session, "gateway", client_id)
    session.flush()
    return _gateway_public(g)


def set_gateway_status(
    session: Session, client_id: str, status: Status, *, now: float
) -> GatewayPublic:
    g = session.get(Gateway, client_id)
    if g is None:
        raise NotFound(f"no gateway {client_id}")
    g.status = status
    g.updated_at = now
    session.add(g)
    bump_version(session, "gateway", client_id)
    session.flush()
    return _gateway_public(g)


def delete_gateway(session: Session, client_id: str) -> None:
    g = session.get(Gateway, client_id)
    if g is None:
        raise NotFound(f"no gateway {client_id}")
    session.delete(g)
    bump_version(session, "gateway", client_id)
    session.flush()


# --- trust domains -------------------------------------------------------------------


def _td_public(t: TrustDomainRecord) -> TrustDomainPublic:
    keys = json.loads(t.bundle).get("keys", []) if t.bundle else []
    status = None
    if t.refresh_status is not None:
        try:
            status = BundleStatus.model_validate(t.refresh_status)
        except ValueError:
            status = None  # written by another version; the next refresh rewrites it
    return TrustDomainPublic(
        name=t.name,
        source=t.source,
        location=t.location,
        endpoint_profile=t.endpoint_profile,
        endpoint_spiffe_id=t.endpoint_spiffe_id,
        ca_file=t.ca_file,
        # the keys a replica last held; an inline bundle's own keys until one reports
        key_count=status.key_count if status and status.key_count is not None else len(keys),
        updated_at=t.updated_at,
        status=status,
    )


def record_bundle_status(
    session: Session, name: str, status: BundleStatus, latest_bundle: str | None
) -> None:
    """Keep a replica's view of the domain's last refresh, and its last good bundle when
    one was installed. Not a registry change: no version bump, no snapshot reload."""
    values: dict[str, Any] = {"refresh_status": status.model_dump()}
    if latest_bundle is not None:
        values["latest_bundle"] = latest_bundle
    session.execute(
        update(TrustDomainRecord).where(col(TrustDomainRecord.name) == name).values(**values)
    )


def create_trust_domain(
    session: Session, data: TrustDomainCreate, *, now: float
) -> TrustDomainPublic:
    if session.get(TrustDomainRecord, data.name) is not None:
        raise Conflict(f"trust domain {data.name} already exists")
    t = TrustDomainRecord(
        name=data.name,
        source=data.source,
        location=data.location,
        endpoint_profile=data.endpoint_profile,
        endpoint_spiffe_id=data.endpoint_spiffe_id,
        ca_file=data.ca_file,
        bundle=json.dumps(data.bundle) if data.bundle is not None else None,
        created_at=now,
        updated_at=now,
    )
    session.add(t)
    bump_version(session, "trust_domain", data.name)
    session.flush()
    return _td_public(t)


def fetch_trust_domain(session: Session, name: str) -> TrustDomainPublic | None:
    t = session.get(TrustDomainRecord, name)
    return None if t is None else _td_public(t)


def fetch_bundle(session: Session, name: str) -> dict[str, Any] | None:
    """The domain's stored bundle (inline, or an https_spiffe bootstrap), or None."""
    t = session.get(TrustDomainRecord, name)
    return None if t is None or t.bundle is None else dict(json.loads(t.bundle))


def list_trust_domains(session: Session) -> list[TrustDomainPublic]:
    return [
        _td_public(t)
        for t in session.exec(select(TrustDomainRecord).order_by(TrustDomainRecord.name))
    ]


def update_trust_domain(
    session: Session, name: str, data: TrustDomainUpdate, *, now: float
) -> TrustDomainPublic:
    t = session.get(TrustDomainRecord, name)
    if t is None:
        raise NotFound(f"no trust domain {name}")
    changes = data.model_dump(exclude_unset=True)
    if "bundle" in changes:
        bundle = changes.pop("bundle")
        t.bundle = None if bundle is None else json.dumps(bundle)
    if {"source", "location", "endpoint_profile", "endpoint_spiffe_id", "ca_file"} & set(changes):
        t.latest_bundle = None  # fetched from what is no longer the source
        t.refresh_status = None
    for key, value in changes.items():
        setattr(t, key, value)
    t.updated_at = now
    session.add(t)
    bump_version(session, "trust_domain", name)
    session.flush()
    return _td_public(t)


def delete_trust_domain(session: Session, name: str) -> None:
    t = session.get(TrustDomainRecord, name)
    if t is None:
        raise NotFound(f"no trust domain {name}")
    session.delete(t)
    bump_version(session, "trust_domain", name)
    session.flush()
