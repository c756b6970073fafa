"""Where a trust domain's bundle comes from: a file, a SPIFFE bundle endpoint, or the
Workload API (through pyspiffe)."""


from __future__ import annotations

import logging
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from spiffe import TrustDomain, WorkloadApiClient
from spiffe.errors import PySpiffeError

from registry.bundles.parse import (
    MAX_BUNDLE_BYTES,
    BundleError,
    BundleFetchError,
    TrustBundle,
    bundle_from_authorities,
    parse_bundle,
    parse_trust_domain,
)

log = logging.getLogger(__name__)

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
