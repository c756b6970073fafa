"""Benchmark how Writ behaves as its registry grows: startup, admin writes, bounds lookups,
memory, and a soak of ``/token`` load while the registry changes under it.

    python scripts/bench_registry.py [--sizes 10 100000] [--rounds 2] [--writes 40]
                                     [--soak-s 60] [--soak-agents 10000] [--soak-rate 10]
                                     [--database-url postgresql+psycopg://.../postgres]
                                     [--out docs/performance.md]

A size ``N`` means N agents, min(N, 10,000) tools and min(N, 10,000) namespace bounds, put
straight into the database (the registry's own tables, in bulk) before Writ starts. For each
size, in rounds that alternate the sizes so a slow minute of the machine hits both alike:

- **startup**: ``writ serve --dev`` (one worker) from spawn until ``/readyz`` answers 200;
- **memory**: the resident set of the serving process tree once ready;
- **admin write**: ``POST /v1/agents`` (enroll one agent with a charter) ``--writes`` times,
  one at a time; the route answers only once its own replica's snapshot holds the change;
- **bounds lookup**: in process, ``NamespaceBounds.covering`` for agents it has not seen
  (no memo) over a bounds index of that size.

``--soak-s`` (0 skips it) then runs on the largest size: a closed-loop ``/token`` load over
``--soak-agents`` distinct agents (a fresh agent JWT-SVID per agent, gateway assertion
reused), once alone and once while ``--soak-rate`` admin writes per second (enroll, update
charter, suspend, remove, in turn) run beside it, and reports both throughputs and p99s.

Reports medians with min-max, the load average and the CPU other processes used during the
run. With ``--database-url`` naming a PostgreSQL server's maintenance database, each size gets
a fresh database created and dropped by the script. ``--out`` rewrites the registry section
of the given Markdown file.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_token as bt  # the load generator and process helpers

DEV_TD = "dev.writ.local"
AGENT_PREFIX = f"spiffe://{DEV_TD}/agents/bench"
MAX_TOOLS = MAX_BOUNDS = 10_000


@dataclass
class SizeResult:
    size: int
    startup_s: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    write_ms: list[float] = field(default_factory=list)
    lookup_us: list[float] = field(default_factory=list)


def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    if not values:
        return "-"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-" \
           f"{fmt.format(max(values))})"


# --- the registry, in bulk --------------------------------------------------------------


def populate(db_url: str, size: int) -> None:
    """Agents (sharing a few charter templates, as fleets do), tools and bounds."""
    from sqlalchemy import insert

    from broker.cli.dev import DEV_CHARTER, DEV_TOOL
    from broker.db import make_engine
    from registry.charter import Charter, ToolGrant, charter_hash
    from registry.models import Agent, CharterVersion, RegistryChange, RegistryVersion
    from registry.tool_store import NamespaceBoundRecord, ToolRecord
    from registry.tools import ToolDocument, document_hash

    engine = make_engine(db_url)
    n_tools, n_bounds = min(size, MAX_TOOLS), min(size, MAX_BOUNDS)
    templates = [DEV_CHARTER.model_copy(update={"purpose": f"bench template {i}"})
                 for i in range(8)]
    templates = [Charter.model_validate(
        t.model_dump() | {"tools": [ToolGrant(tool=DEV_TOOL, actions=("echo",)).model_dump()]})
        for t in templates]
    docs = [(t.model_dump(mode="json"), charter_hash(t)) for t in templates]
    now = time.time()
    with engine.begin() as conn:
        for start in range(0, size, 5000):
            chunk = range(start, min(size, start + 5000))
            conn.execute(insert(Agent), [
                {"spiffe_id": agent_id(i), "owner": "bench", "description": "",
                 "enrollment_expires_at": None, "status": "active", "charter_version": 1,
                 "enrolled_by": "bench", "created_at": now, "updated_at": now}
                for i in chunk])
            conn.execute(insert(CharterVersion), [
                {"agent_spiffe_id": agent_id(i), "version": 1, "document": docs[i % 8][0],
                 "hash": docs[i % 8][1], "created_at": now, "created_by": "bench"}
                for i in chunk])
        tool_rows = []
        for i in range(n_tools):
            doc = ToolDocument.model_validate({
                "tool_id": f"https://tools.bench.example/t{i}", "name": f"t{i}",
                "endpoint": f"https://t{i}.bench.example/", "audience": f"t{i}",
                "actions": {"read": {"risk": "low"}}, "scopes": ["bench.read"],
                "tags": [f"team{i % 100}"]})
            tool_rows.append({"tool_id": doc.tool_id, "source": "pinned",
                              "document": doc.model_dump(mode="json"),
                              "document_hash": document_hash(doc), "created_by": "bench",
                              "created_at": now, "updated_at": now})
        if tool_rows:
            conn.execute(insert(ToolRecord), tool_rows)
        bound_rows = [{"pattern": f"{AGENT_PREFIX}/t{i}/**", "tags": [f"team{i % 100}"],
                       "scopes": ["*"], "max_risk": "medium", "description": "",
                       "created_by": "bench", "created_at": now, "updated_at": now}
                      for i in range(n_bounds)]
        if bound_rows:
            conn.execute(insert(NamespaceBoundRecord), bound_rows)
        version = conn.execute(
            RegistryVersion.__table__.select()).first()  # type: ignore[attr-defined]
        next_version = (version.version if version else 0) + 1
        if version is None:
            conn.execute(insert(RegistryVersion), [{"id": 1, "version": next_version}])
        else:
            conn.execute(RegistryVersion.__table__.update().values(  # type: ignore[attr-defined]
                version=next_version))
        conn.execute(insert(RegistryChange), [{"version": next_version, "kind": "*", "key": ""}])
    engine.dispose()


def agent_id(i: int) -> str:
    # every agent under one of the bounds' subtrees, so the soak's tokens are granted
    return f"{AGENT_PREFIX}/t{i % MAX_BOUNDS}/a{i}"


# --- the server -------------------------------------------------------------------------


def rss_mb(root: int) -> float:
    total = 0
    for pid in bt._descendants(root):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


class Server:
    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir, self.env = data_dir, env
        self.port = bt.free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        started = time.monotonic()
        self.proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [*bt.writ_command(), "serve", "--dev", "--data-dir", str(self.data_dir),
             "--host", bt.HOST, "--port", str(self.port)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = started + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("writ serve exited during startup")
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection(bt.HOST, self.port, timeout=2)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    return time.monotonic() - started
            time.sleep(0.02)
        raise SystemExit("writ serve did not become ready within 120 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc = None


def admin_token(data_dir: Path, env: dict[str, str]) -> str:
    done = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [*bt.writ_command(), "admin-tokens", "create", "--name", "bench", "--scope",
         "agents:write", "--scope", "agents:read", "--data-dir", str(data_dir)],
        env=env, capture_output=True, text=True, check=True, timeout=120)
    return done.stdout.strip()


def admin(port: int, token: str, method: str, path: str, body: Any = None) -> tuple[int, float]:
    conn = http.client.HTTPConnection(bt.HOST, port, timeout=30)
    payload = None if body is None else json.dumps(body)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    started = time.perf_counter()
    conn.request(method, path, body=payload, headers=headers)
    response = conn.getresponse()
    response.read()
    return response.status, (time.perf_counter() - started) * 1000


def charter_body(purpose: str) -> dict[str, Any]:
    from broker.cli.dev import DEV_CHARTER

    return DEV_CHARTER.model_copy(update={"purpose": purpose}).model_dump(mode="json")


def admin_writes(port: int, token: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        status, ms = admin(port, token, "POST", "/v1/agents", {
            "spiffe_id": f"{AGENT_PREFIX}/new/{uuid.uuid4().hex}", "owner": "bench",
            "charter": charter_body("bench enroll")})
        if status != 201:
            raise SystemExit(f"POST /v1/agents answered {status}")
        times.append(ms)
    return times


def bounds_lookup_us(size: int, samples: int = 2000) -> float:
    from registry.bounds import BoundView, NamespaceBounds
    from registry.tools import Risk

    n = min(size, MAX_BOUNDS)
    bounds = NamespaceBounds.of(
        BoundView(f"{AGENT_PREFIX}/t{i}/**", frozenset({"x"}), frozenset({"*"}), Risk.low)
        for i in range(n))
    ids = [f"{AGENT_PREFIX}/t{i % n}/fresh{i}" for i in range(samples)]
    started = time.perf_counter()
    for spiffe_id in ids:
        bounds.covering(spiffe_id)
    return (time.perf_counter() - started) / samples * 1e6


# --- a size, a round --------------------------------------------------------------------


def fresh_database(maintenance_url: str | None, size: int) -> tuple[str | None, Any]:
    if maintenance_url is None:
        return None, None
    from sqlalchemy import create_engine, text

    name = f"writ_bench_registry_{size}_{uuid.uuid4().hex[:8]}"
    admin_engine = create_engine(maintenance_url, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin_engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_engine.dispose()

    url = maintenance_url.rsplit("/", 1)[0] + f"/{name}"
    return url, drop


def prepare(size: int, args: argparse.Namespace, workdir: Path) -> tuple[Path, dict[str, str],
                                                                          Any]:
    data_dir = workdir / f"size-{size}"
    data_dir.mkdir()
    url, drop = fresh_database(args.database_url, size)
    env = {**os.environ, "WRIT_LOG_LEVEL": "warning"}
    if url is not None:
        env["WRIT_DATABASE_URL"] = url
    db_url = url or f"sqlite:///{data_dir / 'writ.db'}"
    subprocess.run([*bt.writ_command(), "db", "upgrade", "--data-dir", str(data_dir)],  # noqa: S603
                   env=env, check=True, capture_output=True, timeout=120)
    populate(db_url, size)
    return data_dir, env, drop


def measure_round(size: int, data_dir: Path, env: dict[str, str], token: str,
                  result: SizeResult, writes: int) -> None:
    server = Server(data_dir, env)
    try:
        result.startup_s.append(server.start())
        assert server.proc is not None
        result.rss_mb.append(rss_mb(server.proc.pid))
        result.write_ms.extend(admin_writes(server.port, token, writes))
    finally:
        server.stop()
    result.lookup_us.append(bounds_lookup_us(size))


# --- the soak ---------------------------------------------------------------------------


def soak(size: int, data_dir: Path, env: dict[str, str], token: str,
         args: argparse.Namespace) -> dict[str, Any]:
    from broker.cli.dev import DEV_GATEWAY, DevTrustDomain

    trust_domain = DevTrustDomain.load_or_create(data_dir)
    server = Server(data_dir, env)
    report: dict[str, Any] = {}
    try:
        server.start()
        issuer = f"http://{bt.HOST}:{server.port}"
        n = min(args.soak_agents, size)
        gateway_svid = trust_domain.mint_svid(DEV_GATEWAY, issuer, ttl_s=bt.SVID_TTL_S)
        requests = []
        for i in range(n):
            agent_svid = trust_domain.mint_svid(agent_id(i), issuer, ttl_s=bt.SVID_TTL_S)
            params = bt.token_params(gateway_svid, agent_svid)
            requests.append(bt.http_request(server.port, params))
        total = args.soak_requests
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            pool.submit(bt.run_load, server.port, requests[:200], 200, 8, 60).result()
            for label, writing in (("alone", False), ("with writes", True)):
                stop = threading.Event()
                counts = {"writes": 0}
                writer = threading.Thread(target=churn, args=(server.port, token, args.soak_rate,
                                                              stop, counts), daemon=True)
                if writing:
                    writer.start()
                began = time.monotonic()
                load = pool.submit(bt.run_load, server.port, requests, total,
                                   args.concurrency, args.soak_s * 3).result()
                elapsed = time.monotonic() - began
                stop.set()
                if writing:
                    writer.join(10)
                latencies = sorted(s * 1000 for s in load.latencies_s)
                ok = load.statuses.get(200, 0)
                report[label] = {
                    "tokens/s": ok / load.wall_s if load.wall_s else 0.0,
                    "p99 ms": bt.percentile(latencies, 0.99) if latencies else float("nan"),
                    "errors": sum(load.statuses.values()) - ok + (1 if load.failure else 0),
                    "writes": counts["writes"], "seconds": elapsed,
                }
    finally:
        server.stop()
    return report


def churn(port: int, token: str, rate: float, stop: threading.Event,
          counts: dict[str, int]) -> None:
    """Enroll, update the charter of, suspend and remove agents, ``rate`` writes a second."""
    step = 0
    mine: list[str] = []
    interval = 1.0 / rate
    due = time.monotonic()
    while not stop.is_set():
        kind = step % 4
        if kind == 0 or not mine:
            spiffe_id = f"{AGENT_PREFIX}/churn/{uuid.uuid4().hex}"
            admin(port, token, "POST", "/v1/agents",
                  {"spiffe_id": spiffe_id, "owner": "bench", "charter": charter_body("churn")})
            mine.append(spiffe_id)
        elif kind == 1:
            admin(port, token, "PATCH", f"/v1/agents/{mine[-1]}",
                  {"charter": charter_body(f"churn {step}")})
        elif kind == 2:
            admin(port, token, "POST", f"/v1/agents/{mine[-1]}/suspend")
        else:
            admin(port, token, "DELETE", f"/v1/agents/{mine.pop()}")
        counts["writes"] += 1
        step += 1
        due += interval
        stop.wait(max(0.0, due - time.monotonic()))


def own_cpu_s() -> float:
    """CPU of this process and every child it has waited for (the servers and their workers,
    the load generator), plus descendants still alive."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = bt.process_tree_cpu_s(os.getpid()) - (me.ru_utime + me.ru_stime)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + max(0.0, live)


# --- report -----------------------------------------------------------------------------


def section(results: list[SizeResult], soak_report: dict[str, Any] | None, argv: list[str],
            load_before: tuple[float, float, float], other_cpu_s: float,
            wall_s: float) -> str:
    shown = [a for i, a in enumerate(argv)
             if not a.startswith("--out") and (i == 0 or argv[i - 1] != "--out")]
    lines = [
        "<!-- bench:registry -->",
        "### Registry size",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {bt.machine()}; load "
        f"average before the run {load_before[0]:.2f}; other processes used "
        f"{other_cpu_s:.0f} CPU-s of the run's {wall_s:.0f} s:",
        "",
        "    " + " ".join(["python", "scripts/bench_registry.py", *shown]),
        "",
        "| agents | tools | bounds | startup to ready (s) | RSS when ready (MB) | "
        "admin write (ms) | bounds lookup, no memo (µs) |",
        "|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        lines.append(
            f"| {r.size:,} | {min(r.size, MAX_TOOLS):,} | {min(r.size, MAX_BOUNDS):,} | "
            f"{spread(r.startup_s, '{:.2f}')} | {spread(r.rss_mb, '{:.0f}')} | "
            f"{spread(r.write_ms)} | {spread(r.lookup_us)} |")
    lines.append("")
    lines.append("Medians with min-max over every round (admin writes: every write).")
    if soak_report:
        lines += ["", "| soak | tokens/s | p99 (ms) | errors | admin writes |",
                  "|---|--:|--:|--:|--:|"]
        for label, row in soak_report.items():
            lines.append(f"| {label} | {row['tokens/s']:,.0f} | {row['p99 ms']:.1f} | "
                         f"{row['errors']} | {row['writes']} |")
    lines.append("<!-- /bench:registry -->")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100_000])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--writes", type=int, default=40,
                        help="admin writes timed per size and round (default 40)")
    parser.add_argument("--soak-s", type=int, default=0,
                        help="rough length of each soak leg in seconds (0: no soak)")
    parser.add_argument("--soak-agents", type=int, default=10_000)
    parser.add_argument("--soak-rate", type=float, default=10.0,
                        help="admin writes per second during the soak (default 10)")
    parser.add_argument("--soak-requests", type=int, default=None,
                        help="requests per soak leg (default: about soak-s worth at 1,500/s)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--database-url", default=None,
                        help="a PostgreSQL maintenance database URL; each size gets a fresh "
                        "database (default: SQLite in a temp dir)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if min(args.sizes) < 1 or args.rounds < 1 or args.writes < 1:
        parser.error("--sizes, --rounds and --writes must be positive")
    if args.soak_requests is None:
        args.soak_requests = max(1000, args.soak_s * 1500)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    load_before = os.getloadavg()
    busy_before, wall_before = bt.machine_busy_cpu_s(), time.monotonic()
    own_before = own_cpu_s()
    results = {size: SizeResult(size) for size in args.sizes}
    soak_report = None
    with tempfile.TemporaryDirectory(prefix="writ-bench-registry-") as tmp:
        prepared = {size: prepare(size, args, Path(tmp)) for size in args.sizes}
        tokens = {size: admin_token(p[0], p[1]) for size, p in prepared.items()}
        try:
            for _ in range(args.rounds):
                for size in args.sizes:  # interleaved: every round visits every size
                    data_dir, env, _drop = prepared[size]
                    measure_round(size, data_dir, env, tokens[size], results[size], args.writes)
            if args.soak_s:
                largest = max(args.sizes)
                data_dir, env, _drop = prepared[largest]
                soak_report = soak(largest, data_dir, env, tokens[largest], args)
        finally:
            for _dir, _env, drop in prepared.values():
                if drop is not None:
                    drop()
    wall = time.monotonic() - wall_before
    other = max(0.0, bt.machine_busy_cpu_s() - busy_before - (own_cpu_s() - own_before))
    text = section(list(results.values()), soak_report, argv, load_before, other, wall)
    print(text)
    if args.out is not None:
        bt.rewrite_results(args.out, "registry", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
