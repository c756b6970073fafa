"""The admin API under ``/v1``: trust domains, agents, gateways, admin tokens and signing keys.

Each route names the scope it needs and answers with a Public model, never a table row or a
secret (the one exception: a new admin token, shown once). A write commits in one
transaction, refreshes this replica's registry snapshot so it applies at once, and is
appended to the audit trail.
"""

# No ``from __future__ import annotations``: FastAPI reads the route signatures, whose
# scope aliases are local to ``admin_router``.
import json
import ssl
from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidatorFunctionWrapHandler, model_validator
from pydantic_core import PydanticCustomError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from broker.admin.auth import AdminApiError, forbidden, require_scope
from broker.admin.params import SpiffeIdPath, TrustDomainPath
from broker.admin.tokens import (
    AdminScope,
    AdminToken,
    AdminTokenCreate,
    AdminTokenIssued,
    AdminTokenPublic,
    create_admin_token,
    list_admin_tokens,
    revoke_admin_token,
)
from broker.audit.writer import AuditEvent, AuditUnavailable
from broker.revocation.service import announce_key_change
from broker.runtime import Broker, bundle_status
from broker.signing.keyring import KeyRingError
from broker.signing.store import SigningKeyPublic
from jwks.errors import JwksError
from jwks.keys import import_public_jwk
from registry import store
from registry.bundles.parse import BundleError, parse_bundle, parse_trust_domain
from registry.bundles.sources import check_endpoint_spiffe_id
from registry.errors import Conflict, Invalid, NotFound, RegistryError
from registry.issuers import check_ca_file_path
from registry.models import (
    AgentCreate,
    AgentPublic,
    AgentUpdate,
    BundleSourceKind,
    EndpointProfile,
    GatewayCreate,
    GatewayPublic,
    GatewayUpdate,
    Status,
    TrustDomainCreate,
    TrustDomainPublic,
    TrustDomainUpdate,
)
from registry.namespace import pattern_within, within

MAX_PAGE = 500
_LOCATION_MAX = 2048


class AdminRoute(APIRoute):
    """Renders admin and registry refusals as ``{"error", "error_description"}`` JSON and
    marks every admin answer ``no-store`` (a new admin token's secret travels in one)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except AdminApiError as err:
                response = JSONResponse(err.body(), err.status, headers=err.headers)
            except RegistryError as err:
                response = JSONResponse({"error": err.code, "error_description": str(err)},
                                        err.status)
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return route


# --- request bodies ------------------------------------------------------------------


class _PatternErrorsAreInvalid(BaseModel):
    """SPIFFE ID and pattern checks raise ``InvalidPattern``; turn it into a validation
    error so a bad ID answers 422 ``invalid_request`` rather than 500."""

    @model_validator(mode="wrap")
    @classmethod
    def _patterns(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(data)
        except JwksError as err:
            raise PydanticCustomError("invalid_spiffe_id", "{reason}",
                                      {"reason": str(err)}) from err


class AgentCreateBody(AgentCreate, _PatternErrorsAreInvalid):
    pass


class AgentUpdateBody(AgentUpdate, _PatternErrorsAreInvalid):
    pass


class GatewayCreateBody(GatewayCreate, _PatternErrorsAreInvalid):
    pass


class GatewayUpdateBody(GatewayUpdate, _PatternErrorsAreInvalid):
    pass


class AdminTokenCreateBody(AdminTokenCreate, _PatternErrorsAreInvalid):
    pass


class RotationPublic(BaseModel):
    activated_kid: str
    retired_kid: str
    next_kid: str


# --- checks (shared with the CLI) ----------------------------------------------------


def _no_nulls(data: BaseModel, *names: str) -> None:
    for name in names:
        if name in data.model_fields_set and getattr(data, name) is None:
            raise Invalid(f"{name} cannot be null")


def check_public_jwks(jwks: dict[str, Any] | None) -> None:
    """A gateway's JWKS is published back by the API: it must hold public keys only."""
    if jwks is None:
        return
    keys = jwks.get("keys")
    if not isinstance(keys, list):
        raise Invalid("jwks must have a 'keys' array")
    for jwk in keys:
        try:
            import_public_jwk(jwk)
        except JwksError as err:
            raise Invalid(f"jwks: {err}") from err


def check_trust_domain_name(name: str) -> None:
    try:
        parse_trust_domain(name)
    except BundleError as err:
        raise Invalid(str(err)) from err


def check_bundle(name: str, bundle: dict[str, Any], now: float) -> None:
    try:
        parse_bundle(name, json.dumps(bundle).encode(), now=now)
    except BundleError as err:
        raise Invalid(f"bundle: {err}") from err


def check_trust_domain_source(source: BundleSourceKind, location: str | None,
                              has_bundle: bool) -> None:
    if location is not None and len(location) > _LOCATION_MAX:
        raise Invalid(f"location is longer than {_LOCATION_MAX} characters")
    if source == BundleSourceKind.inline and not has_bundle:
        raise Invalid("an inline trust domain needs a bundle")
    if source == BundleSourceKind.file and not location:
        raise Invalid("a file trust domain needs the bundle file's path as location")
    if source == BundleSourceKind.endpoint:
        parts = urlsplit(location or "")
        # SPIFFE Trust Domain and Bundle §5.2.1: https_web bundle endpoints use https
        if parts.scheme != "https" or not parts.hostname or parts.username or parts.fragment:
            raise Invalid("an endpoint trust domain needs an https:// location without "
                          "userinfo or fragment")


def check_endpoint_options(name: str, source: BundleSourceKind, profile: str | None,
                           endpoint_spiffe_id: str | None, ca_file: str | None,
                           bundle: dict[str, Any] | None, now: float) -> None:
    """The endpoint profile's parameters (SPIFFE Federation §5.1, §5.2), and nothing
    that the source would silently ignore."""
    if source != BundleSourceKind.endpoint:
        if profile is not None or endpoint_spiffe_id is not None or ca_file is not None:
            raise Invalid("endpoint_profile, endpoint_spiffe_id and ca_file are for endpoint "
                          "trust domains only")
        return
    if profile == EndpointProfile.https_spiffe:
        if ca_file is not None:
            raise Invalid("ca_file is for https_web; https_spiffe trusts the bundle's own CAs")
        if endpoint_spiffe_id is None:
            raise Invalid("https_spiffe needs the endpoint's SPIFFE ID (endpoint_spiffe_id)")
        try:
            check_endpoint_spiffe_id(endpoint_spiffe_id, name)
        except BundleError as err:
            raise Invalid(str(err)) from err
        if bundle is None:
            raise Invalid("https_spiffe needs the trust domain's bundle to bootstrap from "
                          "(SPIFFE Federation §5.2.2.2)")
        try:
            parsed = parse_bundle(name, json.dumps(bundle).encode(), now=now)
        except BundleError as err:
            raise Invalid(f"bundle: {err}") from err
        if not parsed.x509_authorities:
            raise Invalid("the bootstrap bundle has no x509-svid CA to authenticate the "
                          "endpoint with")
        return
    if endpoint_spiffe_id is not None:
        raise Invalid("endpoint_spiffe_id is for https_spiffe endpoints only")
    if bundle is not None:
        raise Invalid("an https_web endpoint takes no bundle; it is fetched")
    if ca_file is not None:
        try:
            check_ca_file_path(ca_file)
            ssl.create_default_context(cafile=ca_file)
        except ValueError as err:
            raise Invalid(str(err)) from err
        except (OSError, ssl.SSLError) as err:
            raise Invalid(f"ca_file {ca_file} is not a readable PEM file of CA certificates "
                          "on this replica") from err


def _bound(principal: AdminToken) -> tuple[str, ...]:
    return tuple(principal.namespaces)


def _check_agent_bounds(principal: AdminToken, spiffe_id: str) -> None:
    namespaces = _bound(principal)
    if namespaces and not within(spiffe_id, namespaces):
        raise forbidden("this admin token may not manage agents outside its namespaces")


def _check_gateway_bounds(principal: AdminToken, agent_namespaces: list[str]) -> None:
    # DESIGN §4: a registrar bound to namespaces cannot let a gateway speak beyond them
    namespaces = _bound(principal)
    if namespaces and not all(pattern_within(p, namespaces) for p in agent_namespaces):
        raise forbidden("this admin token may not let a gateway speak for agents outside "
                        "its namespaces")


def _check_token_grant(principal: AdminToken, scopes: list[str], namespaces: list[str]) -> None:
    """No admin token mints or revokes one broader than itself."""
    if not set(scopes) <= set(principal.scopes):
        raise forbidden("an admin token cannot manage a token with scopes it does not hold")
    bound = _bound(principal)
    if bound and (not namespaces or not all(pattern_within(p, bound) for p in namespaces)):
        raise forbidden("an admin token cannot manage a token wider than its namespaces")


def commit_or_conflict(session: Session) -> None:
    try:
        session.commit()
    except IntegrityError as err:  # a concurrent write took the same key
        session.rollback()
        raise Conflict("a concurrent change conflicts with this one") from err


def record_change(broker: Broker, event: AuditEvent) -> None:
    """DESIGN §7: every registry change is an audit record; never a secret in it. The change
    is saved by then, so a record that cannot be written is a 503 that says so."""
    try:
        broker.audit.record_sync(event)
    except AuditUnavailable as err:
        raise AdminApiError(503, "temporarily_unavailable",
                            "the change was saved but its audit record could not be "
                            "written; check the audit store") from err


def _page_within(fetch: Callable[[int, int], list[AgentPublic]], namespaces: tuple[str, ...],
                 offset: int, limit: int) -> list[AgentPublic]:
    """Page through agents keeping those inside ``namespaces``."""
    out: list[AgentPublic] = []
    seen, skipped = 0, 0
    while len(out) < limit:
        rows = fetch(seen, MAX_PAGE)
        if not rows:
            break
        seen += len(rows)
        for agent in rows:
            if not within(agent.spiffe_id, namespaces):
                continue
            if skipped < offset:
                skipped += 1
            elif len(out) < limit:
                out.append(agent)
    return out


# --- the router ----------------------------------------------------------------------


def admin_router(broker: Broker) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["admin"], route_class=AdminRoute)

    def scope(s: AdminScope) -> Any:
        return Depends(require_scope(broker, s))

    TdRead = Annotated[AdminToken, scope(AdminScope.trust_domains_read)]
    TdWrite = Annotated[AdminToken, scope(AdminScope.trust_domains_write)]
    AgentsRead = Annotated[AdminToken, scope(AdminScope.agents_read)]
    AgentsWrite = Annotated[AdminToken, scope(AdminScope.agents_write)]
    GatewaysRead = Annotated[AdminToken, scope(AdminScope.gateways_read)]
    GatewaysWrite = Annotated[AdminToken, scope(AdminScope.gateways_write)]
    TokensWrite = Annotated[AdminToken, scope(AdminScope.admin_tokens_write)]
    KeysRead = Annotated[AdminToken, scope(AdminScope.keys_read)]
    KeysWrite = Annotated[AdminToken, scope(AdminScope.keys_write)]
    Offset = Annotated[int, Query(ge=0)]
    Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]

    def audit(principal: AdminToken, reason: str, *, agent: str | None = None,
              gateway: str | None = None, **detail: Any) -> None:
        record_change(broker, AuditEvent(kind="admin", decision="changed", reason=reason,
                                         agent=agent, gateway=gateway,
                                         detail={"by": principal.id, **detail}))

    def changed(principal: AdminToken, reason: str, **kwargs: Any) -> None:
        broker.snapshots.refresh()  # this replica applies the change at once (DESIGN §6)
        audit(principal, reason, **kwargs)

    # --- trust domains ---------------------------------------------------------------

    def live(td: TrustDomainPublic) -> TrustDomainPublic:
        # this replica's own view of the bundle, over what the last refresh recorded
        status = broker.bundles.status().get(td.name)
        if status is None:
            return td
        now = bundle_status(status, replica=broker.replica)
        return td.model_copy(update={"status": now, "key_count": now.key_count or 0})

    @router.post("/trust-domains", status_code=201, response_model=TrustDomainPublic)
    def create_trust_domain(body: TrustDomainCreate, principal: TdWrite) -> TrustDomainPublic:
        check_trust_domain_name(body.name)
        check_trust_domain_source(body.source, body.location, body.bundle is not None)
        check_endpoint_options(body.name, body.source, body.endpoint_profile,
                               body.endpoint_spiffe_id, body.ca_file, body.bundle, broker.clock())
        if body.bundle is not None:
            check_bundle(body.name, body.bundle, broker.clock())
        with Session(broker.engine) as session:
            td = store.create_trust_domain(session, body, now=broker.clock())
            commit_or_conflict(session)
        changed(principal, "trust_domain.created", trust_domain=td.name, source=str(td.source))
        return live(td)

    @router.get("/trust-domains", response_model=list[TrustDomainPublic])
    def list_trust_domains(principal: TdRead) -> list[TrustDomainPublic]:
        with Session(broker.engine) as session:
            return [live(td) for td in store.list_trust_domains(session)]

    @router.get("/trust-domains/{name:path}", response_model=TrustDomainPublic)
    def show_trust_domain(name: TrustDomainPath, principal: TdRead) -> TrustDomainPublic:
        with Session(broker.engine) as session:
            td = store.fetch_trust_domain(session, name)
        if td is None:
            raise NotFound(f"no trust domain {name}")
        return live(td)

    @router.patch("/trust-domains/{name:path}", response_model=TrustDomainPublic)
    def update_trust_domain(name: TrustDomainPath, body: TrustDomainUpdate,
                            principal: TdWrite) -> TrustDomainPublic:
        _no_nulls(body, "source", "bundle")
        with Session(broker.engine) as session:
            current = store.fetch_trust_domain(session, name)
            if current is None:
                raise NotFound(f"no trust domain {name}")
            fields = body.model_fields_set
            check_trust_domain_source(
                body.source or current.source,
                body.location if "location" in fields else current.location,
                body.bundle is not None or current.key_count > 0,
            )
            if fields & {"source", "endpoint_profile", "endpoint_spiffe_id", "ca_file",
                         "bundle"}:
                merged = {f: getattr(body, f) if f in fields else getattr(current, f)
                          for f in ("endpoint_profile", "endpoint_spiffe_id", "ca_file")}
                bootstrap = body.bundle
                if "bundle" not in fields and merged["endpoint_profile"] == "https_spiffe":
                    bootstrap = store.fetch_bundle(session, name)
                check_endpoint_options(name, body.source or current.source,
                                       merged["endpoint_profile"],
                                       merged["endpoint_spiffe_id"], merged["ca_file"],
                                       bootstrap, broker.clock())
            if body.bundle is not None:
                check_bundle(name, body.bundle, broker.clock())
            td = store.update_trust_domain(session, name, body, now=broker.clock())
            commit_or_conflict(session)
        changed(principal, "trust_domain.updated", trust_domain=name, changed=sorted(fields))
        return live(td)

    @router.delete("/trust-domains/{name:path}", status_code=204, response_class=Response)
    def delete_trust_domain(name: TrustDomainPath, principal: TdWrite) -> Response:
        with Session(broker.engine) as session:
            store.delete_trust_domain(session, name)
            commit_or_conflict(session)
        changed(principal, "trust_domain.removed", trust_domain=name)
        return Response(status_code=204)

    # --- agents ----------------------------------------------------------------------

    @router.post("/agents", status_code=201, response_model=AgentPublic)
    def create_agent(body: AgentCreateBody, principal: AgentsWrite) -> AgentPublic:
        _check_agent_bounds(principal, body.spiffe_id)
        with Session(broker.engine) as session:
            agent = store.create_agent(session, body, now=broker.clock(), by=principal.id)
            commit_or_conflict(session)
        changed(principal, "agent.created", agent=agent.spiffe_id,
                charter_version=agent.charter_version, charter_hash=agent.charter_hash)
        return agent

    @router.get("/agents", response_model=list[AgentPublic])
    def list_agents(principal: AgentsRead, offset: Offset = 0,
                    limit: Limit = 100) -> list[AgentPublic]:
        with Session(broker.engine) as session:
            if not principal.namespaces:
                return store.list_agents(session, offset=offset, limit=limit)
            return _page_within(lambda o, n: store.list_agents(session, offset=o, limit=n),
                                _bound(principal), offset, limit)

    @router.get("/agents/{spiffe_id:path}", response_model=AgentPublic)
    def show_agent(spiffe_id: SpiffeIdPath, principal: AgentsRead) -> AgentPublic:
        _check_agent_bounds(principal, spiffe_id)
        with Session(broker.engine) as session:
            agent = store.fetch_agent(session, spiffe_id)
        if agent is None:
            raise NotFound(f"no agent {spiffe_id}")
        return agent

    @router.patch("/agents/{spiffe_id:path}", response_model=AgentPublic)
    def update_agent(spiffe_id: SpiffeIdPath, body: AgentUpdateBody,
                     principal: AgentsWrite) -> AgentPublic:
        _check_agent_bounds(principal, spiffe_id)
        _no_nulls(body, "owner", "description", "charter")
        with Session(broker.engine) as session:
            agent = store.update_agent(session, spiffe_id, body, now=broker.clock(),
                                       by=principal.id)
            commit_or_conflict(session)
        changed(principal, "agent.updated", agent=spiffe_id, changed=sorted(body.model_fields_set),
                charter_version=agent.charter_version, charter_hash=agent.charter_hash)
        return agent

    def set_agent_status(spiffe_id: str, status: Status, principal: AdminToken,
                         reason: str) -> AgentPublic:
        _check_agent_bounds(principal, spiffe_id)
        with Session(broker.engine) as session:
            agent = store.set_agent_status(session, spiffe_id, status, now=broker.clock())
            commit_or_conflict(session)
        changed(principal, reason, agent=spiffe_id)
        return agent

    @router.post("/agents/{spiffe_id:path}/suspend", response_model=AgentPublic)
    def suspend_agent(spiffe_id: SpiffeIdPath, principal: AgentsWrite) -> AgentPublic:
        return set_agent_status(spiffe_id, Status.suspended, principal, "agent.suspended")

    @router.post("/agents/{spiffe_id:path}/resume", response_model=AgentPublic)
    def resume_agent(spiffe_id: SpiffeIdPath, principal: AgentsWrite) -> AgentPublic:
        return set_agent_status(spiffe_id, Status.active, principal, "agent.resumed")

    @router.delete("/agents/{spiffe_id:path}", status_code=204, response_class=Response)
    def delete_agent(spiffe_id: SpiffeIdPath, principal: AgentsWrite) -> Response:
        _check_agent_bounds(principal, spiffe_id)
        with Session(broker.engine) as session:
            store.delete_agent(session, spiffe_id)
            commit_or_conflict(session)
        changed(principal, "agent.removed", agent=spiffe_id)
        return Response(status_code=204)

    # --- gateways --------------------------------------------------------------------

    def existing_gateway(session: Session, client_id: str) -> GatewayPublic:
        gateway = store.fetch_gateway(session, client_id)
        if gateway is None:
            raise NotFound(f"no gateway {client_id}")
        return gateway

    @router.post("/gateways", status_code=201, response_model=GatewayPublic)
    def create_gateway(body: GatewayCreateBody, principal: GatewaysWrite) -> GatewayPublic:
        _check_gateway_bounds(principal, body.agent_namespaces)
        check_public_jwks(body.jwks)
        with Session(broker.engine) as session:
            gateway = store.create_gateway(session, body, now=broker.clock())
            commit_or_conflict(session)
        changed(principal, "gateway.created", gateway=gateway.client_id,
                auth_method=str(gateway.auth_method), agent_namespaces=gateway.agent_namespaces)
        return gateway

    @router.get("/gateways", response_model=list[GatewayPublic])
    def list_gateways(principal: GatewaysRead, offset: Offset = 0,
                      limit: Limit = 100) -> list[GatewayPublic]:
        with Session(broker.engine) as session:
            return store.list_gateways(session, offset=offset, limit=limit)

    @router.get("/gateways/{client_id:path}", response_model=GatewayPublic)
    def show_gateway(client_id: SpiffeIdPath, principal: GatewaysRead) -> GatewayPublic:
        with Session(broker.engine) as session:
            return existing_gateway(session, client_id)

    @router.patch("/gateways/{client_id:path}", response_model=GatewayPublic)
    def update_gateway(client_id: SpiffeIdPath, body: GatewayUpdateBody,
                       principal: GatewaysWrite) -> GatewayPublic:
        _no_nulls(body, "description", "agent_namespaces", "token_types")
        check_public_jwks(body.jwks)
        with Session(broker.engine) as session:
            current = existing_gateway(session, client_id)
            _check_gateway_bounds(principal, current.agent_namespaces)
            if body.agent_namespaces is not None:
                _check_gateway_bounds(principal, body.agent_namespaces)
            gateway = store.update_gateway(session, client_id, body, now=broker.clock())
            commit_or_conflict(session)
        changed(principal, "gateway.updated", gateway=client_id,
                changed=sorted(body.model_fields_set))
        return gateway

    def set_gateway_status(client_id: str, status: Status, principal: AdminToken,
                           reason: str) -> GatewayPublic:
        with Session(broker.engine) as session:
            _check_gateway_bounds(principal, existing_gateway(session, client_id).agent_namespaces)
            gateway = store.set_gateway_status(session, client_id, status, now=broker.clock())
            commit_or_conflict(session)
        changed(principal, reason, gateway=client_id)
        return gateway

    @router.post("/gateways/{client_id:path}/suspend", response_model=GatewayPublic)
    def suspend_gateway(client_id: SpiffeIdPath, principal: GatewaysWrite) -> GatewayPublic:
        return set_gateway_status(client_id, Status.suspended, principal, "gateway.suspended")

    @router.post("/gateways/{client_id:path}/resume", response_model=GatewayPublic)
    def resume_gateway(client_id: SpiffeIdPath, principal: GatewaysWrite) -> GatewayPublic:
        return set_gateway_status(client_id, Status.active, principal, "gateway.resumed")

    @router.delete("/gateways/{client_id:path}", status_code=204, response_class=Response)
    def delete_gateway(client_id: SpiffeIdPath, principal: GatewaysWrite) -> Response:
        with Session(broker.engine) as session:
            _check_gateway_bounds(principal, existing_gateway(session, client_id).agent_namespaces)
            store.delete_gateway(session, client_id)
            commit_or_conflict(session)
        changed(principal, "gateway.removed", gateway=client_id)
        return Response(status_code=204)

    # --- admin tokens ----------------------------------------------------------------

    @router.post("/admin-tokens", status_code=201, response_model=AdminTokenIssued)
    def create_token(body: AdminTokenCreateBody, principal: TokensWrite) -> AdminTokenIssued:
        _check_token_grant(principal, body.scopes, body.namespaces)
        now = broker.clock()
        if body.expires_at is not None and body.expires_at <= now:
            raise Invalid("expires_at must be in the future")
        with Session(broker.engine) as session:
            issued = create_admin_token(session, body, now=now, by=principal.id)
            commit_or_conflict(session)
        audit(principal, "admin_token.created", token_id=issued.id, name=issued.name,
              scopes=issued.scopes, namespaces=issued.namespaces)
        return issued

    @router.get("/admin-tokens", response_model=list[AdminTokenPublic])
    def list_tokens(principal: TokensWrite) -> list[AdminTokenPublic]:
        with Session(broker.engine) as session:
            return list_admin_tokens(session)

    @router.delete("/admin-tokens/{token_id}", status_code=204, response_class=Response)
    def revoke_token(token_id: str, principal: TokensWrite) -> Response:
        with Session(broker.engine) as session:
            row = session.get(AdminToken, token_id)
            if row is None:
                raise NotFound(f"no admin token {token_id}")
            _check_token_grant(principal, row.scopes, row.namespaces)
            if row.revoked_at is None:  # revoking twice keeps the first time
                revoke_admin_token(session, token_id, now=broker.clock())
                commit_or_conflict(session)
                audit(principal, "admin_token.revoked", token_id=token_id)
        return Response(status_code=204)

    # --- signing keys ----------------------------------------------------------------

    @router.get("/keys", response_model=list[SigningKeyPublic])
    def list_keys(principal: KeysRead) -> list[SigningKeyPublic]:
        return broker.keyring.list_keys()

    @router.post("/keys/rotate", response_model=RotationPublic)
    def rotate_keys(principal: KeysWrite, force: bool = False) -> RotationPublic:
        try:
            result = broker.keyring.rotate(force=force)
        except KeyRingError as err:
            raise Conflict(str(err)) from err
        announce_key_change(broker.engine)  # other replicas reload their keys at once
        broker.snapshots.refresh()
        audit(principal, "keys.rotated", activated_kid=result.activated_kid,
              retired_kid=result.retired_kid, next_kid=result.next_kid, forced=force)
        return RotationPublic(activated_kid=result.activated_kid,
                              retired_kid=result.retired_kid, next_kid=result.next_kid)

    return router
