"""Throwaway TLS for tests: a CA, a localhost server certificate, a real HTTPS server.

    def handler(path: str) -> tuple[int, dict[str, str], bytes]:
        return 200, {"Content-Type": "application/json"}, b"{}"

    with https_server(handler) as (url, ca_pem_path):
        httpx.get(url + "/x", verify=ssl.create_default_context(cafile=ca_pem_path))

The server listens on 127.0.0.1 on a free port; ``url`` has no trailing slash. Each
connection gets its own thread, and leaving the block joins them all and closes every
socket, so tests stay clean under ``filterwarnings = error``.
"""

from __future__ import annotations

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
