"""SPIFFE trust bundles: the JWT-SVID keys of each trust domain Writ accepts (DESIGN §4, §6).

A bundle comes from a file, a SPIFFE bundle endpoint (``https_web`` profile) or the Workload
API. ``TrustBundles`` is the in-memory store the hot path reads; a failed refresh keeps the
last good bundle and records the error. Bundle format: SPIFFE Trust Domain and Bundle §4.
"""

from __future__ import annotations

import hashlib
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import ECKey, KeyParameters, RSAKey
from spiffe import JwtBundle, TrustDomain, WorkloadApiClient
from spiffe.errors import PySpiffeError

from jwks.errors import JwksError
from jwks.keys import SVID_ALGORITHMS

log = logging.getLogger(__name__)

BundleKey = ECKey | RSAKey

MAX_BUNDLE_BYTES: Final = 256 * 1024
JWT_SVID_USE: Final = "jwt-svid"

_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# JWT-SVID §2.1: ES256/ES384/ES512 name these curves; RS*/PS* need an RSA key.
_EC_CURVES: Final = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_ALG_CURVE: Final = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_MIN_RSA_BITS: Final = 2048
_MAX_UINT64: Final = 2**64 - 1


class BundleError(JwksError):
    """A trust bundle is malformed or does not belong to the trust domain it was asked for."""

    code = "invalid_bundle"


class BundleFetchError(BundleError):
    """A bundle source could not be read (unreachable, TLS failure, HTTP status, timeout)."""

    code = "bundle_unavailable"


@dataclass(frozen=True, eq=False)
class TrustBundle:
    """The JWT-SVID authorities of one trust domain; compare two bundles by ``digest``."""

    trust_domain: str
    keys: Mapping[str, BundleKey] = field(repr=False)
    refresh_hint_s: int | None
    sequence: int | None
    fetched_at: float
    digest: str


def parse_trust_domain(name: str) -> str:
    """Return ``name`` if it is a trust domain name in canonical form (SPIFFE-ID §2.1)."""
    if not isinstance(name, str) or not 0 < len(name) <= 255:
        raise BundleError("trust domain name must be a string of 1 to 255 characters")
    try:
        canonical = TrustDomain(name).name
    except (PySpiffeError, ValueError) as err:
        raise BundleError(f"malformed trust domain name: {err}") from err
    if canonical != name:
        raise BundleError(f"trust domain must be a bare lowercase name, not {name!r}")
    return name


def parse_bundle(
    trust_domain: str, data: bytes, *, now: float, max_bytes: int = MAX_BUNDLE_BYTES
) -> TrustBundle:
    """Parse a SPIFFE bundle (a JWK Set) into the JWT-SVID keys of ``trust_domain``."""
    td = parse_trust_domain(trust_domain)
    if not isinstance(data, bytes | bytearray):
        raise BundleError("bundle must be bytes")
    if len(data) > max_bytes:
        raise BundleError(f"bundle is larger than the {max_bytes}-byte cap")
    try:
        doc = json.loads(
            bytes(data).decode("utf-8"),
            object_pairs_hook=_no_duplicate_members,
            parse_constant=_no_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise BundleError(f"bundle is not valid JSON: {err}") from err
    if not isinstance(doc, dict):
        raise BundleError("bundle must be a JSON object")
    # Trust Domain and Bundle §4.1.3: the keys parameter MUST be present.
    entries = doc.get("keys")
    if not isinstance(entries, list):
        raise BundleError("bundle must have a 'keys' array")
    refresh_hint = _optional_uint(doc, "spiffe_refresh_hint")
    sequence = _optional_uint(doc, "spiffe_sequence")

    jwt_entries: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(entries):
        kid = _check_entry(index, entry)
        if kid is None:
            continue
        if kid in jwt_entries:
            raise BundleError(f"keys[{index}]: duplicate kid {kid!r}")
        jwt_entries[kid] = entry

    # pyspiffe parses the JWT authorities too; it silently skips keys it cannot use,
    # so a kid missing from its answer is an error here.
    filtered = json.dumps({"keys": list(jwt_entries.values())}).encode()
    try:
        authorities = JwtBundle.parse(TrustDomain(td), filtered).jwt_authorities
    except PySpiffeError as err:
        raise BundleError(f"JWT authorities rejected: {err}") from err
    missing = sorted(set(jwt_entries) - set(authorities))
    if missing:
        raise BundleError(f"unusable jwt-svid key(s): {missing}")
    keys = {
        kid: _import_authority(kid, authorities[kid], alg=jwt_entries[kid].get("alg"))
        for kid in jwt_entries
    }
    return _make_bundle(td, keys, refresh_hint=refresh_hint, sequence=sequence, now=now)


def bundle_from_authorities(
    trust_domain: str, authorities: Mapping[str, Any], *, now: float
) -> TrustBundle:
    """Build a bundle from pyspiffe's ``JwtBundle.jwt_authorities`` (kid -> public key)."""
    td = parse_trust_domain(trust_domain)
    keys = {kid: _import_authority(kid, key, alg=None) for kid, key in authorities.items()}
    return _make_bundle(td, keys, refresh_hint=None, sequence=None, now=now)


def _check_entry(index: int, entry: Any) -> str | None:
    """Validate one JWK of the set; return its kid if it is a JWT-SVID key, else None."""
    where = f"keys[{index}]"
    if not isinstance(entry, dict):
        raise BundleError(f"{where}: a JWK must be a JSON object")
    kty = entry.get("kty")
    if not isinstance(kty, str) or not kty:
        raise BundleError(f"{where}: kty MUST be set (Trust Domain and Bundle §4.2.1)")
    if kty == "oct":
        raise BundleError(f"{where}: symmetric keys have no place in a trust bundle")
    if _PRIVATE_MEMBERS.intersection(entry):
        raise BundleError(f"{where}: a trust bundle must not carry private key members")
    use = entry.get("use")
    if not isinstance(use, str) or not use:
        raise BundleError(f"{where}: use MUST be set (Trust Domain and Bundle §4.2.2)")
    # §4.2.2: x509-svid keys authenticate X509-SVIDs only; unknown uses are ignored.
    # §4.2.1: key types JWT-SVID cannot sign with (§2.1: RS, ES, PS) are ignored.
    if use != JWT_SVID_USE or kty not in ("EC", "RSA"):
        return None
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid:
        raise BundleError(f"{where}: a jwt-svid key must have a non-empty kid")
    alg = entry.get("alg")
    if alg is not None:
        if alg not in SVID_ALGORITHMS:
            raise BundleError(f"{where}: alg {alg!r} is not a JWT-SVID algorithm (§2.1)")
        fits = _ALG_CURVE.get(alg) == entry.get("crv") if kty == "EC" else alg[:2] in ("RS", "PS")
        if not fits:
            raise BundleError(f"{where}: alg {alg!r} does not fit a {kty} key")
    return kid


def _import_authority(kid: str, key: Any, *, alg: str | None) -> BundleKey:
    params: KeyParameters = {"kid": kid}
    if alg is not None:
        params["alg"] = alg
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _EC_CURVES:
            raise BundleError(f"key {kid!r}: curve {key.curve.name} is not allowed (JWT-SVID §2.1)")
        return ECKey.import_key(key, params)
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise BundleError(f"key {kid!r}: RSA keys need at least {_MIN_RSA_BITS} bits")
        return RSAKey.import_key(key, params)
    raise BundleError(f"key {kid!r}: only EC and RSA keys verify JWT-SVIDs (§2.1)")


def _make_bundle(
    td: str,
    keys: dict[str, BundleKey],
    *,
    refresh_hint: int | None,
    sequence: int | None,
    now: float,
) -> TrustBundle:
    canonical = json.dumps(
        sorted([kid, key.thumbprint(), key.alg or ""] for kid, key in keys.items()),
        separators=(",", ":"),
    )
    return TrustBundle(
        trust_domain=td,
        keys=MappingProxyType(keys),
        refresh_hint_s=refresh_hint,
        sequence=sequence,
        fetched_at=now,
        digest=hashlib.sha256(canonical.encode()).hexdigest(),
    )


def _optional_uint(doc: dict[str, Any], name: str) -> int | None:
    # Trust Domain and Bundle §4.1.1, §4.1.2: integers when set (64-bit for the sequence).
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_UINT64:
        raise BundleError(f"{name} must be a non-negative integer")
    return value


def _no_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise ValueError(f"duplicate member {name!r}")
        out[name] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# --- sources ---------------------------------------------------------------------------


class BundleSource(Protocol):
    """Where a trust domain's bundle comes from. ``kind`` names it in status output."""

    kind: str

    def fetch(self, trust_domain: str, *, now: float) -> TrustBundle: ...

    def close(self) -> None: ...


class FileBundleSource:
    """A SPIFFE bundle in a local file, read again on every refresh."""

    kind = "file"

    def __init__(self, path: str | Path, *, max_bytes: int = MAX_BUNDLE_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes

    def fetch(self, trust_domain: str, *, now: float) -> TrustBundle:
        try:
            with self.path.open("rb") as fh:
                data = fh.read(self.max_bytes + 1)
        except OSError as err:
            raise BundleFetchError(f"cannot read {self.path}: {err.strerror}") from err
        return parse_bundle(trust_domain, data, now=now, max_bytes=self.max_bytes)

    def close(self) -> None:
        return None


class EndpointBundleSource:
    """A SPIFFE bundle endpoint under the ``https_web`` profile (Trust Domain and Bundle §5.2.1).

    TLS is verified against the system store, or only against ``ca_file`` when given; the
    source then owns its client, which ignores proxy and netrc settings from the environment.
    A shared ``http`` client is used as configured (it must verify certificates). Redirects
    are never followed and only a 200 answer is read.
    """

    kind = "endpoint"

    def __init__(
        self,
        url: str,
        *,
        http: httpx.Client | None = None,
        ca_file: str | Path | None = None,
        timeout_s: float = 10.0,
        max_bytes: int = MAX_BUNDLE_BYTES,
    ) -> None:
        parts = urlsplit(url)
        # §5: the bundle endpoint is a TLS-protected HTTP endpoint (https scheme).
        if parts.scheme != "https" or not parts.hostname:
            raise BundleError(f"bundle endpoint must be an https:// URL, not {url!r}")
        if parts.username is not None or parts.password is not None or parts.fragment:
            raise BundleError("bundle endpoint URL must carry no userinfo or fragment")
        if http is not None and ca_file is not None:
            raise ValueError("ca_file applies to the source's own client; set verify on http")
        if not 0 < timeout_s <= 120:
            raise ValueError("timeout_s must be in (0, 120]")
        self.url = url
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self._owns_http = http is None
        if http is None:
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            http = httpx.Client(verify=context, follow_redirects=False, trust_env=False)
        self._http = http

    def fetch(self, trust_domain: str, *, now: float) -> TrustBundle:
        deadline = time.monotonic() + self.timeout_s
        try:
            with self._http.stream(
                "GET",
                self.url,
                headers={"Accept": "application/json", "Accept-Encoding": "identity"},
                follow_redirects=False,
                timeout=self.timeout_s,
            ) as resp:
                if resp.status_code != 200:
                    note = " (redirects are not followed)" if resp.is_redirect else ""
                    raise BundleFetchError(
                        f"bundle endpoint answered HTTP {resp.status_code}{note}"
                    )
                body = bytearray()
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise BundleError(f"bundle is larger than the {self.max_bytes}-byte cap")
                    if time.monotonic() > deadline:
                        raise BundleFetchError(f"bundle endpoint timed out after {self.timeout_s}s")
        except httpx.TimeoutException as err:
            raise BundleFetchError(f"bundle endpoint timed out after {self.timeout_s}s") from err
        except httpx.HTTPError as err:
            raise BundleFetchError(f"bundle endpoint unreachable: {err}") from err
        return parse_bundle(trust_domain, bytes(body), now=now, max_bytes=self.max_bytes)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()


class _JwtBundleFetcher(Protocol):
    def fetch_jwt_bundles(self, timeout: float | None = None) -> Any: ...

    def close(self) -> None: ...


class WorkloadApiBundleSource:
    """JWT bundles from the SPIFFE Workload API (a SPIRE agent) through pyspiffe.

    ``socket_path`` is a path or ``unix://`` address; None reads ``SPIFFE_ENDPOINT_SOCKET``.
    The client is opened on first fetch, so a missing agent is a recorded refresh error.
    Each refresh is one FetchJWTBundles call; the Workload API sends no refresh hint, so
    the store's default interval applies.
    """

    kind = "workload_api"

    def __init__(
        self,
        socket_path: str | None = None,
        *,
        timeout_s: float = 10.0,
        client: _JwtBundleFetcher | None = None,
    ) -> None:
        if socket_path is not None and socket_path.startswith("/"):
            socket_path = f"unix://{socket_path}"
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self._client = client
        self._owns_client = client is None
        self._lock = threading.Lock()

    def _connect(self) -> _JwtBundleFetcher:
        with self._lock:
            if self._client is None:
                try:
                    self._client = WorkloadApiClient(
                        self.socket_path, default_timeout=self.timeout_s
                    )
                except PySpiffeError as err:
                    raise BundleFetchError(f"Workload API unavailable: {err}") from err
            return self._client

    def fetch(self, trust_domain: str, *, now: float) -> TrustBundle:
        td = parse_trust_domain(trust_domain)
        client = self._connect()
        try:
            bundle = client.fetch_jwt_bundles(timeout=self.timeout_s).get_bundle_for_trust_domain(
                TrustDomain(td)
            )
        except PySpiffeError as err:
            raise BundleFetchError(f"Workload API fetch failed: {err}") from err
        if bundle is None:
            raise BundleFetchError(f"Workload API has no JWT bundle for {td}")
        return bundle_from_authorities(td, bundle.jwt_authorities, now=now)

    def close(self) -> None:
        with self._lock:
            if self._owns_client and self._client is not None:
                self._client.close()
                self._client = None


# --- the store -------------------------------------------------------------------------


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
                if error is None and bundle is not None:
                    self._install(bundle)
                    feed.last_error = None
                    feed.failures = 0
                    feed.next_refresh_at = finished + self._interval(bundle)
                    return True
                feed.last_error = error
                feed.failures += 1
                feed.next_refresh_at = finished + self._backoff(current, feed.failures)
        log.warning("bundle refresh of %s failed: %s", trust_domain, error)
        return False

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
        for td in sorted(set(bundles) | set(feeds)):
            bundle, feed = bundles.get(td), feeds.get(td)
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
