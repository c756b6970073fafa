"""Benchmark ``POST /token`` over loopback against a real ``writ serve`` process.

    python scripts/bench_token.py [--requests N] [--concurrency C] [--workers W [W ...]]
                                  [--scenarios warm cold replace] [--audit durable off]
                                  [--database-url URL] [--gc-young-threshold N] [--tool]
                                  [--out docs/performance.md]

For each worker count it starts ``writ serve --dev`` on a free 127.0.0.1 port (one data
directory for the whole run; SQLite in it unless ``--database-url`` names an empty
PostgreSQL database), waits for ``/readyz`` and runs three scenarios, each after a short
untimed warm-up:

- ``warm``: the same gateway assertion and agent JWT-SVID on every request, so the
  validated-SVID cache answers and no signature is verified;
- ``cold``: a distinct gateway JWT-SVID and agent JWT-SVID per request, all minted before
  timing starts, so every request verifies two ES256 signatures;
- ``replace``: the delegation path (docs/delegation.md). The dev agent's charter is
  extended to delegate to a second agent, and every request replaces one parent Txn-Token
  for it: the SVIDs come from the cache, the parent's signature is verified every time.

The load comes from a closed-loop HTTP/1.1 keep-alive client (``asyncio.Protocol`` over
raw sockets, ``C`` connections, one request in flight each) in its own process, sending
pre-built requests; it times every request. Any response other than 200 fails the run.
Afterwards the number of ``issued`` audit records written during each scenario must equal
its 200 responses, and ``writ audit verify`` must pass. Prints a Markdown table; ``--out``
rewrites that backend's results section of the given Markdown file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import itertools
import json
import math
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
JWT = "urn:ietf:params:oauth:token-type:jwt"
TXN = "urn:ietf:params:oauth:token-type:txn_token"
HOST = "127.0.0.1"
SVID_TTL_S = 3600  # long enough to outlive the run; the validator caches until ``exp``
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
COLUMNS = ("scenario", "workers", "requests", "concurrency", "audit", "tokens/s", "p50 ms",
           "p99 ms", "errors", "audit records", "records/commit", "server CPU µs/token",
           "client CPU µs/token", "PostgreSQL CPU µs/token", "other CPU µs/token")


# --- load generator (runs in its own process; standard library only) ----------------------

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


@dataclass
class LoadReport:
    statuses: dict[int, int]
    latencies_s: list[float]
    wall_s: float
    cpu_s: float
    failure: str | None = None


class _Load:
    def __init__(self, requests: list[bytes], total: int, concurrency: int) -> None:
        self.requests = requests
        self.total = total
        self.sent = 0
        self.open = concurrency
        self.statuses: Counter[int] = Counter()
        self.latencies: list[float] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def send_next(self, conn: _Connection) -> None:
        if self.sent >= self.total:
            conn.finish()
            return
        request = self.requests[self.sent % len(self.requests)]
        self.sent += 1
        conn.started = time.perf_counter()
        conn.transport.write(request)

    def answered(self, conn: _Connection, status: int) -> None:
        self.latencies.append(time.perf_counter() - conn.started)
        self.statuses[status] += 1
        self.send_next(conn)

    def closed(self, error: str | None) -> None:
        self.open -= 1
        if error is not None and not self.done.done():
            self.done.set_exception(ConnectionError(error))
        elif self.open == 0 and not self.done.done():
            self.done.set_result(None)


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, load: _Load) -> None:
        self.load = load
        self.transport: asyncio.Transport
        self.started = 0.0
        self.buffer = b""
        self.expected: int | None = None  # bytes of the whole response, once headers are in
        self.status = 0
        self.finished = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.load.send_next(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.expected is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            match = _CONTENT_LENGTH.search(head)
            if not head.startswith(b"HTTP/1.1 ") or match is None:
                self.transport.abort()
                self.load.closed("response without HTTP/1.1 status line or Content-Length")
                self.finished = True
                return
            self.status = int(head[9:12])
            self.expected = end + 4 + int(match.group(1))
        if len(self.buffer) >= self.expected:
            self.buffer = self.buffer[self.expected:]
            self.expected = None
            self.load.answered(self, self.status)

    def finish(self) -> None:
        self.finished = True
        self.transport.close()
        self.load.closed(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished:
            self.finished = True
            self.load.closed(f"connection lost mid-run: {exc or 'closed by the server'}")


async def _drive(port: int, requests: list[bytes], total: int, concurrency: int,
                 timeout_s: float) -> LoadReport:
    loop = asyncio.get_running_loop()
    load = _Load(requests, total, concurrency)
    cpu0, t0 = os.times(), time.perf_counter()
    failure = None
    try:
        for _ in range(concurrency):
            await loop.create_connection(lambda: _Connection(load), HOST, port)
        await asyncio.wait_for(load.done, timeout_s)
    except (OSError, TimeoutError) as err:
        failure = f"{type(err).__name__}: {err}"
    wall = time.perf_counter() - t0
    cpu1 = os.times()
    return LoadReport(dict(load.statuses), load.latencies, wall,
                      (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), failure)


def run_load(port: int, requests: list[bytes], total: int, concurrency: int,
             timeout_s: float) -> LoadReport:
    """Entry point of the load-generator process."""
    return asyncio.run(_drive(port, requests, total, min(concurrency, total), timeout_s))


# --- the server under test -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def writ_command() -> list[str]:
    beside = Path(sys.executable).parent / "writ"
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-c", "from broker.cli.main import main; main()"]


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def process_tree_cpu_s(root: int) -> float:
    """User + system CPU of ``root`` and its live descendants (``/proc``, Linux)."""
    ticks = 0
    for pid in _descendants(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_cpu_s() -> float:
    """CPU time spent by the whole machine, from the first line of ``/proc/stat``."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def postgres_cpu_s() -> float:
    """User + system CPU of the local PostgreSQL server's processes (``/proc``, Linux)."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name, rest = stat.split(" (", 1)[1].rsplit(")", 1)
        if name == "postgres":
            fields = rest.split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class WritServer:
    """``writ serve --dev`` as a subprocess in its own process group."""

    def __init__(self, data_dir: Path, workers: int, env: dict[str, str],
                 audit: str = "durable") -> None:
        self.audit = audit  # "off": scripts/bench_noaudit.py, a bench-only app
        self.data_dir = data_dir
        self.workers = workers
        self.env = env
        self.port = free_port()
        self.log_path = data_dir.parent / f"serve-{workers}w-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> WritServer:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                self._argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self._env(),
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _argv(self) -> list[str]:
        if self.audit == "durable":
            return [*writ_command(), "serve", "--dev", "--data-dir", str(self.data_dir),
                    "--host", HOST, "--port", str(self.port), "--workers", str(self.workers)]
        # the same app with its audit writer replaced; the data dir was seeded before
        return [sys.executable, "-m", "uvicorn", "--factory", "bench_noaudit:create",
                "--app-dir", str(Path(__file__).resolve().parent), "--host", HOST,
                "--port", str(self.port), "--workers", str(self.workers), "--no-access-log"]

    def _env(self) -> dict[str, str]:
        if self.audit == "durable":
            return self.env
        return {**self.env, "WRIT_DEV": "true", "WRIT_DATA_DIR": str(self.data_dir),
                "WRIT_HOST": HOST, "WRIT_PORT": str(self.port)}

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"writ serve exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
            try:
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.2)
        raise RuntimeError(f"writ serve not ready after {READY_TIMEOUT_S:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGINT (uvicorn's graceful shutdown: workers drain their audit writers), then
        SIGKILL to the process group if it is still there after ``STOP_TIMEOUT_S``."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            raise RuntimeError("writ serve did not stop on SIGINT; killed") from None

    def cpu_s(self) -> float:
        assert self.proc is not None
        return process_tree_cpu_s(self.proc.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# --- requests ------------------------------------------------------------------------------


def http_request(port: int, params: dict[str, str]) -> bytes:
    body = urlencode(params).encode()
    return (f"POST /token HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def token_params(gateway_svid: str, agent_svid: str, tool: str | None = None
                 ) -> dict[str, str]:
    params = {
        "grant_type": GRANT,
        "client_assertion_type": JWT_SPIFFE,
        "client_assertion": gateway_svid,
        "subject_token": agent_svid,
        "subject_token_type": JWT,
        "requested_token_type": TXN,
        "audience": "dev.writ.local",
        "scope": "demo.read",
    }
    if tool is not None:  # --tool: the dev sample tool, resolved from the registry snapshot
        params["request_details"] = json.dumps({"tool": tool, "action": "echo"})
    return params


def mint_requests(trust_domain: Any, issuer: str, port: int, count: int,
                  tool: str | None = None) -> list[bytes]:
    from broker.cli.dev import DEV_AGENT, DEV_GATEWAY

    return [http_request(port, token_params(
        trust_domain.mint_svid(DEV_GATEWAY, issuer, ttl_s=SVID_TTL_S),
        trust_domain.mint_svid(DEV_AGENT, issuer, ttl_s=SVID_TTL_S), tool,
    )) for _ in range(count)]


DELEGATE = "spiffe://dev.writ.local/agents/demo/delegate"


def enroll_delegate(db_url: str) -> None:
    """Let the dev agent delegate to ``DELEGATE`` (enrolled once per data dir)."""
    from sqlmodel import Session

    from broker.cli.dev import DEV_AGENT, DEV_CHARTER
    from broker.db import make_engine
    from registry import store
    from registry.charter import Charter
    from registry.models import AgentCreate, AgentUpdate

    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            if store.fetch_agent(session, DELEGATE) is None:
                store.create_agent(session, AgentCreate(
                    spiffe_id=DELEGATE, owner="bench", charter=Charter(
                        purpose="bench delegate", scopes=("demo.read",), max_ttl_s=300)),
                    now=time.time(), by="bench")
                store.update_agent(session, DEV_AGENT, AgentUpdate(charter=DEV_CHARTER.model_copy(
                    update={"delegate_to": (DELEGATE,)})), now=time.time(), by="bench")
                session.commit()
    finally:
        engine.dispose()


def replacement_requests(db_url: str, trust_domain: Any, issuer: str, port: int) -> list[bytes]:
    """One request replacing a fresh parent Txn-Token of the dev agent for ``DELEGATE``."""
    from broker.cli.dev import DEV_AGENT, DEV_GATEWAY

    enroll_delegate(db_url)
    gateway = trust_domain.mint_svid(DEV_GATEWAY, issuer, ttl_s=SVID_TTL_S)
    parent = _post(port, token_params(
        gateway, trust_domain.mint_svid(DEV_AGENT, issuer, ttl_s=SVID_TTL_S)))["access_token"]
    params = {**token_params(gateway, parent), "subject_token_type": TXN,
              "actor_token": trust_domain.mint_svid(DELEGATE, issuer, ttl_s=SVID_TTL_S),
              "actor_token_type": JWT}
    deadline = time.monotonic() + 15  # the registry change reaches the server by its poll
    while True:
        try:
            _post(port, params)
            return [http_request(port, params)]
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _post(port: int, params: dict[str, str]) -> dict[str, Any]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("POST", "/token", urlencode(params),
                     {"Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"POST /token answered {response.status}: {body[:300]!r}")
    answer: dict[str, Any] = json.loads(body)
    return answer


# --- the audit trail -----------------------------------------------------------------------


@dataclass(frozen=True)
class AuditMark:
    seq: int
    issued: int


class AuditProbe:
    """Reads ``audit_records`` directly: issued count, and commits (one ``at`` per batch)."""

    def __init__(self, url: str) -> None:
        from broker.db import make_engine

        self.engine = make_engine(url)

    def mark(self) -> AuditMark:
        from sqlalchemy import func, select

        from broker.audit.writer import AuditRecord

        table = AuditRecord.__table__  # type: ignore[attr-defined]
        with self.engine.connect() as conn:
            seq = conn.execute(select(func.coalesce(func.max(table.c.seq), 0))).scalar_one()
            issued = conn.execute(select(func.count()).where(table.c.decision == "issued")
                                  ).scalar_one()
        return AuditMark(int(seq), int(issued))

    def commits_since(self, mark: AuditMark) -> int:
        from sqlalchemy import distinct, func, select

        from broker.audit.writer import AuditRecord

        table = AuditRecord.__table__  # type: ignore[attr-defined]
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count(distinct(table.c.at)))
                                    .where(table.c.seq > mark.seq)).scalar_one())

    def close(self) -> None:
        self.engine.dispose()


# --- the run -------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    workers: int
    requests: int
    concurrency: int
    tokens_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    audit_records: int
    records_per_commit: float
    server_cpu_us: float
    client_cpu_us: float
    db_cpu_us: float | None
    other_cpu_us: float
    problems: list[str] = field(default_factory=list)
    audit: str = "durable"

    def cells(self) -> list[str]:
        return [self.scenario, str(self.workers), str(self.requests), str(self.concurrency),
                self.audit,
                f"{self.tokens_per_s:,.0f}", f"{self.p50_ms:.1f}", f"{self.p99_ms:.1f}",
                str(self.errors), str(self.audit_records), f"{self.records_per_commit:.1f}",
                f"{self.server_cpu_us:,.0f}", f"{self.client_cpu_us:,.0f}",
                "in server" if self.db_cpu_us is None else f"{self.db_cpu_us:,.0f}",
                f"{self.other_cpu_us:,.0f}"]


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def load(pool: ProcessPoolExecutor, port: int, requests: list[bytes], total: int,
         concurrency: int) -> LoadReport:
    timeout_s = 60.0 + total / 50.0  # generous: a stall fails the run, slowness does not
    report = pool.submit(run_load, port, requests, total, concurrency, timeout_s).result()
    if report.failure is not None:
        raise RuntimeError(f"load generator failed: {report.failure}")
    return report


def run_scenario(name: str, server: WritServer, probe: AuditProbe, pool: ProcessPoolExecutor,
                 requests: list[bytes], warmup: list[bytes], args: argparse.Namespace) -> Row:
    if warmup:
        pre = load(pool, server.port, warmup, len(warmup), args.concurrency)
        if set(pre.statuses) != {200}:
            raise RuntimeError(f"warm-up answered {pre.statuses}:\n{server.log_tail()}")
    before = probe.mark()
    postgres = backend_name(args.database_url) == "postgresql"
    db_before = postgres_cpu_s() if postgres else 0.0
    cpu_before, machine_before = server.cpu_s(), machine_busy_cpu_s()
    report = load(pool, server.port, requests, args.requests, args.concurrency)
    server_cpu = server.cpu_s() - cpu_before
    machine_cpu = machine_busy_cpu_s() - machine_before
    db_cpu = postgres_cpu_s() - db_before if postgres else 0.0
    # everything else the machine did meanwhile: the kernel's own threads, this script,
    # and any other program (a busy neighbour shows up here, not in Writ's columns)
    other_cpu = max(0.0, machine_cpu - server_cpu - report.cpu_s - db_cpu)
    after = probe.mark()
    ok = report.statuses.get(200, 0)
    errors = sum(report.statuses.values()) - ok
    audited = after.issued - before.issued
    commits = probe.commits_since(before)
    latencies = sorted(report.latencies_s)
    row = Row(name, server.workers, args.requests, args.concurrency,
              tokens_per_s=ok / report.wall_s if report.wall_s else 0.0,
              p50_ms=percentile(latencies, 0.50) * 1000,
              p99_ms=percentile(latencies, 0.99) * 1000,
              errors=errors, audit_records=audited,
              records_per_commit=(after.seq - before.seq) / commits if commits else 0.0,
              server_cpu_us=server_cpu / max(ok, 1) * 1e6,
              client_cpu_us=report.cpu_s / max(ok, 1) * 1e6,
              db_cpu_us=db_cpu / max(ok, 1) * 1e6 if postgres else None,
              other_cpu_us=other_cpu / max(ok, 1) * 1e6, audit=server.audit)
    busy_neighbours = other_cpu / report.wall_s if report.wall_s else 0.0
    if busy_neighbours > 0.2:
        print(f"warning: {name}/{server.workers}w: other programs used {busy_neighbours:.1f} "
              "cores during the run; its numbers are disturbed", file=sys.stderr)
    if errors:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(report.statuses.items()))
        row.problems.append(f"{name}/{server.workers}w: non-200 responses ({statuses})")
    if audited != (ok if server.audit == "durable" else 0):
        row.problems.append(f"{name}/{server.workers}w: {audited} issued audit records for "
                            f"{ok} tokens returned")
    return row


def audit_verify(data_dir: Path, env: dict[str, str]) -> str | None:
    """``writ audit verify``; None when the chain is intact, else its output."""
    done = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [*writ_command(), "audit", "verify", "--data-dir", str(data_dir)],
        env=env, capture_output=True, text=True, timeout=600, check=False)
    output = (done.stdout + done.stderr).strip()
    print(f"writ audit verify: {output}", file=sys.stderr)
    return None if done.returncode == 0 else output


def refuse_used_database(url: str) -> str | None:
    """Writ's dev seed and sealed keys belong to one data dir: the database must be empty."""
    from sqlalchemy import inspect

    from broker.db import make_engine

    engine = make_engine(url)
    try:
        tables = inspect(engine).get_table_names()
    finally:
        engine.dispose()
    return f"the database already has tables ({', '.join(sorted(tables)[:3])}, ...); " \
        "give --database-url an empty database" if tables else None


def backend_name(url: str | None) -> str:
    return "sqlite" if url is None or url.startswith("sqlite") else "postgresql"


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join("---" if i == 0 else "--:" for i in range(len(COLUMNS))) + "|"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def results_section(backend: str, rows: list[Row], argv: list[str]) -> str:
    # the command that produced the numbers; where they were written does not matter
    shown = [a for i, a in enumerate(argv)
             if not a.startswith("--out") and (i == 0 or argv[i - 1] != "--out")]
    command = " ".join(["python", "scripts/bench_token.py", *shown])
    return "\n".join([
        f"<!-- bench:{backend} -->",
        f"### {'SQLite' if backend == 'sqlite' else 'PostgreSQL'}",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}:",
        "",
        f"    {command}",
        "",
        table(rows),
        f"<!-- /bench:{backend} -->",
    ])


def rewrite_results(path: Path, backend: str, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(rf"<!-- bench:{backend} -->.*?<!-- /bench:{backend} -->", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"
    path.write_text(text)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000,
                        help="timed requests per scenario (default 10000)")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="keep-alive connections, one request in flight each (default 64)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="worker counts to run, one server each (default: 1 2)")
    parser.add_argument("--audit", nargs="+", choices=("durable", "off"), default=["durable"],
                        help="durable: writ serve (default); off: a bench-only app whose audit "
                        "writer records nothing (scripts/bench_noaudit.py), to measure what "
                        "the audit costs")
    parser.add_argument("--scenarios", nargs="+", choices=("warm", "cold", "replace"),
                        default=["warm", "cold", "replace"],
                        help="scenarios to run (default: all three)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed requests before each scenario (default min(500, N))")
    parser.add_argument("--database-url", default=None,
                        help="an empty database for Writ (default: SQLite in the temp dir)")
    parser.add_argument("--gc-young-threshold", type=int, default=None,
                        help="WRIT_GC_YOUNG_THRESHOLD for the server (0: Python's collector "
                        "as it comes); default: Writ's own")
    parser.add_argument("--tool", action="store_true",
                        help="requests name the dev sample tool and action in request_details, "
                        "so tool resolution and the tool gates are on the path")
    parser.add_argument("--out", type=Path, default=None,
                        help="Markdown file whose results section for this backend is rewritten")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or min(args.workers) < 1:
        parser.error("--requests, --concurrency and --workers must be positive")
    if args.warmup is None:
        args.warmup = min(500, args.requests)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from broker.cli.dev import DEV_AGENT, DEV_GATEWAY, DEV_TOOL, DevTrustDomain
    from broker.settings import Settings

    rows: list[Row] = []
    problems: list[str] = []
    if args.database_url:
        refused = refuse_used_database(args.database_url)
        if refused is not None:
            print(f"error: {refused}", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="writ-bench-") as tmp, \
            ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        data_dir = Path(tmp) / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith("WRIT_")}
        if args.database_url:
            env["WRIT_DATABASE_URL"] = args.database_url
        if args.gc_young_threshold is not None:
            env["WRIT_GC_YOUNG_THRESHOLD"] = str(args.gc_young_threshold)
        db_url = Settings(data_dir=data_dir, database_url=args.database_url).db_url
        modes = sorted(set(args.audit), key=("durable", "off").index)
        if "durable" not in modes:  # only writ serve migrates and seeds the data dir
            with WritServer(data_dir, 1, env):
                pass
        for workers, audit in itertools.product(args.workers, modes):
            with WritServer(data_dir, workers, env, audit) as server:
                trust_domain = DevTrustDomain.load_or_create(data_dir)
                issuer, port = server.issuer, server.port
                tool = DEV_TOOL if args.tool else None
                warm = [http_request(port, token_params(
                    trust_domain.mint_svid(DEV_GATEWAY, issuer, ttl_s=SVID_TTL_S),
                    trust_domain.mint_svid(DEV_AGENT, issuer, ttl_s=SVID_TTL_S), tool))]
                warmup = warm * args.warmup
                probe = AuditProbe(db_url)
                try:
                    for name in args.scenarios:
                        if name == "warm":
                            requests = warm
                        elif name == "replace":
                            requests = replacement_requests(db_url, trust_domain, issuer, port)
                        else:
                            print(f"minting {2 * args.requests} JWT-SVIDs for the cold "
                                  "scenario", file=sys.stderr)
                            requests = mint_requests(trust_domain, issuer, port, args.requests,
                                                     tool)
                        print(f"{name}: {args.requests} requests, {args.concurrency} "
                              f"connections, {workers} worker(s)", file=sys.stderr)
                        row = run_scenario(name, server, probe, pool, requests, warmup, args)
                        rows.append(row)
                        problems += row.problems
                finally:
                    probe.close()
        broken = audit_verify(data_dir, env)
        if broken is not None:
            problems.append(f"writ audit verify failed: {broken}")
    print(table(rows))
    if args.out is not None:
        backend = backend_name(args.database_url)
        rewrite_results(args.out, backend, results_section(backend, rows, argv))
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
