"""``writ tools ...``, ``writ bounds ...`` and ``writ explain`` over the local database, with
the same rules and audit records as ``/v1/tools``, ``/v1/bounds`` and
``/v1/decisions/explain``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlmodel import Session

from broker.admin.tool_routes import fetch_failed, pinned_document, tool_audit
from broker.cli.common import (
    BY,
    DEFAULT_DATA_DIR,
    CommandError,
    DataDir,
    Limit,
    Offset,
    note,
    open_local,
    print_json,
    read_json,
    read_json_object,
    remove_one,
    show_one,
)
from broker.decision.explain import ExplainRequest, Explanation, explain
from broker.decision.rules import TtlBounds
from broker.tools.fetch import ToolFetcher, ToolFetchError
from broker.tools.refresh import refresh_tool
from registry import tool_store
from registry.bounds import NamespaceBoundRule
from registry.errors import Conflict
from registry.snapshot import load_snapshot
from registry.tool_store import ToolSource
from registry.tools import Risk

tools_app = typer.Typer(help="The tool registry (CIMD-style tool metadata).",
                        no_args_is_help=True)
bounds_app = typer.Typer(help="SPIFFE namespace bounds: what agents under a prefix may get.",
                         no_args_is_help=True)
ToolIdArg = Annotated[str, typer.Argument(help="The tool id: the https URL of its metadata.")]
PatternArg = Annotated[str, typer.Argument(help="A SPIFFE ID pattern, e.g. "
                                           "spiffe://example.org/agents/payments/**.")]


def register(app: typer.Typer) -> None:
    app.add_typer(tools_app, name="tools")
    app.add_typer(bounds_app, name="bounds")
    app.command("explain")(explain_command)


# --- tools -----------------------------------------------------------------------------------


@tools_app.command("add")
def tools_add(
    file: Annotated[Path, typer.Option("--file", help="The metadata document (JSON) to pin.")],
    replace: Annotated[bool, typer.Option(
        "--replace", help="Replace the document of a tool already pinned.")] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Pin a tool's metadata document: Writ never fetches it."""
    with open_local(data_dir) as local:
        doc = pinned_document(read_json_object(file, "tool metadata"))
        with Session(local.engine) as session:
            current = tool_store.fetch_tool(session, doc.tool_id)
            if current is None:
                tool = tool_store.create_tool(session, doc, source=ToolSource.pinned,
                                              times=None, now=time.time(), by=BY)
                reason = "tool.registered"
            elif not replace:
                raise Conflict(f"tool {doc.tool_id} is already registered; give --replace "
                               "to pin a new document")
            elif current.source is not ToolSource.pinned:
                raise Conflict(f"tool {doc.tool_id} is registered by URL; refresh it instead")
            else:
                tool = tool_store.update_tool_document(session, doc.tool_id, doc, times=None,
                                                       now=time.time())
                reason = "tool.pinned"
            session.commit()
        local.audit(reason, tool_id=tool.tool_id, **tool_audit(tool))
        print_json(tool)


@tools_app.command("register")
def tools_register(
    url: Annotated[str, typer.Argument(help="The https URL of the tool's metadata document.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Register a tool by URL: fetch its metadata now (CIMD rules); Writ keeps it fresh."""
    with open_local(data_dir) as local:
        fetcher = ToolFetcher(local.settings.tools)
        try:
            fetched = fetcher.fetch(url)
        except ToolFetchError as err:
            raise CommandError(str(fetch_failed(err))) from None
        finally:
            fetcher.close()
        with Session(local.engine) as session:
            tool = tool_store.create_tool(session, fetched.document, source=ToolSource.url,
                                          times=fetched.times, now=time.time(), by=BY)
            session.commit()
        local.audit("tool.registered", tool_id=tool.tool_id, **tool_audit(tool))
        print_json(tool)


@tools_app.command("list")
def tools_list(
    offset: Offset = 0,
    limit: Limit = 100,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """List registered tools."""
    with open_local(data_dir) as local, Session(local.engine) as session:
        print_json(tool_store.list_tools(session, offset=offset, limit=limit))


@tools_app.command("show")
def tools_show(tool_id: ToolIdArg, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Show one tool with its document in force."""
    show_one(data_dir, tool_store.fetch_tool, tool_id, "tool")


@tools_app.command("refresh")
def tools_refresh(tool_id: ToolIdArg, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Fetch a tool's metadata again now."""
    with open_local(data_dir) as local:
        fetcher = ToolFetcher(local.settings.tools)
        try:
            result = refresh_tool(local.engine, fetcher, tool_id, now=time.time())
        except ToolFetchError as err:
            raise CommandError(str(fetch_failed(err))) from None
        finally:
            fetcher.close()
        local.audit("tool.change_held" if result.held else "tool.refreshed", tool_id=tool_id,
                    previous_hash=result.previous_hash, **tool_audit(result.tool))
        if result.held:
            note(f"change held for approval ({', '.join(result.held)}); the previous "
                 f"document keeps serving: writ tools approve-change {tool_id}")
        print_json(result.tool)


@tools_app.command("approve-change")
def tools_approve_change(
    tool_id: ToolIdArg,
    pending_hash: Annotated[str | None, typer.Option(
        "--pending-hash", help="Approve only this held document (its pending_hash).")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Adopt the fetched document held for approval."""
    with open_local(data_dir) as local:
        with Session(local.engine) as session:
            pending = tool_store.fetch_tool(session, tool_id)
            before, tool = tool_store.approve_tool_change(
                session, tool_id, expected_hash=pending_hash, now=time.time())
            session.commit()
        local.audit("tool.change_approved", tool_id=tool_id, previous_hash=before,
                    changes=pending.pending_changes if pending else None, **tool_audit(tool))
        print_json(tool)


@tools_app.command("remove")
def tools_remove(tool_id: ToolIdArg, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Remove a tool: requests naming it are refused from the next refresh."""
    remove_one(data_dir, tool_store.delete_tool, tool_id, "tool", "tool.removed", tool_id=tool_id)


# --- bounds ----------------------------------------------------------------------------------


@bounds_app.command("set")
def bounds_set(
    pattern: PatternArg,
    tag: Annotated[list[str] | None, typer.Option(
        "--tag", help="A tool tag agents under the pattern may use (repeat; '*' any).")] = None,
    scope: Annotated[list[str] | None, typer.Option(
        "--scope", help="A scope they may receive (repeat; '*' any).")] = None,
    max_risk: Annotated[Risk, typer.Option("--max-risk",
                                           help="The riskiest action allowed.")] = Risk.low,
    description: Annotated[str, typer.Option("--description")] = "",
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Create or replace the bound of a SPIFFE ID pattern."""
    with open_local(data_dir) as local:
        rule = NamespaceBoundRule(pattern=pattern, tags=tuple(tag or ()),
                                  scopes=tuple(scope or ()), max_risk=max_risk,
                                  description=description)
        with Session(local.engine) as session:
            bound, created = tool_store.put_bound(session, rule, now=time.time(), by=BY)
            session.commit()
        local.audit("bound.created" if created else "bound.updated", pattern=bound.pattern,
                    tags=bound.tags, scopes=bound.scopes, max_risk=bound.max_risk.value)
        print_json(bound)


@bounds_app.command("list")
def bounds_list(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """List namespace bounds."""
    with open_local(data_dir) as local, Session(local.engine) as session:
        print_json(tool_store.list_bounds(session))


@bounds_app.command("show")
def bounds_show(pattern: PatternArg, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Show one namespace bound."""
    show_one(data_dir, tool_store.fetch_bound, pattern, "namespace bound")


@bounds_app.command("remove")
def bounds_remove(pattern: PatternArg, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Remove a bound: agents it alone covered get nothing from the next refresh."""
    remove_one(data_dir, tool_store.delete_bound, pattern, "namespace bound", "bound.removed",
            pattern=pattern)


# --- explain ---------------------------------------------------------------------------------


def _json_arg(value: str | None, what: str) -> dict[str, Any] | None:
    """Inline JSON, or ``@file``."""
    if value is None:
        return None
    doc = (read_json(Path(value[1:]), what) if value.startswith("@")
           else _parse_json(value, what))
    if not isinstance(doc, dict):
        raise CommandError(f"{what} must be a JSON object")
    return doc


def _parse_json(value: str, what: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as err:
        raise CommandError(f"{what} is not valid JSON: {err}") from err


def render(answer: Explanation) -> str:
    width = max(len(g.gate) for g in answer.gates)
    lines = []
    for i, gate in enumerate(answer.gates):
        line = f"{i:>2}. {gate.gate:<{width}}  {gate.result:<11}"
        if gate.result == "refused":
            line += f" {gate.error} ({gate.reason}): {gate.detail}"
        elif gate.detail:
            line += f" {gate.detail}"
        lines.append(line.rstrip())
    if answer.decision == "issue":
        assert answer.grant is not None
        lines.append(f"=> would issue: scope {answer.grant['scope']}, expires in "
                     f"{answer.grant['expires_in']} s"
                     + (f", tool endpoint {answer.grant['tool_endpoint']}"
                        if "tool_endpoint" in answer.grant else ""))
    else:
        lines.append(f"=> would refuse: {answer.error} ({answer.reason})")
    return "\n".join(lines)


def explain_command(
    gateway: Annotated[str, typer.Option("--gateway", help="The gateway's SPIFFE ID.")],
    agent: Annotated[str, typer.Option("--agent", help="The agent's SPIFFE ID.")],
    scope: Annotated[str | None, typer.Option("--scope", help="Space-separated scopes.")] = None,
    audience: Annotated[str | None, typer.Option("--audience")] = None,
    details: Annotated[str | None, typer.Option(
        "--details", help="request_details: JSON, or @file.")] = None,
    context: Annotated[str | None, typer.Option(
        "--context", help="request_context: JSON, or @file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the explanation as JSON.")]
    = False,
    user: Annotated[str | None, typer.Option(
        "--user", help="On behalf of a user: {\"issuer\", \"sub\", \"claims\"} as JSON, or "
        "@file (adds the user_client and tenancy gates).")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Walk the decision gates for a request, as POST /token would, and mint nothing."""
    with open_local(data_dir) as local:
        request = ExplainRequest.model_validate({
            "gateway": gateway, "agent": agent, "scope": scope, "audience": audience,
            "request_details": _json_arg(details, "--details"),
            "request_context": _json_arg(context, "--context"),
            "user": _json_arg(user, "--user")})
        settings = local.settings
        with Session(local.engine) as session:
            snapshot = load_snapshot(session)
        answer = explain(request, snapshot=snapshot, now=time.time(),
                         trust_domain=settings.trust_domain,
                         ttl_bounds=TtlBounds(settings.txn_token_ttl_s,
                                              settings.max_txn_token_ttl_s),
                         max_json_depth=settings.max_json_depth)
        typer.echo(json.dumps(answer.model_dump(mode="json"), indent=2) if as_json
                   else render(answer))
