"""ruff, mypy and the import-linter contracts (jwks <- registry <- broker; a jwks library
tier free of FastAPI/SQLModel) run as part of the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          check=False)


@pytest.mark.parametrize("tool", ["ruff", "mypy", "lint-imports"])
def test_tool_is_clean(tool: str) -> None:
    cmd = {
        "ruff": (str(BIN / "ruff"), "check", "jwks", "registry", "broker", "tests", "scripts"),
        "mypy": (str(BIN / "mypy"),),
        "lint-imports": (str(BIN / "lint-imports"),),
    }[tool]
    result = run(*cmd)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_jwks_library_imports_without_web_or_orm() -> None:
    code = ("import sys, jwks; bad = {'fastapi', 'starlette', 'sqlmodel', 'sqlalchemy', "
            "'broker', 'registry'} & set(sys.modules); print(sorted(bad))")
    result = run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
