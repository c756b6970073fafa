"""Every ``writ`` command but ``serve`` and ``db upgrade`` refuses a data dir, or a database,
that holds no Writ database: one line on stderr, exit code 2, no traceback, nothing created.

The commands are read from the CLI itself, so a new command group is covered when it is added.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from broker.cli.main import app
from broker.db import upgrade
from tests.conftest import PG_URL

BIN = Path(sys.executable).parent
#: the only commands that may create a data dir or a database
CREATORS = {("serve",), ("db", "upgrade")}


def leaf_commands(group: Any, prefix: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], Any]]:
    """(path, command) of every runnable command; typer builds click (or its own copy of
    click) objects, read here by what they hold, not by class."""
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        if hasattr(command, "commands"):
            yield from leaf_commands(command, path)
        else:
            yield path, command


#: required parameters that name a file (read only after the data dir is checked)
FILE_PARAMS = {"charter", "file", "jwks", "bundle_file"}


def required_args(command: Any, file: Path) -> list[str]:
    """Values for the command's required parameters, so that only the data dir can fail."""
    args: list[str] = []
    for param in command.params:
        if not param.required:
            continue
        value = (str(file) if param.name in FILE_PARAMS
                 else "https://tools.example.com/t" if param.name == "url"
                 else "spiffe://example.org/x")
        option = param.opts[0]
        args += [option, value] if option.startswith("-") else [value]
    return args


COMMANDS = sorted(
    (path, cmd) for path, cmd in leaf_commands(typer.main.get_command(app))
    if path not in CREATORS
)


def test_every_command_group_is_covered() -> None:
    """The groups of `writ --help`, each with at least one command checked here."""
    groups = {path[0] for path, _ in COMMANDS}
    assert groups >= {"agents", "gateways", "trust-domains", "keys", "admin-tokens", "issuers",
                      "tools", "bounds", "revoke", "revocations", "audit", "explain",
                      "resource-servers", "dev", "demo"}
    assert ("serve",) not in {p for p, _ in COMMANDS}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("WRIT_"):
            monkeypatch.delenv(name)


@pytest.fixture
def json_file(tmp_path: Path) -> Path:
    path = tmp_path / "input.json"
    path.write_text(json.dumps({"purpose": "x"}))
    return path


def refuse(args: list[str], pattern: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (args, result.stdout, result.stderr, result.exception)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert pattern in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not isinstance(result.exception, Exception) or isinstance(result.exception,
                                                                      SystemExit)


IDS = [" ".join(p) for p, _ in COMMANDS]


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_missing_data_dir_is_refused(path: tuple[str, ...], command: Any,
                                     tmp_path: Path, json_file: Path) -> None:
    data_dir = tmp_path / "typo" / "dir"
    refuse([*path, *required_args(command, json_file), "--data-dir", str(data_dir)],
           f"the data dir {data_dir} does not exist")
    assert not (tmp_path / "typo").exists()


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_empty_data_dir_is_refused(path: tuple[str, ...], command: Any,
                                   tmp_path: Path, json_file: Path) -> None:
    data_dir = tmp_path / "empty"
    data_dir.mkdir()
    expected = ("dev mode is not on" if path[0] in ("dev", "demo")
                else f"the data dir {data_dir} holds no Writ database")
    refuse([*path, *required_args(command, json_file), "--data-dir", str(data_dir)], expected)
    assert list(data_dir.iterdir()) == []


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize(("path", "command"), [(p, c) for p, c in COMMANDS
                                               if p[0] not in ("dev", "demo")],
                         ids=[i for i in IDS if not i.startswith(("dev", "demo"))])
def test_database_url_without_writ_schema_is_refused(
    path: tuple[str, ...], command: Any, tmp_path: Path, json_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # an empty SQLite file, and a name that does not exist (connecting would create it)
    for name, make in (("empty.db", True), ("absent.db", False)):
        db = tmp_path / name
        if make:
            db.touch()
        monkeypatch.setenv("WRIT_DATABASE_URL", f"sqlite:///{db}")
        refuse([*path, *required_args(command, json_file), "--data-dir", str(tmp_path)],
               "the database named by WRIT_DATABASE_URL holds no Writ database")
        assert db.exists() == make
        if make:
            assert db.stat().st_size == 0


@pytest.mark.usefixtures("env")
def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / "writ.db").write_bytes(b"not SQLite at all" * 100)
    refuse(["agents", "list", "--data-dir", str(tmp_path)],
           f"the data dir {tmp_path} holds no Writ database")
    refuse(["audit", "verify", "--data-dir", str(tmp_path)],
           f"the data dir {tmp_path} holds no Writ database")


@pytest.mark.usefixtures("env")
def test_a_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    refuse(["agents", "list", "--data-dir", str(target)], f"the data dir {target} is not a "
           "directory")


@pytest.mark.usefixtures("env")
def test_a_migrated_data_dir_is_served(tmp_path: Path) -> None:
    CliRunner().invoke(app, ["db", "upgrade", "--data-dir", str(tmp_path)])
    result = CliRunner().invoke(app, ["agents", "list", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == []
    result = CliRunner().invoke(app, ["audit", "verify", "--data-dir", str(tmp_path)])
    assert (result.exit_code, result.stdout) == (0, "audit chain intact: 0 records\n")


@pytest.fixture
def empty_pg_schema() -> Iterator[str]:
    if PG_URL is None:
        pytest.skip("WRIT_TEST_POSTGRES_URL not set")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.mark.postgres
@pytest.mark.usefixtures("env")
def test_postgres_without_writ_schema_is_refused(empty_pg_schema: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WRIT_DATABASE_URL", empty_pg_schema)
    for args in (["agents", "list"], ["audit", "verify"], ["keys", "rotate"]):
        refuse([*args, "--data-dir", str(tmp_path / "absent")],
               "the database named by WRIT_DATABASE_URL holds no Writ database")
    engine = create_engine(empty_pg_schema)
    with engine.connect() as conn:
        tables = conn.execute(text(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = "
            "current_schema()")).scalar_one()
    engine.dispose()
    assert tables == 0
    upgrade(empty_pg_schema)
    result = CliRunner().invoke(app, ["agents", "list", "--data-dir", str(tmp_path)])
    assert (result.exit_code, json.loads(result.stdout)) == (0, [])


@pytest.mark.parametrize("args", [["agents", "list"], ["audit", "verify"], ["audit", "export"],
                                  ["keys", "rotate"], ["dev", "svid", "--spiffe-id",
                                   "spiffe://dev.writ.local/x", "--audience", "a"]])
def test_the_real_command_prints_one_line(args: list[str], tmp_path: Path) -> None:
    """The installed ``writ``, as a user runs it: one line, exit 2, nothing created."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRIT_")}
    missing = tmp_path / "typo"
    done = subprocess.run([str(BIN / "writ"), *args, "--data-dir", str(missing)], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = [ln for ln in done.stderr.splitlines() if "DSA" not in ln and "dsa." not in ln]
    assert len(lines) == 1 and lines[0].startswith("error: the data dir "), done.stderr
    assert not missing.exists()


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize("command", [["db", "upgrade"], ["serve"]])
def test_a_data_dir_that_cannot_be_made_is_one_line(command: list[str], tmp_path: Path) -> None:
    """The two commands that create a data dir say why they cannot, without a traceback."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    refuse([*command, "--data-dir", str(blocker / "sub")],
           f"cannot create the data dir {blocker / 'sub'}: Not a directory")
    assert blocker.read_text() == "x"
