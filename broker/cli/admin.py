"""Admin commands of ``writ`` over the local database (DESIGN §7: a CLI for every admin task).

They read the same settings as ``writ serve`` (``--data-dir``, ``WRIT_DATABASE_URL``,
``WRIT_KEYS_KEK`` ...), apply migrations first, and append an audit record for every write.
Show and list print JSON on stdout; a new admin token is printed alone on stdout; every
other message goes to stderr. Errors are one line on stderr and exit code 1.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlmodel import Session

from broker.admin.routes import (
    RotationPublic,
    check_bundle,
    check_endpoint_options,
    check_public_jwks,
    check_trust_domain_name,
    check_trust_domain_source,
)
from broker.admin.tokens import (
    AdminToken,
    AdminTokenCreate,
    create_admin_token,
    list_admin_tokens,
    revoke_admin_token,
)
from broker.cli.common import (
    BY,
    DEFAULT_DATA_DIR,
    AuthMethod,
    ClientIdArg,
    CommandError,
    DataDir,
    JwksFile,
    Limit,
    Offset,
    SpiffeIdArg,
    note,
    open_local,
    print_json,
    read_charter,
    read_json_object,
    remove_one,
    set_status,
    show_one,
)
from broker.cli.issuers import issuers_app
from broker.revocation.service import announce_key_change
from registry import store
from registry.errors import NotFound
from registry.models import (
    AgentCreate,
    AgentUpdate,
    BundleSourceKind,
    EndpointProfile,
    GatewayAuthMethod,
    GatewayCreate,
    Status,
    TrustDomainCreate,
)

admin_tokens_app = typer.Typer(help="Scoped admin tokens for the /v1 admin API.",
                               no_args_is_help=True)
agents_app = typer.Typer(help="Enrolled agents and their charters.", no_args_is_help=True)
gateways_app = typer.Typer(help="Gateways allowed to ask for tokens.", no_args_is_help=True)
trust_domains_app = typer.Typer(help="SPIFFE trust domains and their bundles.",
                                no_args_is_help=True)
keys_app = typer.Typer(help="Writ's signing keys.", no_args_is_help=True)

def register(app: typer.Typer) -> None:
    """Add the admin sub-commands to the main ``writ`` app."""
    app.add_typer(admin_tokens_app, name="admin-tokens")
    app.add_typer(agents_app, name="agents")
    app.add_typer(gateways_app, name="gateways")
    app.add_typer(trust_domains_app, name="trust-domains")
    app.add_typer(keys_app, name="keys")
    app.add_typer(issuers_app, name="issuers")


# --- admin tokens --------------------------------------------------------------------


@admin_tokens_app.command("create")
def admin_tokens_create(
    name: Annotated[str, typer.Option("--name", help="What the token is for.")],
    scope: Annotated[list[str], typer.Option("--scope", help="A scope it grants (repeat).")],
    namespace: Annotated[list[str] | None, typer.Option(
        "--namespace", help="SPIFFE pattern it may manage agents under (repeat); "
        "none = anywhere.")] = None,
    expires_in_s: Annotated[int | None, typer.Option(
        "--expires-in-s", min=1, help="Lifetime in seconds (default: no expiry).")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Create an admin token and print it once, alone on stdout."""
    with open_local(data_dir) as local:
        now = time.time()
        data = AdminTokenCreate(name=name, scopes=scope, namespaces=namespace or [],
                                expires_at=None if expires_in_s is None else now + expires_in_s)
        with Session(local.engine) as session:
            issued = create_admin_token(session, data, now=now, by=BY)
            session.commit()
        local.audit("admin_token.created", token_id=issued.id, name=issued.name,
                    scopes=issued.scopes, namespaces=issued.namespaces)
        note(f"created admin token {issued.id} ({issued.name}) with scopes "
              f"{' '.join(issued.scopes)}; it is shown only this once")
        typer.echo(issued.token)


@admin_tokens_app.command("list")
def admin_tokens_list(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """List admin tokens (never their secrets)."""
    with open_local(data_dir) as local, Session(local.engine) as session:
        print_json(list_admin_tokens(session))


@admin_tokens_app.command("revoke")
def admin_tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Revoke an admin token at once."""
    with open_local(data_dir) as local:
        with Session(local.engine) as session:
            row = session.get(AdminToken, token_id)
            if row is None:
                raise NotFound(f"no admin token {token_id}")
            first = row.revoked_at is None
            if first:  # revoking twice keeps the first time
                revoke_admin_token(session, token_id, now=time.time())
                session.commit()
        if first:
            local.audit("admin_token.revoked", token_id=token_id)
        note(f"admin token {token_id} revoked")


# --- agents --------------------------------------------------------------------------


@agents_app.command("enroll")
def agents_enroll(
    spiffe_id: Annotated[str, typer.Option("--spiffe-id", help="The agent's SPIFFE ID.")],
    owner: Annotated[str, typer.Option("--owner", help="Who answers for the agent.")],
    charter: Annotated[Path, typer.Option("--charter", help="The charter, a JSON file.")],
    description: Annotated[str, typer.Option("--description")] = "",
    expires_at: Annotated[float | None, typer.Option(
        "--expires-at", help="End of the enrollment, epoch seconds.")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Enroll an agent with its first charter."""
    with open_local(data_dir) as local:
        data = AgentCreate(spiffe_id=spiffe_id, owner=owner, description=description,
                           enrollment_expires_at=expires_at, charter=read_charter(charter))
        with Session(local.engine) as session:
            agent = store.create_agent(session, data, now=time.time(), by=BY)
            session.commit()
        local.audit("agent.created", agent=agent.spiffe_id,
                    charter_version=agent.charter_version, charter_hash=agent.charter_hash)
        print_json(agent)


@agents_app.command("list")
def agents_list(
    offset: Offset = 0,
    limit: Limit = 100,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """List enrolled agents."""
    with open_local(data_dir) as local, Session(local.engine) as session:
        print_json(store.list_agents(session, offset=offset, limit=limit))


@agents_app.command("show")
def agents_show(spiffe_id: SpiffeIdArg, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Show one agent with its current charter."""
    show_one(data_dir, store.fetch_agent, spiffe_id, "agent")


@agents_app.command("update")
def agents_update(
    spiffe_id: SpiffeIdArg,
    charter: Annotated[Path | None, typer.Option(
        "--charter", help="A new charter (JSON file): makes a new version.")] = None,
    owner: Annotated[str | None, typer.Option("--owner")] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    expires_at: Annotated[float | None, typer.Option(
        "--expires-at", help="End of the enrollment, epoch seconds.")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Change an agent's owner, description, expiry or charter."""
    with open_local(data_dir) as local:
        changes: dict[str, Any] = {k: v for k, v in {
            "owner": owner, "description": description, "enrollment_expires_at": expires_at,
        }.items() if v is not None}
        if charter is not None:
            changes["charter"] = read_charter(charter)
        if not changes:
            raise CommandError("nothing to change: give --charter, --owner, --description "
                               "or --expires-at")
        data = AgentUpdate(**changes)
        with Session(local.engine) as session:
            agent = store.update_agent(session, spiffe_id, data, now=time.time(), by=BY)
            session.commit()
        local.audit("agent.updated", agent=spiffe_id, changed=sorted(changes),
                    charter_version=agent.charter_version, charter_hash=agent.charter_hash)
        print_json(agent)




@agents_app.command("suspend")
def agents_suspend(spiffe_id: SpiffeIdArg, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Suspend an agent: it gets no token until resumed."""
    set_status(data_dir, store.set_agent_status, spiffe_id, Status.suspended,
                "agent.suspended", agent=spiffe_id)


@agents_app.command("resume")
def agents_resume(spiffe_id: SpiffeIdArg, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Resume a suspended agent."""
    set_status(data_dir, store.set_agent_status, spiffe_id, Status.active, "agent.resumed",
                agent=spiffe_id)


@agents_app.command("remove")
def agents_remove(spiffe_id: SpiffeIdArg, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Remove an agent and its charter versions."""
    remove_one(data_dir, store.delete_agent, spiffe_id, "agent", "agent.removed", agent=spiffe_id)


# --- gateways ------------------------------------------------------------------------


@gateways_app.command("add")
def gateways_add(
    client_id: Annotated[str, typer.Option("--client-id", help="The gateway's SPIFFE ID.")],
    namespace: Annotated[list[str], typer.Option(
        "--namespace", help="SPIFFE pattern of agents it may speak for (repeat).")],
    auth_method: AuthMethod = GatewayAuthMethod.jwt_spiffe,
    jwks: JwksFile = None,
    description: Annotated[str, typer.Option("--description")] = "",
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Register a gateway."""
    with open_local(data_dir) as local:
        keys = None if jwks is None else read_json_object(jwks, "JWKS")
        check_public_jwks(keys)
        data = GatewayCreate(client_id=client_id, auth_method=auth_method, jwks=keys,
                             description=description, agent_namespaces=namespace)
        with Session(local.engine) as session:
            gateway = store.create_gateway(session, data, now=time.time())
            session.commit()
        local.audit("gateway.created", gateway=gateway.client_id,
                    auth_method=str(gateway.auth_method),
                    agent_namespaces=gateway.agent_namespaces)
        print_json(gateway)


@gateways_app.command("list")
def gateways_list(
    offset: Offset = 0,
    limit: Limit = 100,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """List gateways."""
    with open_local(data_dir) as local, Session(local.engine) as session:
        print_json(store.list_gateways(session, offset=offset, limit=limit))


@gateways_app.command("show")
def gateways_show(client_id: ClientIdArg, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Show one gateway."""
    show_one(data_dir, store.fetch_gateway, client_id, "gateway")


@gateways_app.command("suspend")
def gateways_suspend(client_id: ClientIdArg, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Suspend a gateway: it is refused at /token until resumed."""
    set_status(data_dir, store.set_gateway_status, client_id, Status.suspended,
                "gateway.suspended", gateway=client_id)


@gateways_app.command("resume")
def gateways_resume(client_id: ClientIdArg, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Resume a suspended gateway."""
    set_status(data_dir, store.set_gateway_status, client_id, Status.active,
                "gateway.resumed", gateway=client_id)


@gateways_app.command("remove")
def gateways_remove(client_id: ClientIdArg, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Remove a gateway."""
    remove_one(data_dir, store.delete_gateway, client_id, "gateway", "gateway.removed",
            gateway=client_id)


# --- trust domains -------------------------------------------------------------------


@trust_domains_app.command("add")
def trust_domains_add(
    name: Annotated[str, typer.Argument(help="The trust domain name, e.g. example.org.")],
    bundle_file: Annotated[Path | None, typer.Option(
        "--bundle-file", help="A SPIFFE bundle file, read again on every refresh.")] = None,
    inline: Annotated[bool, typer.Option(
        "--inline", help="Store the --bundle-file content now instead of reading the file "
        "later.")] = False,
    endpoint: Annotated[str | None, typer.Option(
        "--endpoint", help="A SPIFFE bundle endpoint URL.")] = None,
    profile: Annotated[EndpointProfile, typer.Option(
        "--profile", help="How the --endpoint is authenticated: https_web (Web PKI, or "
        "--ca-file) or https_spiffe (its X509-SVID, with --endpoint-spiffe-id and "
        "--bootstrap-bundle).")] = EndpointProfile.https_web,
    endpoint_spiffe_id: Annotated[str | None, typer.Option(
        "--endpoint-spiffe-id", help="https_spiffe: the SPIFFE ID of the endpoint's "
        "X509-SVID, in this trust domain.")] = None,
    bootstrap_bundle: Annotated[Path | None, typer.Option(
        "--bootstrap-bundle", help="https_spiffe: the trust domain's current SPIFFE bundle, "
        "with its x509-svid CAs, obtained out of band; used until the first fetch.")] = None,
    ca_file: Annotated[Path | None, typer.Option(
        "--ca-file", help="https_web: a PEM file of the CAs trusted for this endpoint alone "
        "(else the system store).")] = None,
    workload_api: Annotated[str | None, typer.Option(
        "--workload-api", help="The Workload API socket of a SPIRE agent.")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Trust a SPIFFE trust domain's JWT-SVIDs, from a bundle file, endpoint or Workload API."""
    with open_local(data_dir) as local:
        given = [s for s in (bundle_file, endpoint, workload_api) if s is not None]
        if len(given) != 1:
            raise CommandError("give exactly one of --bundle-file, --endpoint, --workload-api")
        if inline and bundle_file is None:
            raise CommandError("--inline needs --bundle-file")
        endpoint_only = (endpoint_spiffe_id, bootstrap_bundle, ca_file)
        if endpoint is None and (any(o is not None for o in endpoint_only)
                                 or profile != EndpointProfile.https_web):
            raise CommandError("--profile, --endpoint-spiffe-id, --bootstrap-bundle and "
                               "--ca-file need --endpoint")
        check_trust_domain_name(name)
        bundle: dict[str, Any] | None = None
        location: str | None
        endpoint_options: dict[str, Any] = {}
        if bundle_file is not None:
            bundle = read_json_object(bundle_file, "bundle")
            check_bundle(name, bundle, time.time())
            source = BundleSourceKind.inline if inline else BundleSourceKind.file
            location = None if inline else str(bundle_file.resolve())
            if not inline:
                bundle = None  # the file is read again on every refresh
        elif endpoint is not None:
            source, location = BundleSourceKind.endpoint, endpoint
            if bootstrap_bundle is not None:
                bundle = read_json_object(bootstrap_bundle, "bootstrap bundle")
                check_bundle(name, bundle, time.time())
            endpoint_options = {
                "endpoint_profile": profile.value, "endpoint_spiffe_id": endpoint_spiffe_id,
                "ca_file": None if ca_file is None else str(ca_file.resolve())}
            check_endpoint_options(name, source, bundle=bundle, now=time.time(),
                                   profile=profile.value, endpoint_spiffe_id=endpoint_spiffe_id,
                                   ca_file=endpoint_options["ca_file"])
        else:
            source, location = BundleSourceKind.workload_api, workload_api
        check_trust_domain_source(source, location, bundle is not None)
        data = TrustDomainCreate(name=name, source=source, location=location, bundle=bundle,
                                 **endpoint_options)
        with Session(local.engine) as session:
            td = store.create_trust_domain(session, data, now=time.time())
            session.commit()
        local.audit("trust_domain.created", trust_domain=td.name, source=str(td.source))
        print_json(td)


@trust_domains_app.command("list")
def trust_domains_list(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """List trusted trust domains."""
    with open_local(data_dir) as local, Session(local.engine) as session:
        print_json(store.list_trust_domains(session))


@trust_domains_app.command("show")
def trust_domains_show(
    name: Annotated[str, typer.Argument(help="The trust domain name.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Show one trust domain, with its bundle's last refresh as a replica recorded it."""
    show_one(data_dir, store.fetch_trust_domain, name, "trust domain")


@trust_domains_app.command("remove")
def trust_domains_remove(
    name: Annotated[str, typer.Argument(help="The trust domain name.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Stop trusting a trust domain."""
    remove_one(data_dir, store.delete_trust_domain, name, "trust domain", "trust_domain.removed",
            trust_domain=name)


# --- signing keys --------------------------------------------------------------------


@keys_app.command("list")
def keys_list(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """List Writ's signing keys (public halves only)."""
    with open_local(data_dir) as local:
        print_json(local.keyring().list_keys())


@keys_app.command("rotate")
def keys_rotate(
    force: Annotated[bool, typer.Option(
        "--force", help="Rotate even if the next key has not been published for "
        "publish_grace_s (an emergency).")] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """next -> active, active -> retired, and a new next key."""
    with open_local(data_dir) as local:
        ring = local.keyring()
        created = ring.bootstrap()  # a fresh database gets its first keys, as `writ serve` would
        if created:
            local.audit("keys.created", keys=created)
        result = ring.rotate(force=force)
        announce_key_change(local.engine)  # running replicas reload their keys at once
        local.audit("keys.rotated", activated_kid=result.activated_kid,
                    retired_kid=result.retired_kid, next_kid=result.next_kid, forced=force)
        print_json(RotationPublic(activated_kid=result.activated_kid,
                              retired_kid=result.retired_kid, next_kid=result.next_kid))
