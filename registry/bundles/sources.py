"""Where a trust domain's bundle comes from: a file, a SPIFFE bundle endpoint, or the
Workload API (through pyspiffe). Bundle endpoints follow SPIFFE Federation §5.2: the
``https_web`` profile (Web PKI, or a per-source CA file) and ``https_spiffe`` (the endpoint's
X509-SVID, checked against its own trust domain's bundle)."""


from __future__ import annotations

import logging
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from spiffe import SpiffeId, TrustDomain, WorkloadApiClient
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
    """A SPIFFE bundle endpoint under the ``https_web`` profile (SPIFFE Federation §5.2.1).

    TLS is verified against the system store, or only against ``ca_file`` when given (read
    on each fetch, so a missing or broken file is a refresh error, never a wider trust);
    the source then owns its client, which ignores proxy and netrc settings from the
    environment. A shared ``http`` client is used as configured (it must verify
    certificates). Redirects are never followed and only a 200 answer is read.
    """

    kind = "endpoint"
    profile = "https_web"

    def __init__(
        self,
        url: str,
        *,
        http: httpx.Client | None = None,
        ca_file: str | Path | None = None,
        timeout_s: float = 10.0,
        max_bytes: int = MAX_BUNDLE_BYTES,
    ) -> None:
        check_endpoint_url(url)
        if http is not None and ca_file is not None:
            raise ValueError("ca_file applies to the source's own client; set verify on http")
        if not 0 < timeout_s <= 120:
            raise ValueError("timeout_s must be in (0, 120]")
        self.url = url
        self.ca_file = None if ca_file is None else str(ca_file)
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self._http = http

    def fetch(self, trust_domain: str, *, now: float) -> TrustBundle:
        if self._http is not None:
            body = _get_bundle(self._http, self.url, self.timeout_s, self.max_bytes)
        else:
            context = _ca_file_context(self.ca_file)
            with httpx.Client(verify=context, follow_redirects=False, trust_env=False) as http:
                body = _get_bundle(http, self.url, self.timeout_s, self.max_bytes)
        return parse_bundle(trust_domain, body, now=now, max_bytes=self.max_bytes)

    def close(self) -> None:
        return None  # a shared client belongs to its owner; an own one lives per fetch


class SpiffeEndpointBundleSource:
    """A self-serving SPIFFE bundle endpoint under the ``https_spiffe`` profile.

    SPIFFE Federation §5.2.2.4: the server certificate must be a valid X509-SVID for
    ``endpoint_spiffe_id``, checked against the X.509 authorities of the trust domain's own
    bundle: first the operator's bootstrap bundle, then the latest bundle fetched. OpenSSL
    builds and verifies the chain (validity, signatures, CA flags); this class then checks
    the leaf's SPIFFE ID (X509-SVID §2, §4). Nothing is read from a server that fails.
    """

    kind = "endpoint"
    profile = "https_spiffe"

    def __init__(
        self,
        url: str,
        *,
        endpoint_spiffe_id: str,
        trust_domain: str,
        bootstrap: TrustBundle,
        timeout_s: float = 10.0,
        max_bytes: int = MAX_BUNDLE_BYTES,
    ) -> None:
        check_endpoint_url(url)
        td = parse_trust_domain(trust_domain)
        self.endpoint_spiffe_id = check_endpoint_spiffe_id(endpoint_spiffe_id, td)
        if bootstrap.trust_domain != td:
            raise BundleError(f"bootstrap bundle of {bootstrap.trust_domain} offered for {td}")
        if not 0 < timeout_s <= 120:
            raise ValueError("timeout_s must be in (0, 120]")
        self.url = url
        self.trust_domain = td
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._authorities = bootstrap.x509_authorities

    @property
    def x509_authorities(self) -> tuple[bytes, ...]:
        """The CA certificates (DER) the next connection is verified against."""
        return self._authorities

    def fetch(self, trust_domain: str, *, now: float) -> TrustBundle:
        if trust_domain != self.trust_domain:
            raise BundleError(f"this endpoint serves {self.trust_domain}, not {trust_domain}")
        with self._lock:
            authorities = self._authorities
            if not authorities:
                # Trust Domain and Bundle §4.1.3: no x509-svid authority, nothing to trust
                raise BundleFetchError(
                    f"no X.509 authority of {trust_domain} to authenticate its bundle endpoint")
            context = _spiffe_context(authorities, self.endpoint_spiffe_id)
            with httpx.Client(verify=context, follow_redirects=False, trust_env=False) as http:
                body = _get_bundle(http, self.url, self.timeout_s, self.max_bytes)
            bundle = parse_bundle(trust_domain, body, now=now, max_bytes=self.max_bytes)
            # §5.2.2.4: the latest bundle validates every later connection
            self._authorities = bundle.x509_authorities
        return bundle

    def close(self) -> None:
        return None



class _WrongSvid(ssl.SSLError):
    """The endpoint's certificate chains to the trust domain but names another identity."""


class _SvidSocket(ssl.SSLSocket):
    """Checks the leaf's SPIFFE ID as part of the handshake, so no request is sent to a
    server that is not the configured endpoint."""

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        expected: str = self.context.endpoint_spiffe_id  # type: ignore[attr-defined]
        der = self.getpeercert(True)
        found = svid_spiffe_id(x509.load_der_x509_certificate(der)) if der else None
        if found != expected:
            raise _WrongSvid(f"bundle endpoint is {found or 'not an X509-SVID'}, "
                             f"not {expected} (SPIFFE Federation §5.2.2.4)")


def check_endpoint_url(url: str) -> str:
    """SPIFFE Federation §5.2.1.1, §5.2.2.1: an https URL without userinfo (nor fragment)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise BundleError(f"bundle endpoint must be an https:// URL, not {url!r}")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise BundleError("bundle endpoint URL must carry no userinfo or fragment")
    return url


def check_endpoint_spiffe_id(value: str, trust_domain: str) -> str:
    """The endpoint's SPIFFE ID: well formed, and in ``trust_domain`` (a self-serving
    endpoint, SPIFFE Federation §5.2.2.2; other endpoints are not supported)."""
    try:
        sid = SpiffeId(value)
    except (PySpiffeError, ValueError) as err:
        raise BundleError(f"endpoint SPIFFE ID is malformed: {err}") from err
    if str(sid) != value:
        raise BundleError("endpoint SPIFFE ID must be in canonical form")
    if sid.trust_domain.name != trust_domain:
        raise BundleError(f"endpoint SPIFFE ID must be in {trust_domain} (a self-serving "
                          "bundle endpoint, SPIFFE Federation §5.2.2.2)")
    return value


def svid_spiffe_id(cert: x509.Certificate) -> str | None:
    """The SPIFFE ID of an X509-SVID leaf, or None when ``cert`` is not one.

    X509-SVID §2: exactly one URI SAN, a SPIFFE ID; §4.1: a leaf is not a CA.
    """
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return None
    except x509.ExtensionNotFound:
        pass
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1 or not uris[0].startswith("spiffe://"):
        return None
    return uris[0]


def _ca_file_context(ca_file: str | None) -> ssl.SSLContext:
    """The system store, or only the CAs of ``ca_file``; a bad file is a fetch error."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as err:
        raise BundleFetchError(f"cannot load the CA file {ca_file}: {err}") from err


def _spiffe_context(authorities: tuple[bytes, ...], endpoint_spiffe_id: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.sslsocket_class = _SvidSocket
    context.endpoint_spiffe_id = endpoint_spiffe_id  # type: ignore[attr-defined]
    # §5.2.2.4: identity is the SPIFFE ID in the URI SAN, not the host name
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    # X509-SVID §6.1: a bundle CA SHOULD be self-signed, so an intermediate may anchor
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    try:
        context.load_verify_locations(cadata=b"".join(authorities))
    except ssl.SSLError as err:
        raise BundleFetchError(f"unusable X.509 authorities: {err}") from err
    return context


def _get_bundle(
    http: httpx.Client,
    url: str,
    timeout_s: float,
    max_bytes: int,
) -> bytes:
    deadline = time.monotonic() + timeout_s
    try:
        with http.stream(
            "GET",
            url,
            headers={"Accept": "application/json", "Accept-Encoding": "identity"},
            follow_redirects=False,
            timeout=timeout_s,
        ) as resp:
            if resp.status_code != 200:
                note = " (redirects are not followed)" if resp.is_redirect else ""
                raise BundleFetchError(f"bundle endpoint answered HTTP {resp.status_code}{note}")
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise BundleError(f"bundle is larger than the {max_bytes}-byte cap")
                if time.monotonic() > deadline:
                    raise BundleFetchError(f"bundle endpoint timed out after {timeout_s}s")
    except httpx.TimeoutException as err:
        raise BundleFetchError(f"bundle endpoint timed out after {timeout_s}s") from err
    except httpx.HTTPError as err:
        raise BundleFetchError(_unreachable(err)) from err
    return bytes(body)


def _unreachable(err: httpx.HTTPError) -> str:
    """Why the endpoint could not be read: its certificate's fault when it was one."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, _WrongSvid):
            return str(cause.args[0])
        if isinstance(cause, ssl.SSLCertVerificationError):
            why = cause.verify_message
            return f"bundle endpoint unreachable: TLS certificate not trusted: {why}"
        cause = cause.__cause__ or cause.__context__
    return f"bundle endpoint unreachable: {err}"


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
