"""``writ revoke ...``, ``writ revocations list``, ``writ resource-servers ...`` and
``writ audit query``, over the local database like the other admin commands.

A revocation written here reaches every running replica within the snapshot's bound: the
write bumps ``registry_version`` (PostgreSQL NOTIFY, else the version poll).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Literal

import typer
from sqlmodel import Session

from broker.audit.query import AuditFilter, query_audit
from broker.auth.resource_servers import (
    ResourceServerCreate,
    create_resource_server,
    delete_resource_server,
    fetch_resource_server,
    list_resource_servers,
    set_resource_server_status,
)
from broker.cli.common import (
    BY,
    DEFAULT_DATA_DIR,
    AuthMethod,
    DataDir,
    JwksFile,
    Limit,
    Offset,
    canonical_spiffe_id,
    canonical_spiffe_id_or_none,
    note,
    one_line_errors,
    open_local,
    print_json,
    read_json_object,
    remove_one,
    require_database,
    set_status,
    show_one,
)
from broker.db import make_engine
from broker.revocation.revoked import RevocationKind
from broker.revocation.service import revocation_event, store_revocation
from broker.revocation.store import RevocationCreate, list_revocations
from broker.settings import Settings
from registry.models import GatewayAuthMethod, Status

revoke_app = typer.Typer(
    help="Revoke tokens at once: one token (jti), a transaction (txn), everything of an agent "
    "(kill switch: also suspends it), of a gateway, or of a user subject.",
    no_args_is_help=True,
)
revocations_app = typer.Typer(help="Revocations still in force.", no_args_is_help=True)
resource_servers_app = typer.Typer(
    help="Resource servers allowed to call /introspect.", no_args_is_help=True
)

Reason = Annotated[str, typer.Option("--reason", help="Why (kept in the audit record).")]
Value = Annotated[str, typer.Argument(help="What to revoke.")]
ClientId = Annotated[str, typer.Argument(help="The resource server's SPIFFE ID.",
                                         callback=canonical_spiffe_id)]


def register(app: typer.Typer, audit_app: typer.Typer) -> None:
    app.add_typer(revoke_app, name="revoke")
    app.add_typer(revocations_app, name="revocations")
    app.add_typer(resource_servers_app, name="resource-servers")
    audit_app.command("query")(audit_query)


def _revoke(kind: RevocationKind, value: str, reason: str, suspend: bool,
            data_dir: Path) -> None:
    with open_local(data_dir) as local:
        data = RevocationCreate(kind=kind, value=value, reason=reason)
        revoked = store_revocation(
            local.engine, data, now=time.time(), by=BY, suspend=suspend,
            max_token_ttl_s=float(local.settings.keys.max_token_ttl_s),
        )
        local.record(revocation_event(revoked, by=BY))
        if revoked.suspended:
            note(f"{kind.value} {revoked.suspended} suspended")
        print_json(revoked.revocation)


@revoke_app.command("jti")
def revoke_jti(value: Value, reason: Reason = "", data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Revoke one token by its jti."""
    _revoke(RevocationKind.jti, value, reason, False, data_dir)


@revoke_app.command("txn")
def revoke_txn(value: Value, reason: Reason = "", data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Revoke every token of a transaction, replacements included."""
    _revoke(RevocationKind.txn, value, reason, False, data_dir)


@revoke_app.command("agent")
def revoke_agent(
    value: Annotated[str, typer.Argument(help="The agent's SPIFFE ID.")],
    reason: Reason = "",
    suspend: Annotated[bool, typer.Option(
        "--suspend/--no-suspend", help="Kill switch: also suspend the agent.")] = True,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Kill switch: suspend the agent and revoke every token it acted in so far."""
    _revoke(RevocationKind.agent, value, reason, suspend, data_dir)


@revoke_app.command("gateway")
def revoke_gateway(
    value: Annotated[str, typer.Argument(help="The gateway's client id (SPIFFE ID).")],
    reason: Reason = "",
    suspend: Annotated[bool, typer.Option(
        "--suspend/--no-suspend", help="Also suspend the gateway.")] = True,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Suspend the gateway and revoke every token it requested so far."""
    _revoke(RevocationKind.gateway, value, reason, suspend, data_dir)


@revoke_app.command("subject")
def revoke_subject(
    value: Annotated[str, typer.Argument(help="The token subject (sub), e.g. a user.")],
    reason: Reason = "",
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Revoke every token and credential of this subject issued so far."""
    _revoke(RevocationKind.subject, value, reason, False, data_dir)


@revocations_app.command("list")
def revocations_list(
    kind: Annotated[RevocationKind | None, typer.Option("--kind")] = None,
    offset: Offset = 0,
    limit: Limit = 100,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """List revocations still in force, newest first."""
    with open_local(data_dir) as local, Session(local.engine) as session:
        print_json(list_revocations(session, now=time.time(), kind=kind, offset=offset,
                                limit=limit))


# --- resource servers ------------------------------------------------------------------


@resource_servers_app.command("add")
def resource_servers_add(
    client_id: Annotated[str, typer.Option("--client-id", help="Its SPIFFE ID.")],
    audience: Annotated[list[str], typer.Option(
        "--audience", help="A token audience it may introspect (repeat).")],
    auth_method: AuthMethod = GatewayAuthMethod.jwt_spiffe,
    jwks: JwksFile = None,
    description: Annotated[str, typer.Option("--description")] = "",
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Register a resource server for /introspect."""
    with open_local(data_dir) as local:
        keys = None if jwks is None else read_json_object(jwks, "JWKS")
        data = ResourceServerCreate(client_id=client_id, auth_method=auth_method, jwks=keys,
                                    description=description, audiences=audience)
        with Session(local.engine) as session:
            rs = create_resource_server(session, data, now=time.time())
            session.commit()
        local.audit("resource_server.created", resource_server=rs.client_id,
                    auth_method=str(rs.auth_method), audiences=rs.audiences)
        print_json(rs)


@resource_servers_app.command("list")
def resource_servers_list(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """List resource servers."""
    with open_local(data_dir) as local, Session(local.engine) as session:
        print_json(list_resource_servers(session, limit=500))


@resource_servers_app.command("show")
def resource_servers_show(client_id: ClientId, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Show one resource server."""
    show_one(data_dir, fetch_resource_server, client_id, "resource server")


@resource_servers_app.command("suspend")
def resource_servers_suspend(client_id: ClientId,
                             data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Suspend a resource server: it may not introspect until resumed."""
    set_status(data_dir, set_resource_server_status, client_id, Status.suspended,
                "resource_server.suspended", resource_server=client_id)


@resource_servers_app.command("resume")
def resource_servers_resume(client_id: ClientId, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Resume a suspended resource server."""
    set_status(data_dir, set_resource_server_status, client_id, Status.active,
                "resource_server.resumed", resource_server=client_id)


@resource_servers_app.command("remove")
def resource_servers_remove(client_id: ClientId, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Remove a resource server."""
    remove_one(data_dir, delete_resource_server, client_id, "resource server",
            "resource_server.removed", resource_server=client_id)


# --- audit query -----------------------------------------------------------------------


def audit_query(
    agent: Annotated[str | None, typer.Option(
        "--agent", callback=canonical_spiffe_id_or_none)] = None,
    subject: Annotated[str | None, typer.Option("--subject", help="User (token sub).")] = None,
    gateway: Annotated[str | None, typer.Option(
        "--gateway", callback=canonical_spiffe_id_or_none)] = None,
    tool: Annotated[str | None, typer.Option("--tool")] = None,
    txn: Annotated[str | None, typer.Option("--txn")] = None,
    jti: Annotated[str | None, typer.Option("--jti")] = None,
    kind: Annotated[str | None, typer.Option("--kind")] = None,
    decision: Annotated[str | None, typer.Option("--decision")] = None,
    since: Annotated[float | None, typer.Option("--since", help="Epoch seconds.")] = None,
    until: Annotated[float | None, typer.Option("--until", help="Epoch seconds.")] = None,
    cursor: Annotated[int | None, typer.Option("--cursor", help="Page after this seq.")] = None,
    limit: Limit = 100,
    order: Annotated[str, typer.Option("--order", help="asc or desc.")] = "asc",
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Print matching audit records as JSON lines; the next page's cursor goes to stderr."""
    if order not in ("asc", "desc"):
        raise typer.BadParameter("--order must be asc or desc")
    direction: Literal["asc", "desc"] = "asc" if order == "asc" else "desc"
    with one_line_errors():  # reads only: no migration, like audit verify and export
        settings = Settings(data_dir=data_dir)
        require_database(settings)
        engine = make_engine(settings.db_url)
        where = AuditFilter(agent=agent, subject=subject, gateway=gateway, tool=tool, txn=txn,
                            jti=jti, kind=kind, decision=decision, since=since, until=until)
        try:
            page = query_audit(engine, where, cursor=cursor, limit=limit, order=direction)
        finally:
            engine.dispose()
        for record in page.records:
            typer.echo(json.dumps(record.model_dump(mode="json"), sort_keys=True))
        if page.next_cursor is not None:
            note(f"more: --cursor {page.next_cursor}")
