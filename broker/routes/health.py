"""Liveness and readiness (docs/operations.md, "Health and readiness").

``/healthz`` says the process serves HTTP: it touches nothing else, so a hung database never
makes an orchestrator restart healthy replicas. ``/readyz`` says this replica can serve
tokens at all: its database answers within a short bound, it holds a signing key, and it
holds the bundle of its own trust domain when that domain is in the registry. A partner
trust domain whose bundle cannot be refreshed costs only that partner's tokens, never the
replica's place behind the load balancer; its state shows in ``/v1/trust-domains`` and the
metrics.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import Engine, text

from registry.bundles.trust import TrustBundles


class DatabaseProbe:
    """``SELECT 1`` on its own thread, awaited for at most ``timeout_s``.

    At most one probe is in flight: while one waits on a hung database, later checks
    answer at once that it has not returned, so a stalled server never piles up threads.
    """

    def __init__(self, engine: Engine, *, timeout_s: float) -> None:
        self._engine = engine
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._inflight: concurrent.futures.Future[None] | None = None

    async def check(self) -> str | None:
        """None when the database answered in time, else why not (no secret in it)."""
        with self._lock:
            probe = self._inflight
            waiting = probe is not None and not probe.done()
            if probe is None or probe.done():
                probe = self._inflight = concurrent.futures.Future()
                threading.Thread(target=self._run, args=(probe,), name="writ-db-probe",
                                 daemon=True).start()
        if waiting:
            return f"no answer within {self.timeout_s:g}s (an earlier check still waits)"
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(probe)), self.timeout_s)
        except TimeoutError:
            return f"no answer within {self.timeout_s:g}s"
        except Exception as err:
            return f"unavailable ({type(err).__name__})"
        return None

    def _run(self, probe: concurrent.futures.Future[None]) -> None:
        try:
            with self._engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except BaseException as err:
            probe.set_exception(err)
        else:
            probe.set_result(None)


class BundleCollector:
    """Prometheus gauges of every trust domain's bundle, read at scrape time."""

    def __init__(self, bundles: TrustBundles) -> None:
        self._bundles = bundles

    def collect(self) -> Iterable[Metric]:
        keys = GaugeMetricFamily("writ_trust_bundle_keys",
                                 "JWT-SVID keys held for the trust domain", labels=["trust_domain"])
        x509 = GaugeMetricFamily("writ_trust_bundle_x509_authorities",
                                 "X.509 authorities held for the trust domain",
                                 labels=["trust_domain"])
        fresh = GaugeMetricFamily("writ_trust_bundle_fresh",
                                  "1 when the bundle was refreshed within three intervals",
                                  labels=["trust_domain"])
        refreshed = GaugeMetricFamily("writ_trust_bundle_last_refresh_timestamp_seconds",
                                      "When the held bundle was fetched",
                                      labels=["trust_domain"])
        failures = GaugeMetricFamily("writ_trust_bundle_refresh_failures",
                                     "Refreshes failed in a row", labels=["trust_domain"])
        ignored = GaugeMetricFamily("writ_trust_bundle_ignored_elements",
                                    "Bundle elements ignored (unknown kty or use)",
                                    labels=["trust_domain"])
        for td, status in self._bundles.status().items():
            keys.add_metric([td], status.key_count or 0)
            x509.add_metric([td], status.x509_authority_count or 0)
            fresh.add_metric([td], 1 if status.fresh else 0)
            if status.last_refresh_at is not None:
                refreshed.add_metric([td], status.last_refresh_at)
            failures.add_metric([td], status.consecutive_failures)
            ignored.add_metric([td], status.ignored_elements)
        yield from (keys, x509, fresh, refreshed, failures, ignored)
