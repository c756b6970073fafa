"""compose/ checked by reading its files (no container engine runs the suite): the YAML parses,
every command is a real ``writ`` command, every ``WRIT_*`` variable is a real setting and the
resulting settings validate, the KEK guard is there, the replicas wait for ``migrate`` and
PostgreSQL, and HAProxy balances both replicas with a ``/readyz`` check."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import typer

from broker.cli.main import app as writ_app
from broker.settings import AuditSettings, Settings
from broker.signing.settings import KeyRingSettings

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
REPLICAS = ("writ-1", "writ-2")
WRIT_IMAGE = "writ:local"
KEK_GUARD = "${WRIT_KEYS_KEK:?set WRIT_KEYS_KEK}"
# inside its container a replica listens on every interface; only HAProxy publishes a port
SERVE = ["writ", "serve", "--host", "0.0.0.0", "--port", "8080"]  # noqa: S104


# --- a reader for the YAML subset the compose file uses ------------------------------------
# Block mappings and sequences, plain and quoted scalars, flow sequences of scalars. When
# PyYAML is installed the result is also compared with yaml.safe_load.


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'" and (i == 0 or line[i - 1] in " [,:-"):
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def _split_flow(body: str) -> list[str]:
    items, current, quote = [], "", None
    for ch in body:
        if quote:
            current += ch
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
            current += ch
        elif ch == ",":
            items.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        items.append(current.strip())
    return items


def _scalar(text: str) -> Any:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        return [_scalar(item) for item in _split_flow(text[1:-1])]
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return json.loads(text)
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if text in ("", "~", "null"):
        return None
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


_KEY = re.compile(r"""^("[^"]*"|'[^']*'|[^\s"'#][^:]*?)\s*:(?:\s+(.*))?$""")


def _lines(text: str) -> list[tuple[int, str]]:
    out = []
    for raw in text.splitlines():
        line = _strip_comment(raw)
        if line.strip():
            out.append((len(line) - len(line.lstrip(" ")), line.strip()))
    return out


def _block(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[Any, int]:
    if lines[i][1].startswith("- ") or lines[i][1] == "-":
        seq: list[Any] = []
        while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("-"):
            rest = lines[i][1][1:].strip()
            if not rest:
                value, i = _block(lines, i + 1, lines[i + 1][0])
            elif _KEY.match(rest) and not rest.startswith(("[", '"', "'")):
                # a mapping item: its first key sits on the dash line
                sub = [(indent + 2, rest)]
                j = i + 1
                while j < len(lines) and lines[j][0] > indent:
                    sub.append(lines[j])
                    j += 1
                value, _ = _block(sub, 0, indent + 2)
                i = j
            else:
                value, i = _scalar(rest), i + 1
            seq.append(value)
        return seq, i
    mapping: dict[str, Any] = {}
    while i < len(lines) and lines[i][0] == indent:
        match = _KEY.match(lines[i][1])
        assert match, f"not a mapping entry: {lines[i][1]!r}"
        key = _scalar(match.group(1))
        if match.group(2) is not None:
            mapping[key], i = _scalar(match.group(2)), i + 1
        elif i + 1 < len(lines) and (
            lines[i + 1][0] > indent
            or (lines[i + 1][0] == indent and lines[i + 1][1].startswith("- "))
        ):
            mapping[key], i = _block(lines, i + 1, lines[i + 1][0])
        else:
            mapping[key], i = None, i + 1
    return mapping, i


def read_yaml(text: str) -> Any:
    lines = _lines(text)
    value, end = _block(lines, 0, lines[0][0])
    assert end == len(lines), f"unread line: {lines[end][1]!r}"
    return value


# --- compose variable interpolation and .env -----------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


class Unset(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}`` rules."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        got = env.get(name)
        missing = got is None or (got == "" and op is not None and op.startswith(":"))
        if missing and op is not None and op.endswith("?"):
            raise Unset(arg or name)
        if missing and op is not None and op.endswith("-"):
            return arg
        return got or ""

    return _VAR.sub(one, value)


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_text() -> str:
    return (COMPOSE / "docker-compose.yml").read_text()


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict[str, Any]:
    doc = read_yaml(compose_text)
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    svc = compose["services"]
    assert isinstance(svc, dict)
    return svc


def writ_services(services: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in services.items() if s.get("image") == WRIT_IMAGE}


def filled_env_file() -> dict[str, str]:
    """.env.example with its empty secrets filled in, as an operator would."""
    env = read_env_file(COMPOSE / ".env.example")
    if not env.get("WRIT_KEYS_KEK"):
        env["WRIT_KEYS_KEK"] = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    if not env.get("POSTGRES_PASSWORD"):
        env["POSTGRES_PASSWORD"] = os.urandom(12).hex()
    return env


# --- the writ command line -------------------------------------------------------------------


def resolve_writ_command(argv: list[str]) -> None:
    """Fail unless ``argv`` is ``writ <group>... <command> [--option value]...`` with options
    the command declares."""
    assert argv and argv[0] == "writ", argv
    cmd: Any = typer.main.get_command(writ_app)
    rest = argv[1:]
    while rest and not rest[0].startswith("-"):
        commands = getattr(cmd, "commands", None)
        assert commands is not None and rest[0] in commands, f"no writ command {argv}"
        cmd, rest = commands[rest[0]], rest[1:]
    assert getattr(cmd, "commands", None) is None, f"{argv} names a group, not a command"
    known = {opt for param in cmd.params for opt in param.opts}
    for token in rest:
        if token.startswith("--"):
            assert token.split("=", 1)[0] in known, f"{argv}: {token} is not an option"


def setting_env_names() -> set[str]:
    names = set()
    top = Settings.model_config["env_prefix"]
    for field in Settings.model_fields:
        if field not in ("keys", "audit"):
            names.add(f"{top}{field}".upper())
    for cls in (KeyRingSettings, AuditSettings):
        for field in cls.model_fields:
            names.add(f"{cls.model_config['env_prefix']}{field}".upper())
    return names


# --- tests -----------------------------------------------------------------------------------


def test_reader_agrees_with_pyyaml_when_installed(compose_text: str) -> None:
    yaml = pytest.importorskip("yaml")
    assert read_yaml(compose_text) == yaml.safe_load(compose_text)


def test_reader_handles_the_subset() -> None:
    text = (
        'a:\n  b: ["x, y", \'z\', 3]  # note\n  c:\n    - d: 1\n      e: "#not"\n'
        "    - plain:colon\n  f: 'it''s'\n"
    )
    assert read_yaml(text) == {
        "a": {"b": ["x, y", "z", 3], "c": [{"d": 1, "e": "#not"}, "plain:colon"], "f": "it's"}
    }


def test_services(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "migrate", *REPLICAS, "haproxy"}
    assert str(services["postgres"]["image"]).startswith("postgres:16")
    for name, svc in writ_services(services).items():
        assert svc["build"] == {"context": "..", "dockerfile": "compose/Dockerfile"}, name
    assert set(writ_services(services)) == {"migrate", *REPLICAS}


def test_every_command_is_a_real_writ_command(services: dict[str, Any]) -> None:
    for svc in writ_services(services).values():
        resolve_writ_command(svc["command"])
    assert services["migrate"]["command"] == ["writ", "db", "upgrade"]
    for name in REPLICAS:
        assert services[name]["command"] == SERVE


def test_resolver_refuses_unknown_commands_and_options() -> None:
    for argv in (["writ", "db", "migrate"], ["writ", "serve", "--bind", "x"], ["writ", "db"]):
        with pytest.raises(AssertionError):
            resolve_writ_command(argv)


def test_dockerfile() -> None:
    text = (COMPOSE / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    # the locked, hash-checked set, then Writ's two distributions without their dependencies
    assert re.search(r"^RUN pip install --require-hashes -r requirements/server\.lock ", text, re.M)
    assert re.search(r"^    && pip install --no-deps --no-build-isolation \./jwks \. ", text, re.M)
    for part in ("jwks", "registry", "broker"):
        assert re.search(rf"^COPY {part} \./{part}$", text, re.M), part
    users = [ln.split(None, 1)[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    cmd = [ln for ln in lines if ln.startswith("CMD ")]
    resolve_writ_command(json.loads(cmd[-1][4:]))


def test_environment_names_real_settings(services: dict[str, Any]) -> None:
    names = setting_env_names()
    assert "WRIT_KEYS_KEK" in names and "WRIT_DATABASE_URL" in names
    for name, svc in writ_services(services).items():
        for var in svc["environment"]:
            # only Writ's settings: whom to trust for X-Forwarded-For is one of them
            assert var.startswith("WRIT_"), f"{name}: unexpected variable {var}"
            assert var in names, f"{name}: {var} is not a Writ setting"


def test_the_environment_makes_valid_settings(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = filled_env_file()
    for name in REPLICAS:
        resolved = interpolate(services[name]["environment"], env)
        for var in list(os.environ):
            if var.startswith("WRIT_"):
                monkeypatch.delenv(var)
        for var, value in resolved.items():
            monkeypatch.setenv(var, str(value))
        settings = Settings()
        assert settings.db_url.startswith("postgresql+psycopg://writ:")
        assert "@postgres:5432/writ" in settings.db_url
        assert settings.issuer_url == env["WRIT_ISSUER"]
        assert settings.trust_domain == env["WRIT_TRUST_DOMAIN"]
        assert settings.keys.kek is not None
        assert not settings.dev


def test_kek_is_guarded(services: dict[str, Any]) -> None:
    env = filled_env_file()
    for name in REPLICAS:
        assert services[name]["environment"]["WRIT_KEYS_KEK"] == KEK_GUARD
        for missing in (
            {k: v for k, v in env.items() if k != "WRIT_KEYS_KEK"},
            {**env, "WRIT_KEYS_KEK": ""},
        ):
            with pytest.raises(Unset, match="set WRIT_KEYS_KEK"):
                interpolate(services[name]["environment"], missing)
    assert "WRIT_KEYS_KEK" not in services["migrate"]["environment"]


def test_env_example_names_every_variable(compose_text: str) -> None:
    example = read_env_file(COMPOSE / ".env.example")
    used = {m.group(1) for m in _VAR.finditer(compose_text)}
    assert used <= set(example), sorted(used - set(example))
    # secrets ship empty, so compose refuses to start until they are set
    assert example["WRIT_KEYS_KEK"] == "" and example["POSTGRES_PASSWORD"] == ""
    assert {k for k in example if k.startswith("WRIT_")} <= setting_env_names()


def test_replicas_wait_for_migrate_and_postgres(services: dict[str, Any]) -> None:
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in REPLICAS:
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }
    assert services[REPLICAS[0]]["environment"] == services[REPLICAS[1]]["environment"]


def test_replica_healthchecks_ask_readyz(services: dict[str, Any]) -> None:
    for name in REPLICAS:
        check = services[name]["healthcheck"]["test"]
        assert check[0] == "CMD" and "http://127.0.0.1:8080/readyz" in " ".join(check)
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]


def test_haproxy_balances_both_replicas(services: dict[str, Any], compose: dict[str, Any]) -> None:
    cfg = (COMPOSE / "haproxy.cfg").read_text()
    sections: dict[str, list[str]] = {}
    current = ""
    for raw in cfg.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not raw[0].isspace():
            current = line
            sections[current] = []
        else:
            sections[current].append(line.strip())
    backends = [s for s in sections if s.startswith("backend ")]
    assert len(backends) == 1
    body = sections[backends[0]]
    servers = [ln.split() for ln in body if ln.startswith("server ")]
    assert sorted(s[2] for s in servers) == [f"{r}:8080" for r in REPLICAS]
    assert all("check" in s for s in servers)
    assert "http-check send meth GET uri /readyz" in body
    assert "http-check expect status 200" in body
    frontend = next(v for k, v in sections.items() if k.startswith("frontend "))
    assert "bind :8080" in frontend
    assert frontend.index("http-request del-header X-Forwarded-For") < frontend.index(
        "option forwardfor"
    )

    proxy = services["haproxy"]
    assert proxy["depends_on"] == {r: {"condition": "service_healthy"} for r in REPLICAS}
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in proxy["volumes"]
    assert [p.rsplit(":", 1)[1].strip('"') for p in proxy["ports"]] == ["8080"]
    # the replicas trust X-Forwarded-For from HAProxy's fixed address, and only from it
    address = proxy["networks"]["writ"]["ipv4_address"]
    subnet = compose["networks"]["writ"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet)
    for name in REPLICAS:
        assert json.loads(services[name]["environment"]["WRIT_TRUSTED_PROXIES"]) == [address]
