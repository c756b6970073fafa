"""What every ``writ`` admin command shares: options, the local database (migrated, with
an audit writer), one-line errors, JSON output.

Errors are one line on stderr and exit code 1; a data dir or database that holds no Writ
database exits 2, as a bad option does, and nothing is created (only ``writ serve`` and
``writ db upgrade`` create one).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import typer
from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine, create_engine, inspect, make_url
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError
from sqlmodel import Session

from broker.audit.writer import AuditEvent, AuditUnavailable, AuditWriter
from broker.db import make_engine, upgrade
from broker.settings import Settings
from broker.signing.envelope import load_or_create_kek
from broker.signing.keyring import KeyRing
from jwks.errors import InvalidSpiffeId, JwksError
from jwks.spiffe_id import parse_spiffe_id
from registry.charter import Charter
from registry.errors import NotFound, RegistryError
from registry.models import (
    GatewayAuthMethod,
    Status,
)

BY = "cli"
T = TypeVar("T")

DataDir = Annotated[Path, typer.Option("--data-dir", help="Writ's data directory.",
                                       envvar="WRIT_DATA_DIR")]


def canonical_spiffe_id(value: str) -> str:
    """A SPIFFE ID argument in canonical form (``jwks.spiffe_id``), else a usage error:
    one identity, one spelling, in the CLI as in the admin API."""
    try:
        parse_spiffe_id(value)
    except InvalidSpiffeId as err:
        raise typer.BadParameter(str(err)) from err
    return value


def canonical_spiffe_id_or_none(value: str | None) -> str | None:
    return None if value is None else canonical_spiffe_id(value)


SpiffeIdArg = Annotated[str, typer.Argument(help="The agent's SPIFFE ID.",
                                            callback=canonical_spiffe_id)]
ClientIdArg = Annotated[str, typer.Argument(help="The gateway's client id (its SPIFFE ID).",
                                            callback=canonical_spiffe_id)]
DEFAULT_DATA_DIR = Path("writ-data")
Offset = Annotated[int, typer.Option(min=0, help="Rows to skip.")]
Limit = Annotated[int, typer.Option(min=1, max=500, help="Most rows to print.")]
# a client of Writ's endpoints (gateway, resource server): how it authenticates, its keys
AuthMethod = Annotated[GatewayAuthMethod, typer.Option(
    "--auth-method", help="How it authenticates: its JWT-SVID, or private_key_jwt.")]
JwksFile = Annotated[Path | None, typer.Option(
    "--jwks", help="Its public keys (JWK Set file) for private_key_jwt.")]


# --- plumbing ------------------------------------------------------------------------


class CommandError(Exception):
    """A refusal worth one line on stderr."""

    exit_code = 1


class UsageError(CommandError):
    """What the user named is not there (a data dir, a database): exit code 2."""

    exit_code = 2


#: Alembic's table: a database holding it was made by ``writ db upgrade`` or ``writ serve``.
MIGRATION_TABLE = "alembic_version"


def require_database(settings: Settings) -> None:
    """Refuse (exit 2) unless the settings name an existing Writ database; create nothing.

    SQLite (the default): the data dir and its ``writ.db`` must exist. Any database: it must
    hold Writ's migration table.
    """
    upgrade_hint = "`writ db upgrade` creates one"
    where = "the database named by WRIT_DATABASE_URL"
    if settings.database_url is None:
        data_dir = settings.data_dir
        if not data_dir.exists():
            raise UsageError(f"the data dir {data_dir} does not exist; {upgrade_hint}")
        if not data_dir.is_dir():
            raise UsageError(f"the data dir {data_dir} is not a directory")
        if not (data_dir / "writ.db").is_file():
            raise UsageError(f"the data dir {data_dir} holds no Writ database; {upgrade_hint}")
        where = f"the data dir {data_dir}"
    url = make_url(settings.db_url)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        if not path.is_file():  # connecting would create the file
            raise UsageError(f"{where} holds no Writ database; {upgrade_hint}")
        # read-only: looking must not change the file (no WAL switch)
        engine = create_engine(f"sqlite:///file:{quote(str(path.resolve()))}?mode=ro&uri=true")
    else:
        engine = make_engine(settings.db_url)
    try:
        with engine.connect() as conn:
            found = inspect(conn).has_table(MIGRATION_TABLE)
    except OperationalError:
        raise  # unreachable or refused: "database unavailable" (exit 1)
    except DatabaseError as err:  # e.g. a file that is not SQLite
        raise UsageError(f"{where} holds no Writ database") from err
    finally:
        engine.dispose()
    if not found:
        raise UsageError(f"{where} holds no Writ database; {upgrade_hint}")


def first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn every expected failure into ``error: ...`` on stderr and exit code 1 (2 for a
    ``UsageError``)."""
    code = 1
    try:
        yield
    except CommandError as err:
        message, code = str(err), err.exit_code
    except (RegistryError, JwksError) as err:
        message = str(err)
    except ValidationError as err:
        message = f"invalid {err.title}: {first_error(err)}"
    except IntegrityError:
        message = "a concurrent change conflicts with this one"
    except OperationalError as err:
        message = f"database unavailable: {type(err.orig).__name__}"
    else:
        return
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@dataclass
class Local:
    settings: Settings
    engine: Engine

    def record(self, event: AuditEvent) -> None:
        """DESIGN §7: every registry change is an audit record; never a secret in it."""
        writer = AuditWriter(self.engine)
        writer.start()
        try:
            writer.record_sync(event)
        except AuditUnavailable as err:
            raise CommandError("the change was saved but its audit record could not be "
                               "written; check the audit store") from err
        finally:
            writer.stop()

    def audit(self, reason: str, *, agent: str | None = None, gateway: str | None = None,
              **detail: Any) -> None:
        self.record(AuditEvent(kind="admin", decision="changed", reason=reason, agent=agent,
                               gateway=gateway, detail={"by": BY, **detail}))

    def change(self, write: Callable[[Session], T]) -> T:
        """Run ``write`` in one transaction and commit it."""
        with Session(self.engine) as session:
            result = write(session)
            session.commit()
        return result

    def keyring(self) -> KeyRing:
        data_dir = self.settings.data_dir
        # a KEK file in the data dir was made by dev mode; read it, never create one here
        dev = self.settings.dev or (data_dir / "kek").is_file()
        return KeyRing(self.engine, load_or_create_kek(self.settings.keys, data_dir, dev=dev),
                       self.settings.keys)


@contextmanager
def open_local(data_dir: Path) -> Iterator[Local]:
    """The existing database named by the settings, migrated; errors become one line on
    stderr."""
    with one_line_errors():
        settings = Settings(data_dir=data_dir)
        require_database(settings)
        upgrade(settings.db_url)
        engine = make_engine(settings.db_url)
        try:
            yield Local(settings, engine)
        finally:
            engine.dispose()


def show_one(data_dir: Path, fetch: Callable[[Session, str], BaseModel | None], key: str,
          what: str) -> None:
    """Print one row found by its key, or fail with "no <what> <key>"."""
    with open_local(data_dir) as local, Session(local.engine) as session:
        found = fetch(session, key)
        if found is None:
            raise NotFound(f"no {what} {key}")
        print_json(found)


def remove_one(data_dir: Path, delete: Callable[[Session, str], object], key: str, what: str,
            reason: str, **audit: Any) -> None:
    """Delete one row by its key and audit it as ``reason``."""
    with open_local(data_dir) as local:
        local.change(lambda session: delete(session, key))
        local.audit(reason, **audit)
        note(f"{what} {key} removed")


def read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8"
        raise CommandError(f"cannot read the {what} file {path}: {reason}") from err
    try:
        return json.loads(text)
    except ValueError as err:
        raise CommandError(f"the {what} file {path} is not valid JSON: {err}") from err


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    doc = read_json(path, what)
    if not isinstance(doc, dict):
        raise CommandError(f"the {what} file {path} must hold a JSON object")
    return doc


def read_charter(path: Path) -> Charter:
    return Charter.model_validate(read_json_object(path, "charter"))


def print_json(data: BaseModel | Sequence[BaseModel]) -> None:
    doc = ([m.model_dump(mode="json") for m in data] if isinstance(data, Sequence)
           else data.model_dump(mode="json"))
    typer.echo(json.dumps(doc, indent=2))


def note(message: str) -> None:
    typer.echo(message, err=True)


def set_status(data_dir: Path, setter: Callable[..., BaseModel], key: str, status: Status,
               reason: str, **audit: Any) -> None:
    with open_local(data_dir) as local:
        row = local.change(lambda session: setter(session, key, status, now=time.time()))
        local.audit(reason, **audit)
        print_json(row)
