"""The trust bundles the hot path reads: in memory, refreshed from their sources."""


from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from registry.bundles.parse import BundleError, BundleKey, TrustBundle, parse_trust_domain
from registry.bundles.sources import BundleSource

log = logging.getLogger(__name__)

# SPIFFE Federation §4.2 asks publishers to add keys 3-5 refresh hints ahead of use: a bundle
# older than three intervals may be missing keys already in use
STALE_INTERVALS = 3

@dataclass(frozen=True)
class DomainStatus:
    """What ``/readyz`` and operators see of one trust domain; never key material."""

    trust_domain: str
    source: str | None
    key_count: int | None
    sequence: int | None
    refresh_hint_s: int | None
    last_refresh_at: float | None
    last_attempt_at: float | None
    last_error: str | None
    consecutive_failures: int
    next_refresh_at: float | None
    digest: str | None
    # a bundle is fresh while its last successful refresh is younger than STALE_INTERVALS
    # refresh intervals; a bundle set without a source (inline) stays fresh
    fresh: bool = False
    x509_authority_count: int | None = None
    ignored_elements: int = 0


@dataclass
class _Feed:
    source: BundleSource
    next_refresh_at: float
    last_attempt_at: float | None = None
    last_error: str | None = None
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class TrustBundles:
    """The trust bundles the hot path reads: in memory, swapped whole, thread-safe.

    ``version`` moves on every change of any domain's keys, so a cache of validated SVIDs
    keyed on it can be dropped. ``start()`` runs a daemon thread refreshing each source
    at its bundle's refresh hint, bounded by ``min_refresh_s``/``max_refresh_s``.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        min_refresh_s: float = 5.0,
        max_refresh_s: float = 3600.0,
        default_refresh_s: float = 300.0,
        on_refresh: Callable[[str, DomainStatus, TrustBundle | None], None] | None = None,
    ) -> None:
        if not 0 < min_refresh_s <= default_refresh_s <= max_refresh_s:
            raise ValueError("need 0 < min_refresh_s <= default_refresh_s <= max_refresh_s")
        self._clock = clock
        self.min_refresh_s = min_refresh_s
        self.max_refresh_s = max_refresh_s
        self.default_refresh_s = default_refresh_s
        self._lock = threading.Lock()
        self._bundles: Mapping[str, TrustBundle] = MappingProxyType({})
        self._feeds: dict[str, _Feed] = {}
        self._version = 0
        self._wake = threading.Event()
        self._refresher: tuple[threading.Thread, threading.Event] | None = None
        # told after each refresh attempt (status, and the bundle when one was installed)
        self._on_refresh = on_refresh

    # Hot path: reads of an immutable mapping that is replaced, never mutated.
    @property
    def version(self) -> int:
        return self._version

    def get(self, trust_domain: str) -> TrustBundle | None:
        return self._bundles.get(trust_domain)

    def keys_for(self, trust_domain: str) -> Mapping[str, BundleKey] | None:
        """The domain's JWT-SVID keys by kid; None when Writ holds no bundle for it."""
        bundle = self._bundles.get(trust_domain)
        return None if bundle is None else bundle.keys

    def domains(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted(set(self._bundles) | set(self._feeds)))

    def ready(self) -> bool:
        """True when every configured trust domain has a bundle."""
        with self._lock:
            return all(td in self._bundles for td in self._feeds)

    def set(self, trust_domain: str, bundle: TrustBundle) -> None:
        """Install ``bundle`` as the domain's current bundle."""
        if bundle.trust_domain != parse_trust_domain(trust_domain):
            raise BundleError(f"bundle of {bundle.trust_domain} offered for {trust_domain}")
        with self._lock:
            self._install(bundle)

    def remove(self, trust_domain: str) -> None:
        """Forget the domain: its bundle, its source (closed) and its status."""
        with self._lock:
            feed = self._feeds.pop(trust_domain, None)
            if trust_domain in self._bundles:
                self._bundles = MappingProxyType(
                    {td: b for td, b in self._bundles.items() if td != trust_domain}
                )
                self._version += 1
        if feed is not None:
            feed.source.close()

    def add_source(self, trust_domain: str, source: BundleSource) -> None:
        """Configure where the domain's bundle comes from; the store closes it when done.

        The domain is due for refresh at once; a bundle it already holds is kept.
        """
        td = parse_trust_domain(trust_domain)
        with self._lock:
            old = self._feeds.get(td)
            self._feeds[td] = _Feed(source=source, next_refresh_at=self._clock())
        if old is not None and old.source is not source:
            old.source.close()
        self._wake.set()

    def refresh(self, trust_domain: str) -> bool:
        """Fetch the domain's bundle from its source; on failure keep the last good one.

        Returns True when a bundle was installed. Raises KeyError for a domain with no source.
        """
        with self._lock:
            feed = self._feeds.get(trust_domain)
        if feed is None:
            raise KeyError(f"no bundle source for trust domain {trust_domain!r}")
        with feed.lock:
            started = self._clock()
            error: str | None = None
            bundle: TrustBundle | None = None
            try:
                bundle = feed.source.fetch(trust_domain, now=started)
            except BundleError as err:
                error = str(err)
            except Exception as err:
                log.exception("bundle refresh of %s failed unexpectedly", trust_domain)
                error = f"unexpected {type(err).__name__}"
            with self._lock:
                if self._feeds.get(trust_domain) is not feed:
                    return False  # removed or replaced meanwhile
                current = self._bundles.get(trust_domain)
                if bundle is not None and error is None:
                    error = _rollback(current, bundle)
                finished = self._clock()
                feed.last_attempt_at = finished
                installed = error is None and bundle is not None
                if installed and bundle is not None:
                    self._install(bundle)
                    feed.last_error = None
                    feed.failures = 0
                    feed.next_refresh_at = finished + self._interval(bundle)
                else:
                    feed.last_error = error
                    feed.failures += 1
                    feed.next_refresh_at = finished + self._backoff(current, feed.failures)
        if not installed:
            log.warning("bundle refresh of %s failed: %s", trust_domain, error)
        self._told(trust_domain, bundle if installed else None)
        return installed

    def _told(self, trust_domain: str, bundle: TrustBundle | None) -> None:
        if self._on_refresh is None:
            return
        status = self.status().get(trust_domain)
        if status is None:
            return
        try:
            self._on_refresh(trust_domain, status, bundle)
        except Exception:
            log.exception("bundle refresh hook of %s failed", trust_domain)

    def run_pending(self) -> int:
        """Refresh every domain whose refresh time has come; return how many were tried."""
        now = self._clock()
        with self._lock:
            due = [td for td, feed in self._feeds.items() if feed.next_refresh_at <= now]
        for td in due:
            try:
                self.refresh(td)
            except KeyError:
                continue  # removed meanwhile
        return len(due)

    def status(self) -> dict[str, DomainStatus]:
        with self._lock:
            bundles, feeds = self._bundles, dict(self._feeds)
        out: dict[str, DomainStatus] = {}
        now = self._clock()
        for td in sorted(set(bundles) | set(feeds)):
            bundle, feed = bundles.get(td), feeds.get(td)
            fresh = bundle is not None and (
                feed is None
                or now - bundle.fetched_at <= STALE_INTERVALS * self._interval(bundle)
            )
            out[td] = DomainStatus(
                trust_domain=td,
                source=feed.source.kind if feed else None,
                key_count=len(bundle.keys) if bundle else None,
                sequence=bundle.sequence if bundle else None,
                refresh_hint_s=bundle.refresh_hint_s if bundle else None,
                last_refresh_at=bundle.fetched_at if bundle else None,
                last_attempt_at=feed.last_attempt_at if feed else None,
                last_error=feed.last_error if feed else None,
                consecutive_failures=feed.failures if feed else 0,
                next_refresh_at=feed.next_refresh_at if feed else None,
                digest=bundle.digest if bundle else None,
                fresh=fresh,
                x509_authority_count=len(bundle.x509_authorities) if bundle else None,
                ignored_elements=len(bundle.ignored) if bundle else 0,
            )
        return out

    # --- background refresher ---

    def start(self) -> None:
        """Start the daemon thread that refreshes sources when they are due."""
        with self._lock:
            if self._refresher is not None:
                return
            stop = threading.Event()
            thread = threading.Thread(
                target=self._run, args=(stop,), name="writ-trust-bundles", daemon=True
            )
            self._refresher = thread, stop
        thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the refresher; a fetch in flight ends within its own timeout."""
        with self._lock:
            refresher, self._refresher = self._refresher, None
        if refresher is not None:
            thread, stop = refresher
            stop.set()
            self._wake.set()
            thread.join(timeout_s)

    def close(self) -> None:
        """Stop the refresher and close every source."""
        self.stop()
        with self._lock:
            feeds, self._feeds = list(self._feeds.values()), {}
        for feed in feeds:
            feed.source.close()

    def __enter__(self) -> TrustBundles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                self.run_pending()
            except Exception:
                log.exception("trust bundle refresher pass failed")
            if stop.is_set():
                break
            self._wake.wait(self._sleep_s())

    def _sleep_s(self) -> float:
        with self._lock:
            due = [feed.next_refresh_at for feed in self._feeds.values()]
        if not due:
            return self.max_refresh_s
        return min(max(min(due) - self._clock(), 0.0), self.max_refresh_s)

    # --- helpers, called with self._lock held ---

    def _install(self, bundle: TrustBundle) -> None:
        old = self._bundles.get(bundle.trust_domain)
        self._bundles = MappingProxyType({**self._bundles, bundle.trust_domain: bundle})
        if old is None or old.digest != bundle.digest:
            self._version += 1
            log.info("trust bundle of %s now has %d key(s)", bundle.trust_domain, len(bundle.keys))

    def _interval(self, bundle: TrustBundle | None) -> float:
        # Trust Domain and Bundle §4.1.2 / §6.2: follow the hint, else a low default.
        hint = bundle.refresh_hint_s if bundle is not None else None
        wanted = self.default_refresh_s if hint is None else float(hint)
        return min(max(wanted, self.min_refresh_s), self.max_refresh_s)

    def _backoff(self, current: TrustBundle | None, failures: int) -> float:
        step = self.min_refresh_s * 2 ** min(failures - 1, 32)
        return min(step, self._interval(current))


def _rollback(current: TrustBundle | None, new: TrustBundle) -> str | None:
    # Trust Domain and Bundle §4.1.1: spiffe_sequence only ever increases.
    if current is None or current.sequence is None or new.sequence is None:
        return None
    if new.sequence < current.sequence:
        return f"spiffe_sequence went back from {current.sequence} to {new.sequence}"
    return None
