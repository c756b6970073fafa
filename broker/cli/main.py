"""The ``writ`` command: serve, dev helpers, demo, database and audit tasks, and (from
``broker.cli.admin``) every registry and key administration task."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from broker.settings import Settings

app = typer.Typer(
    help="Writ: the Transaction Token Service of a SPIFFE trust domain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
dev_app = typer.Typer(
    help="Dev-only helpers (refused unless the data dir is in dev mode).", no_args_is_help=True
)
db_app = typer.Typer(help="Database tasks.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)
app.add_typer(dev_app, name="dev")
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")

DataDir = Annotated[
    Path, typer.Option("--data-dir", help="Writ's data directory.", envvar="WRIT_DATA_DIR")
]


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def make_data_dir(data_dir: Path) -> None:
    """``writ serve`` and ``writ db upgrade`` create the data dir; a path that cannot be one
    is a one-line error (exit 2), never a traceback."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise fail(f"cannot create the data dir {data_dir}: {err.strerror}", 2) from err


def load_settings(**overrides: Any) -> Settings:
    from pydantic import ValidationError

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as err:
        first = err.errors()[0]
        raise fail(f"invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}") from err


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [8080].")] = None,
    data_dir: DataDir = Path("writ-data"),
    dev: Annotated[
        bool,
        typer.Option(
            "--dev",
            help="Create a local dev trust domain, a sample "
            "gateway and agent, and allow dev helpers.",
        ),
    ] = False,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1, max=64)] = 1,
) -> None:
    """Run Writ (migrations are applied first)."""
    import uvicorn

    from broker.db import make_engine, upgrade

    settings = load_settings(host=host, port=port, data_dir=data_dir, dev=dev or None)
    make_data_dir(settings.data_dir)
    upgrade(settings.db_url)
    if settings.dev:
        from sqlmodel import Session

        from broker.cli.dev import DEV_AGENT, DEV_GATEWAY, DevTrustDomain, seed

        td = DevTrustDomain.load_or_create(settings.data_dir)
        engine = make_engine(settings.db_url)
        with Session(engine) as session:
            created = seed(session, td, now=time.time())
        engine.dispose()
        d = str(settings.data_dir)
        typer.echo(
            "\n".join(
                [
                    f"Writ dev mode: issuer {settings.issuer_url}, trust domain {td.name}",
                    *(f"  created {c}" for c in created),
                    "Obtain and verify a Txn-Token (gateway -> Writ -> downstream service):",
                    f"  writ demo --url {settings.issuer_url} --data-dir {d}",
                    "Or by hand:",
                    f"  GW=$(writ dev svid --data-dir {d} --spiffe-id {DEV_GATEWAY} "
                    f"--audience {settings.issuer_url})",
                    f"  AGENT=$(writ dev svid --data-dir {d} --spiffe-id {DEV_AGENT} "
                    f"--audience {settings.issuer_url})",
                    f"  curl -s {settings.issuer_url}/token "
                    "-d grant_type=urn:ietf:params:oauth:grant-type:token-exchange "
                    "-d client_assertion_type="
                    "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe "
                    "-d client_assertion=$GW -d subject_token=$AGENT "
                    "-d subject_token_type=urn:ietf:params:oauth:token-type:jwt "
                    "-d requested_token_type=urn:ietf:params:oauth:token-type:txn_token "
                    f"-d audience={td.name} -d scope=demo.read",
                ]
            ),
            err=True,
        )
    # every worker rebuilds the same settings from the environment
    env = {
        "WRIT_HOST": settings.host,
        "WRIT_PORT": str(settings.port),
        "WRIT_DATA_DIR": str(settings.data_dir),
        "WRIT_DEV": "true" if settings.dev else "false",
    }
    os.environ.update(env)
    http: Any
    try:  # httptools with a bounded request head; else h11, bounded by its own setting
        from broker.cli.serving import BoundedHttpToolsProtocol as http
    except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
        http = "h11"
    uvicorn.run(
        "broker.asgi:create",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        log_config=None,
        access_log=False,
        # forwarded headers are Writ's to judge (WRIT_TRUSTED_PROXIES): uvicorn's own
        # handling would trust X-Forwarded-For from 127.0.0.1 by default
        proxy_headers=False,
        # the bound on a request head, for h11 and broker/cli/serving.py alike
        http=http,
        h11_max_incomplete_event_size=settings.max_header_bytes + 8192,
    )


def _dev_trust_domain(data_dir: Path) -> Any:
    """The dev trust domain ``writ serve --dev`` made; dev helpers never create one."""
    from broker.cli.dev import DevTrustDomain

    if not data_dir.is_dir():
        raise fail(f"the data dir {data_dir} does not exist; `writ serve --dev` creates one", 2)
    if not (data_dir / "dev-trust-domain.jwk").is_file():
        raise fail(
            f"dev mode is not on for {data_dir}: run `writ serve --dev --data-dir {data_dir}` "
            "first", 2,
        )
    return DevTrustDomain.load_or_create(data_dir)


@dev_app.command("svid")
def dev_svid(
    spiffe_id: Annotated[str, typer.Option("--spiffe-id", help="SPIFFE ID of the workload.")],
    audience: Annotated[list[str], typer.Option("--audience", help="Audience (repeatable).")],
    data_dir: DataDir = Path("writ-data"),
    ttl: Annotated[int, typer.Option(
        "--ttl", help="Lifetime in seconds (Writ accepts at most WRIT_SVID_MAX_LIFETIME_S).",
        min=1, max=86400)] = 300,
) -> None:
    """Print one JWT-SVID minted by the local dev trust domain."""
    from jwks.patterns import InvalidPattern, parse_spiffe_id

    td = _dev_trust_domain(data_dir)
    try:
        sid = parse_spiffe_id(spiffe_id)
    except InvalidPattern as err:
        raise fail(str(err)) from err
    if sid.trust_domain != td.name:
        raise fail(f"the dev trust domain is {td.name}; it cannot mint for {spiffe_id}")
    typer.echo(td.mint_svid(spiffe_id, audience if len(audience) > 1 else audience[0], ttl_s=ttl))


@app.command()
def demo(
    url: Annotated[str, typer.Option("--url", help="Writ's base URL.")] = "http://127.0.0.1:8080",
    data_dir: DataDir = Path("writ-data"),
) -> None:
    """Run gateway -> Writ -> downstream service against a running dev-mode Writ."""
    try:
        from broker.cli.demo import DemoFailed, run_demo
    except ModuleNotFoundError as err:  # authlib is the optional `demo` extra (pyproject)
        if (err.name or "").split(".")[0] != "authlib":
            raise
        raise fail("writ demo needs authlib: pip install 'writ-broker[demo]'") from err

    td = _dev_trust_domain(data_dir)
    try:
        run_demo(url.rstrip("/"), td, echo=typer.echo)
    except DemoFailed as err:
        raise fail(str(err)) from err


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = Path("writ-data")) -> None:
    """Apply every database migration."""
    from broker.db import upgrade

    settings = load_settings(data_dir=data_dir)
    make_data_dir(settings.data_dir)
    upgrade(settings.db_url)
    typer.echo("database is at the latest revision", err=True)


@audit_app.command("verify")
def audit_verify(data_dir: DataDir = Path("writ-data")) -> None:
    """Walk the hash chain; name the first record altered, removed or reordered."""
    from broker.audit.writer import verify_chain
    from broker.cli.common import one_line_errors, require_database
    from broker.db import make_engine

    with one_line_errors():  # reads only: no migration
        settings = Settings(data_dir=data_dir)
        require_database(settings)
        engine = make_engine(settings.db_url)
        try:
            verdict = verify_chain(engine)
        finally:
            engine.dispose()
    if not verdict.ok:
        raise fail(
            f"audit chain broken at record {verdict.first_bad_seq}: {verdict.problem} "
            f"({verdict.count} records verified before it)"
        )
    typer.echo(f"audit chain intact: {verdict.count} records")


@audit_app.command("export")
def audit_export(
    data_dir: DataDir = Path("writ-data"),
    out: Annotated[
        Path | None, typer.Option("--out", help="File to write (default stdout).")
    ] = None,
) -> None:
    """Write every audit record as JSON lines."""
    from broker.audit.writer import iter_records
    from broker.cli.common import CommandError, one_line_errors, require_database
    from broker.db import make_engine

    with one_line_errors():  # reads only: no migration
        settings = Settings(data_dir=data_dir)
        require_database(settings)
        engine = make_engine(settings.db_url)
        try:
            sink = out.open("w") if out else sys.stdout
        except OSError as err:
            engine.dispose()
            raise CommandError(f"cannot write {out}: {err.strerror}") from err
        try:
            for row in iter_records(engine):
                sink.write(json.dumps(row, sort_keys=True) + "\n")
        finally:
            if out:
                sink.close()
            engine.dispose()


def _register_admin() -> None:
    try:
        from broker.cli.admin import register
    except ImportError:  # pragma: no cover - the admin commands ship with the package
        return
    register(app)
    from broker.cli.revoke import register as register_revoke

    register_revoke(app, audit_app)
    from broker.cli.tools import register as register_tools

    register_tools(app)  # tools, bounds, explain


_register_admin()


def main() -> None:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        app()
    except httpx.HTTPError as err:
        typer.echo(f"error: {type(err).__name__}: {err}", err=True)
        sys.exit(1)
    except SQLAlchemyError as err:
        # never a traceback (or a URL with its password) for a database the user named
        typer.echo(f"error: database unavailable: {type(err).__name__}", err=True)
        sys.exit(1)
