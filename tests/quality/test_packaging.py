"""The two distributions declare what docs/verifier.md and docs/development.md say, the lock
files under requirements/ agree with both pyprojects, the README's commands are the ones
.ci/run runs, and tests/jwks needs nothing but writ-jwks."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
BROKER = tomllib.loads((ROOT / "pyproject.toml").read_text())
JWKS = tomllib.loads((ROOT / "jwks" / "pyproject.toml").read_text())
LOCKS = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.M)
OURS = {"writ-broker", "writ-jwks"}


def lock(name: str) -> dict[str, str]:
    text = (LOCKS / name).read_text()
    return {canonicalize_name(n): v for n, v in PIN.findall(text)}


def requirements(project: dict, *extras: str) -> list[Requirement]:
    specs = list(project["project"]["dependencies"])
    for extra in extras:
        specs += project["project"]["optional-dependencies"][extra]
    return [Requirement(s) for s in specs]


def names(reqs: list[Requirement]) -> set[str]:
    return {canonicalize_name(r.name) for r in reqs}


def words(text: str) -> set[str]:
    return {canonicalize_name(w) for w in re.findall(r"`([A-Za-z0-9._-]+)`", text)}


def test_writ_jwks_declares_only_its_closure_roots() -> None:
    assert names(requirements(JWKS)) == {"joserfc", "httpx", "cryptography"}
    assert set(JWKS["project"]["optional-dependencies"]) == {"fastapi"}
    assert names(requirements(JWKS, "fastapi")) - names(requirements(JWKS)) == {"fastapi"}
    setuptools = JWKS["tool"]["setuptools"]
    assert setuptools["packages"] == ["jwks"] and setuptools["package-dir"] == {"jwks": "."}


def test_writ_broker_depends_on_writ_jwks_and_packages_no_jwks() -> None:
    version = JWKS["project"]["version"]
    assert BROKER["project"]["version"] == version  # released together (docs/development.md)
    assert f"writ-jwks=={version}" in BROKER["project"]["dependencies"]
    assert not any(p.startswith("jwks") for p in BROKER["tool"]["setuptools"]["packages"]["find"]
                   ["include"])
    server = names(requirements(BROKER))
    assert "python-multipart" not in server
    assert "authlib" not in server
    assert names(requirements(BROKER, "demo")) - server == {"authlib"}
    assert "writ-broker[demo]" in BROKER["project"]["optional-dependencies"]["test"]


def test_verifier_doc_names_the_dependencies_and_the_closure() -> None:
    doc = (ROOT / "docs" / "verifier.md").read_text()
    direct = re.search(r"^- direct dependencies: (.+?);$", doc, re.M)
    closure = re.search(r"^- installed closure: (.+?);$", doc, re.M | re.S)
    assert direct and closure
    assert words(direct[1]) == names(requirements(JWKS))
    assert words(closure[1]) == set(lock("jwks.lock"))
    assert "`writ-jwks[fastapi]` adds `fastapi`" in doc


def test_ci_allows_exactly_the_locked_closure() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    allowed = re.search(r'^ALLOWED_CLOSURE="([^"]*)"', ci, re.M)
    assert allowed
    assert {canonicalize_name(n) for n in allowed[1].split()} == set(lock("jwks.lock"))
    forbidden = {"grpcio", "protobuf", "spiffe", "fastapi", "starlette", "pydantic",
                 "sqlalchemy", "sqlmodel"}
    assert not forbidden & set(lock("jwks.lock"))


@pytest.mark.parametrize(("lock_name", "project", "extras"), [
    ("dev.lock", BROKER, ("demo", "test")),
    ("dev.lock", JWKS, ("fastapi",)),
    ("server.lock", BROKER, ()),
    ("jwks.lock", JWKS, ()),
    ("jwks-test.lock", JWKS, ("fastapi",)),
], ids=["dev-broker", "dev-jwks", "server", "jwks", "jwks-test"])
def test_lock_pins_every_direct_dependency_within_its_range(
    lock_name: str, project: dict, extras: tuple[str, ...]
) -> None:
    pins = lock(lock_name)
    for req in requirements(project, *extras):
        name = canonicalize_name(req.name)
        if name in OURS:
            continue
        assert name in pins, f"{req} is not in requirements/{lock_name}: run scripts/lock.sh"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements/{lock_name} pins {name}=={pins[name]} outside {req}: "
            "run scripts/lock.sh")


def test_locks_agree_and_every_pin_has_hashes() -> None:
    dev = lock("dev.lock")
    for name in ("dev.lock", "server.lock", "jwks.lock", "jwks-test.lock"):
        text = (LOCKS / name).read_text()
        entries = re.split(r"^(?=[A-Za-z0-9])", text, flags=re.M)[1:]
        assert entries, name
        for entry in entries:
            assert "--hash=sha256:" in entry, f"{name}: {entry.splitlines()[0]} has no hash"
        pins = lock(name)
        assert not OURS & set(pins), name
        assert {n: dev.get(n) for n in pins} == pins, f"{name} disagrees with dev.lock"
    assert "setuptools" in dev and "setuptools" in lock("server.lock")  # builds both projects


def test_readme_commands_install_from_the_lock_and_ci_runs_the_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^```sh\n(.+?)\n```", readme, re.M)
    assert len(commands) == 2
    install = ("python3 -m venv .venv && .venv/bin/pip install --require-hashes -r "
               "requirements/dev.lock && .venv/bin/pip install --no-deps --no-build-isolation "
               "-e ./jwks -e . && ")
    assert all(c.startswith(install) for c in commands)
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert f'{commands[1]} "$@"' in ci_lines
    titles = re.findall(r"^- \[.+?\]\((docs/[^)]+)\)$", readme, re.M)
    assert len(titles) == len(set(titles)), "a document is listed twice"
    assert all((ROOT / t).is_file() for t in titles)


def test_verifier_tests_import_nothing_of_the_server() -> None:
    for path in sorted((ROOT / "tests" / "jwks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not roots & {"broker", "registry", "tests"}, f"{path.name}:{node.lineno}"
