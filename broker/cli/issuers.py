"""``writ issuers add|list|show|remove``: trusted user-token issuers over the local database
(the same rules and audit records as ``/v1/issuers``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from sqlmodel import Session

from broker.admin.issuers import issuer_audit_detail
from broker.cli.common import (
    BY,
    DEFAULT_DATA_DIR,
    DataDir,
    open_local,
    print_json,
    remove_one,
    show_one,
)
from registry.issuers import (
    DEFAULT_USER_TOKEN_ALGORITHMS,
    IssuerDiscovery,
    TrustedIssuerCreate,
    TrustedIssuerUpdate,
    create_issuer,
    delete_issuer,
    fetch_issuer,
    list_issuers,
    update_issuer,
)

issuers_app = typer.Typer(help="Trusted issuers of users' access tokens (on-behalf-of).",
                          no_args_is_help=True)
IssuerArg = Annotated[str, typer.Argument(help="The issuer URL, exactly as its tokens' iss.")]
AllowedClients = Annotated[list[str] | None, typer.Option(
    "--allowed-client", help="A client (azp / client_id) whose user tokens are taken "
    "(repeat). None: a token naming any client is refused.")]
AgentNamespaces = Annotated[list[str] | None, typer.Option(
    "--agent-namespace", help="A SPIFFE ID pattern of agents this issuer's users may be "
    "served by (repeat). None: no agent.")]


@issuers_app.command("add")
def issuers_add(
    issuer: IssuerArg,
    audience: Annotated[list[str], typer.Option(
        "--audience", help="An audience a user token must carry (repeat).")],
    algorithm: Annotated[list[str] | None, typer.Option(
        "--algorithm", help="A signature algorithm the issuer may use (repeat; default "
        f"{' '.join(DEFAULT_USER_TOKEN_ALGORITHMS)}).")] = None,
    discovery: Annotated[IssuerDiscovery, typer.Option(
        "--discovery", help="oidc: /.well-known/openid-configuration; rfc8414: "
        "/.well-known/oauth-authorization-server.")] = IssuerDiscovery.oidc,
    jwks_uri: Annotated[str | None, typer.Option(
        "--jwks-uri", help="Pin the JWKS URL instead of discovering it.")] = None,
    description: Annotated[str, typer.Option("--description")] = "",
    ca_file: Annotated[Path | None, typer.Option(
        "--ca-file", help="A PEM file of the CAs trusted for this issuer alone (else the "
        "system store).")] = None,
    allowed_client: AllowedClients = None,
    agent_namespace: AgentNamespaces = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Trust an issuer's access tokens as subject_token."""
    with open_local(data_dir) as local:
        data = TrustedIssuerCreate(
            issuer=issuer, audiences=audience,
            algorithms=algorithm or list(DEFAULT_USER_TOKEN_ALGORITHMS),
            discovery=discovery.value, jwks_uri=jwks_uri, description=description,
            ca_file=None if ca_file is None else str(ca_file.resolve()),
            allowed_clients=allowed_client or [], agent_namespaces=agent_namespace or [])
        with Session(local.engine) as session:
            created = create_issuer(session, data, now=time.time(), by=BY)
            session.commit()
        local.audit("issuer.created", **issuer_audit_detail(created))
        print_json(created)


@issuers_app.command("update")
def issuers_update(
    issuer: IssuerArg,
    allowed_client: AllowedClients = None,
    agent_namespace: AgentNamespaces = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Replace an issuer's allowed clients and/or agent namespaces (each list given
    replaces the stored one)."""
    with open_local(data_dir) as local:
        data = TrustedIssuerUpdate(allowed_clients=allowed_client,
                                   agent_namespaces=agent_namespace, description=description)
        with Session(local.engine) as session:
            updated = update_issuer(session, issuer, data, now=time.time())
            session.commit()
        local.audit("issuer.updated", **issuer_audit_detail(updated))
        print_json(updated)


@issuers_app.command("list")
def issuers_list(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """List trusted issuers."""
    with open_local(data_dir) as local, Session(local.engine) as session:
        print_json(list_issuers(session))


@issuers_app.command("show")
def issuers_show(issuer: IssuerArg, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Show one trusted issuer."""
    show_one(data_dir, fetch_issuer, issuer, "trusted issuer")


@issuers_app.command("remove")
def issuers_remove(issuer: IssuerArg, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Stop trusting an issuer: its users' tokens are refused from the next refresh."""
    remove_one(data_dir, delete_issuer, issuer, "issuer", "issuer.removed", issuer=issuer)
