"""The measuring scripts behind docs/performance.md run end to end with a tiny load:
``bench_token.py --audit durable off``, ``bench_audit.py`` and
``bench_revocation.py``. Nothing here is timed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_URL
from tests.quality.test_bench_script import table_rows

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=False)


def test_audit_modes_of_the_token_bench() -> None:
    done = run("scripts/bench_token.py", "--requests", "30", "--concurrency", "4", "--workers",
               "1", "--scenarios", "warm", "--audit", "off", "durable")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r["audit"]: r for r in table_rows(done.stdout)}
    assert list(rows) == ["durable", "off"]
    assert rows["durable"]["audit records"] == "30"  # writ serve: every token audited
    assert rows["off"]["audit records"] == "0"  # the bench-only app writes nothing
    assert all(r["errors"] == "0" for r in rows.values())


def test_audit_writer_bench() -> None:
    args = ["scripts/bench_audit.py", "--batches", "5", "--sizes", "1", "4"]
    if PG_URL:
        args += ["--postgres-url", PG_URL]
    done = run(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = table_rows(done.stdout)
    assert [(r["backend"], r["records/batch"]) for r in rows][:2] == [("sqlite", "1"),
                                                                      ("sqlite", "4")]
    assert len(rows) == (4 if PG_URL else 2)


@pytest.mark.postgres
def test_revocation_bench(tmp_path: Path) -> None:
    if not PG_URL:
        pytest.skip("WRIT_TEST_POSTGRES_URL not set")
    out = tmp_path / "perf.md"
    out.write_text("# Performance\n")
    done = run("scripts/bench_revocation.py", "--postgres-url", PG_URL, "--rounds", "3",
               "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = table_rows(done.stdout)
    assert [r["rounds"] for r in rows] == ["3", "3"]
    assert all(float(r["max ms"]) < 1000 for r in rows)  # within the 1 s bound
    text = out.read_text()
    assert text.startswith("# Performance\n") and "<!-- bench:revocation -->" in text
    assert "<postgres-url>" in text and PG_URL not in text
