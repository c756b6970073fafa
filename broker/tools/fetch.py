"""Fetching a tool's metadata document with httpx, under the rules of
draft-ietf-oauth-client-id-metadata-document (DESIGN §4).

- The URL follows ``registry.tools.check_tool_url`` (https, a path, no userinfo, fragment
  or dot-segments).
- Every connection goes through ``GuardedBackend``, an httpcore network backend: it resolves
  the host itself, refuses the connection if *any* resolved address is special-use (unless
  the operator allowed it), and connects to a checked address. TLS still verifies the
  original host name, which httpcore sends as SNI. Nothing is resolved twice, so a DNS
  answer cannot change between the check and the connection.
- No proxy from the environment, no redirects, only ``200``, a JSON content type, no
  content coding, at most ``max_document_bytes`` counted while reading, connect and read
  timeouts and a deadline for the whole fetch.
- The document is fresh for its ``Cache-Control: max-age`` kept within the configured
  bounds. An error is never cached: the caller keeps the last good document, if any.
"""

from __future__ import annotations

import concurrent.futures
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from broker.tools.addresses import AddressPolicy, BlockedAddress, parse_address
from broker.tools.settings import ToolSettings
from registry.tool_store import FetchTimes
from registry.tools import ToolDocument, ToolError, check_tool_url, decode_tool_document

#: Resolves ``(host, port)`` to IP address strings; tests inject their own.
Resolver = Callable[[str, int], Sequence[str]]

USER_AGENT = "writ-tool-metadata/1"


class ToolFetchError(Exception):
    """A fetch that failed; ``reason`` is machine-readable, the message safe to show."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# getaddrinfo has no timeout of its own (resolv.conf retries can take tens of seconds): a
# name is resolved on one of these threads and waited for no longer than the connect timeout
_RESOLVERS = concurrent.futures.ThreadPoolExecutor(max_workers=4,
                                                   thread_name_prefix="writ-tool-resolve")


class GuardedBackend(httpcore.NetworkBackend):
    """An httpcore network backend that checks every address it connects to."""

    def __init__(self, policy: AddressPolicy, resolver: Resolver = system_resolver) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = httpcore.SyncBackend()

    def _resolve(self, host: str, port: int, timeout: float | None) -> Sequence[str]:
        """The resolver's answer, or ``ToolFetchError("timeout")`` once ``timeout`` passed
        (a resolution left behind ends on its own thread; its answer is never used)."""
        answer = _RESOLVERS.submit(self._resolver, host, port)
        try:
            return answer.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            answer.cancel()  # still queued behind stuck resolutions: never started
            raise ToolFetchError("timeout", f"resolving {host} took longer than "
                                 f"{timeout:g} s") from None

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            resolved = self._resolve(host, port, timeout)
            addresses = [parse_address(a) for a in resolved]
        except (OSError, ValueError, UnicodeError) as err:
            raise ToolFetchError("resolve_failed", f"cannot resolve {host}") from err
        if not addresses:
            raise ToolFetchError("resolve_failed", f"{host} has no address")
        for address in addresses:
            try:
                self._policy.check(host, address)
            except BlockedAddress as err:
                raise ToolFetchError("address_blocked", f"{host} resolves to a special-use "
                                     f"address ({err.category}: {err.address})") from err
        failure: Exception | None = None
        for address in addresses:
            try:
                return self._inner.connect_tcp(str(address), port, timeout=timeout,
                                               local_address=local_address,
                                               socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as err:
                failure = err
        assert failure is not None
        raise failure

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None,
                            ) -> httpcore.NetworkStream:
        raise ToolFetchError("connect_failed", "tool metadata is fetched over TCP only")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _Body(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class GuardedTransport(httpx.BaseTransport):
    """An httpx transport over an httpcore pool whose connections ``GuardedBackend``
    makes. HTTP/1.1 only; no proxy."""

    def __init__(self, *, ssl_context: ssl.SSLContext, backend: httpcore.NetworkBackend,
                 max_connections: int = 8) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, max_connections=max_connections, http1=True,
            http2=False, retries=0, network_backend=backend,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        response = self._pool.handle_request(httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host,
                             port=request.url.port, target=request.url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        ))
        assert isinstance(response.stream, Iterable)
        return httpx.Response(status_code=response.status, headers=response.headers,
                              stream=_Body(response.stream), extensions=response.extensions)

    def close(self) -> None:
        self._pool.close()


@dataclass(frozen=True, slots=True)
class Fetched:
    document: ToolDocument
    times: FetchTimes


def cache_lifetime_s(cache_control: str | None, settings: ToolSettings) -> int:
    """RFC 9111 §5.2.2: ``max-age`` (``no-store``/``no-cache``: as short as allowed),
    kept within ``[cache_min_s, cache_max_s]``; ``cache_default_s`` when absent."""
    directives: dict[str, str] = {}
    for part in (cache_control or "").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            directives.setdefault(name.strip().lower(), value.strip().strip('"'))
    if "no-store" in directives or "no-cache" in directives:
        lifetime = settings.cache_min_s
    elif directives.get("max-age", "").isdigit():
        lifetime = int(directives["max-age"])
    else:
        lifetime = settings.cache_default_s
    return max(settings.cache_min_s, min(lifetime, settings.cache_max_s))


def _json_media_type(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                           and media.endswith("+json"))


def default_ssl_context(ca_file: str | None = None) -> ssl.SSLContext:
    if ca_file is not None:
        return ssl.create_default_context(cafile=ca_file)
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


class ToolFetcher:
    """Fetches and validates tool metadata documents; thread-safe."""

    def __init__(
        self,
        settings: ToolSettings,
        *,
        resolver: Resolver = system_resolver,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._clock = clock
        policy = AddressPolicy.of(settings.allowed_networks, settings.allowed_hosts)
        context = ssl_context or default_ssl_context(
            str(settings.ca_file) if settings.ca_file else None)
        self._client = httpx.Client(
            transport=GuardedTransport(ssl_context=context,
                                       backend=GuardedBackend(policy, resolver)),
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s),
            headers={"Accept": "application/json", "Accept-Encoding": "identity",
                     "User-Agent": USER_AGENT},
        )

    def close(self) -> None:
        self._client.close()

    def fetch(self, url: str) -> Fetched:
        """Fetch ``url`` and return its validated document, or raise ``ToolFetchError``."""
        try:
            check_tool_url(url)
        except ToolError as err:
            raise ToolFetchError(err.reason, str(err)) from None
        cap = self.settings.max_document_bytes
        deadline = time.monotonic() + self.settings.fetch_deadline_s
        try:
            with self._client.stream("GET", url) as response:
                status = response.status_code
                if 300 <= status < 400:
                    # CIMD: redirects are not followed, wherever they point
                    raise ToolFetchError("redirect_refused", f"the server answered {status} "
                                         "(a redirect); redirects are not followed")
                if status != 200:
                    raise ToolFetchError("bad_status", f"the server answered {status}, not 200")
                if not _json_media_type(response.headers.get("content-type")):
                    raise ToolFetchError("bad_content_type", "the document is not served as "
                                         "application/json")
                if response.headers.get("content-encoding", "identity").lower() != "identity":
                    raise ToolFetchError("bad_content_encoding", "the document must be sent "
                                         "without a content coding")
                declared = response.headers.get("content-length")
                if declared is not None and (not declared.isdigit() or int(declared) > cap):
                    raise ToolFetchError("too_large", f"the document is larger than {cap} bytes")
                body = bytearray()
                for chunk in response.iter_raw():
                    body += chunk
                    if len(body) > cap:
                        raise ToolFetchError("too_large",
                                             f"the document is larger than {cap} bytes")
                    if time.monotonic() > deadline:
                        raise ToolFetchError("too_slow", "the document did not arrive within "
                                             f"{self.settings.fetch_deadline_s:g} s")
                cache_control = response.headers.get("cache-control")
        except ToolFetchError:
            raise
        except httpx.InvalidURL as err:  # not an HTTPError: a host httpx cannot read
            raise ToolFetchError("url_malformed", "the tool URL's host cannot be read") from err
        except (httpcore.TimeoutException, httpx.TimeoutException) as err:
            raise ToolFetchError("timeout", "the tool's metadata host did not answer in time"
                                 ) from err
        except (httpcore.ConnectError, httpx.ConnectError) as err:
            if isinstance(err.__context__, ssl.SSLError) or isinstance(err.__cause__,
                                                                       ssl.SSLError):
                raise ToolFetchError("tls_failed", "TLS with the tool's metadata host failed "
                                     "(certificate or handshake)") from err
            raise ToolFetchError("connect_failed", "cannot connect to the tool's metadata "
                                 "host") from err
        except (httpcore.NetworkError, httpcore.ProtocolError, httpx.HTTPError) as err:
            raise ToolFetchError("fetch_failed", "the tool's metadata could not be read"
                                 ) from err
        if time.monotonic() > deadline:
            raise ToolFetchError("too_slow", "the document did not arrive within "
                                 f"{self.settings.fetch_deadline_s:g} s")
        try:
            document = decode_tool_document(bytes(body), url=url)
        except ToolError as err:
            raise ToolFetchError(err.reason, str(err)) from None
        now = self._clock()
        lifetime = cache_lifetime_s(cache_control, self.settings)
        return Fetched(document, FetchTimes(
            fetched_at=now, fresh_until=now + lifetime,
            usable_until=now + lifetime + self.settings.max_stale_s,
        ))
