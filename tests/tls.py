"""Throwaway TLS for tests: a CA, a localhost server certificate, a real HTTPS server.

    def handler(path: str) -> tuple[int, dict[str, str], bytes]:
        return 200, {"Content-Type": "application/json"}, b"{}"

    with https_server(handler) as (url, ca_pem_path):
        httpx.get(url + "/x", verify=ssl.create_default_context(cafile=ca_pem_path))

``SpiffeCa`` issues X509-SVIDs (a URI SAN ``spiffe://...``, no DNS name) for a trust
domain and renders itself as an ``x509-svid`` bundle element; ``tls_server`` serves one
and can switch to another certificate while it runs (``use``).

The server listens on 127.0.0.1 on a free port; ``url`` has no trailing slash. Each
connection gets its own thread, and leaving the block joins them all and closes every
socket, so tests stay clean under ``filterwarnings = error``.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Gets the request path (with query); returns status, headers and body.
Handler = Callable[[str], tuple[int, Mapping[str, str], bytes]]


@dataclass(frozen=True)
class Pki:
    """A throwaway CA and one server certificate it issued, all PEM."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: str | Path) -> tuple[Path, Path, Path]:
        """Write ``ca.pem``, ``cert.pem`` and ``key.pem`` into ``directory``."""
        out = Path(directory)
        paths = out / "ca.pem", out / "cert.pem", out / "key.pem"
        for path, data in zip(paths, (self.ca_pem, self.cert_pem, self.key_pem), strict=True):
            path.write_bytes(data)
        return paths


def make_pki(
    *, dns_names: tuple[str, ...] = ("localhost",), ips: tuple[str, ...] = ("127.0.0.1",)
) -> Pki:
    """A fresh CA (P-256) and a server certificate for ``dns_names`` and ``ips``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Writ test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Pki(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


@contextmanager
def https_server(handler: Handler, *, pki: Pki | None = None) -> Iterator[tuple[str, str]]:
    """Serve ``handler`` over HTTPS on loopback; yield ``(url, ca_pem_path)``."""
    pki = pki or make_pki()
    with tempfile.TemporaryDirectory(prefix="writ-tls-") as tmp:
        ca_path, cert_path, key_path = pki.write(tmp)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        server = _TlsServer(("127.0.0.1", 0), _handler_class(handler), context)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        try:
            yield f"https://127.0.0.1:{server.server_address[1]}", str(ca_path)
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


class _TlsServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every connection thread
    block_on_close = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], context: Any
    ) -> None:
        super().__init__(address, handler)
        self._context: ssl.SSLContext = context

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs in the connection's thread, so a client that stalls or
        # rejects the certificate holds up nobody else.
        request.settimeout(10)
        try:
            conn = self._context.wrap_socket(request, server_side=True)
        except OSError:
            return
        handler_class: Any = self.RequestHandlerClass
        with conn:
            handler_class(conn, client_address, self)

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # a client that gave up mid-response is expected in tests


def _handler_class(handler: Handler) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                status, headers, body = handler(self.path)
            except Exception:
                status, headers, body = 500, {}, b"handler raised"
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if not any(name.lower() == "content-length" for name in headers):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return _Handler


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class SpiffeCa:
    """The X.509 authority of a test trust domain (X509-SVID §4.1: a CA whose URI SAN is
    the trust domain's SPIFFE ID)."""

    trust_domain: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def bundle_element(self) -> dict[str, Any]:
        """This CA as a SPIFFE bundle element (X509-SVID §6.1: ``use`` x509-svid, ``x5c``)."""
        numbers = self.key.public_key().public_numbers()
        return {
            "kty": "EC",
            "use": "x509-svid",
            "crv": "P-256",
            "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big")),
            "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()],
        }

    def issue(
        self,
        spiffe_id: str,
        *,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> Pki:
        """An X509-SVID server certificate for ``spiffe_id`` (and its key), as a ``Pki``."""
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE")]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - datetime.timedelta(hours=1))
            .not_valid_after(not_after or now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False)
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(spiffe_id)]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return Pki(
            ca_pem=self.cert.public_bytes(serialization.Encoding.PEM),
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()),
        )


def make_spiffe_ca(trust_domain: str) -> SpiffeCa:
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"{trust_domain} CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return SpiffeCa(trust_domain, cert, key)


class TlsServer:
    """A running loopback HTTPS server; ``use`` swaps its certificate for new handshakes."""

    def __init__(self, url: str, context: ssl.SSLContext, directory: Path) -> None:
        self.url = url
        self._context = context
        self._dir = directory
        self._serial = 0

    def use(self, pki: Pki) -> None:
        self._serial += 1
        cert, key = self._dir / f"cert{self._serial}.pem", self._dir / f"key{self._serial}.pem"
        cert.write_bytes(pki.cert_pem)
        key.write_bytes(pki.key_pem)
        self._context.load_cert_chain(cert, key)


@contextmanager
def tls_server(handler: Handler, pki: Pki) -> Iterator[TlsServer]:
    """Serve ``handler`` over HTTPS on loopback with ``pki``'s certificate."""
    with tempfile.TemporaryDirectory(prefix="writ-tls-") as tmp:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server = _TlsServer(("127.0.0.1", 0), _handler_class(handler), context)
        running = TlsServer(f"https://127.0.0.1:{server.server_address[1]}", context, Path(tmp))
        running.use(pki)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        try:
            yield running
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
