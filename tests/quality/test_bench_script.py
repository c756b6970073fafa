"""scripts/bench_token.py runs end to end on loopback with a tiny load: it starts
``writ serve``, drives both scenarios, checks the audit trail and prints its table.
Nothing here is timed; speed is docs/performance.md's business."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_token.py"


def table_rows(output: str) -> list[dict[str, str]]:
    lines = [line for line in output.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
            for line in lines[2:]]


@pytest.mark.e2e
def test_bench_script_prints_result_table(tmp_path: Path) -> None:
    out = tmp_path / "performance.md"
    out.write_text("# Performance\n\nintro kept\n")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--requests", "50", "--concurrency", "4", "--workers", "1",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = table_rows(done.stdout)
    assert [(r["scenario"], r["workers"], r["requests"], r["concurrency"]) for r in rows] == [
        ("warm", "1", "50", "4"), ("cold", "1", "50", "4"), ("replace", "1", "50", "4")]
    for row in rows:
        assert row["errors"] == "0"
        assert row["audit records"] == "50"  # one durable issued record per 200
        assert float(row["tokens/s"].replace(",", "")) > 0
    assert "audit chain intact" in done.stderr
    written = out.read_text()
    assert written.startswith("# Performance\n\nintro kept\n")
    section = written.split("<!-- bench:sqlite -->", 1)[1].split("<!-- /bench:sqlite -->")[0]
    assert table_rows(section) == rows


def test_rewrite_results_replaces_only_its_backend(tmp_path: Path) -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import bench_token
    finally:
        sys.path.remove(str(SCRIPT.parent))
    doc = tmp_path / "perf.md"
    doc.write_text("intro\n\n<!-- bench:sqlite -->\nold\n<!-- /bench:sqlite -->\n\ntail\n")
    bench_token.rewrite_results(doc, "sqlite", "<!-- bench:sqlite -->\nnew\n<!-- /bench:sqlite -->")
    bench_token.rewrite_results(doc, "postgresql",
                                "<!-- bench:postgresql -->\npg\n<!-- /bench:postgresql -->")
    assert doc.read_text() == (
        "intro\n\n<!-- bench:sqlite -->\nnew\n<!-- /bench:sqlite -->\n\ntail\n\n"
        "<!-- bench:postgresql -->\npg\n<!-- /bench:postgresql -->\n")


@pytest.mark.e2e
def test_registry_bench_prints_its_table(tmp_path: Path) -> None:
    out = tmp_path / "performance.md"
    out.write_text("# Performance\n")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_registry.py"), "--sizes", "5", "300",
         "--rounds", "1", "--writes", "3", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = table_rows(done.stdout)
    assert [(r["agents"], r["tools"], r["bounds"]) for r in rows] == [
        ("5", "5", "5"), ("300", "300", "300")]
    for row in rows:
        assert float(row["startup to ready (s)"].split()[0]) > 0
        assert float(row["admin write (ms)"].split()[0]) > 0
    assert "<!-- bench:registry -->" in out.read_text()
