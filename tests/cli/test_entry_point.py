"""The installed ``writ`` command shows a user no third-party warning (pyspiffe's use of DSA
under cryptography >= 51 among them), and ``writ demo`` names its optional extra when authlib
is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker.cli.main import app

WRIT = Path(sys.executable).parent / "writ"


def run_writ(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run([str(WRIT), *args], env={**clean, **env}, capture_output=True,
                          text=True, timeout=120, check=False)


def test_help_prints_no_warning() -> None:
    result = run_writ("--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "Usage: writ" in result.stdout


def test_help_raises_no_warning_that_an_error_filter_would_catch() -> None:
    # every warning raised while the command's modules import becomes an error here
    result = run_writ("--help", PYTHONWARNINGS="error")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == ""


def test_demo_without_authlib_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "broker.cli.demo", raising=False)
    # `import authlib` now fails, and so does any of its modules another test already loaded
    for name in [m for m in sys.modules if m == "authlib" or m.startswith("authlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "authlib", None)
    result = CliRunner().invoke(app, ["demo", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: writ demo needs authlib: pip install 'writ-broker[demo]'"
    )
