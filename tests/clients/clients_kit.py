"""What the third-party client tests share: the registered parties and the running Writ
(``tests/clients/conftest.py`` starts it)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey

from broker.cli.dev import DEV_AGENT, DEV_GATEWAY, DevTrustDomain

TRUST_DOMAIN = "dev.writ.local"
PKJ_GATEWAY = "spiffe://dev.writ.local/gateway/clients"
RESOURCE_SERVER = "spiffe://dev.writ.local/services/clients"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

#: Token profiles the clients run against: name -> environment of ``writ serve``. A second
#: profile is one more entry here (its setting, e.g. the agents-02 shape).
PROFILES: dict[str, dict[str, str]] = {
    "writ": {"WRIT_TOKEN_PROFILE": "writ"},
    "agents-02": {"WRIT_TOKEN_PROFILE": "agents-02"},
}


@dataclass
class Party:
    """A client registered with private_key_jwt: its id and its key (kid ``k1``)."""

    client_id: str
    key: ECKey
    key_file: Path  # the private JWK, mode 0600, for the Node scripts

    def private_jwk(self) -> dict[str, Any]:
        return {**self.key.as_dict(private=True), "kid": "k1", "alg": "ES256"}

    def assertion(self, aud: str) -> str:
        now = int(time.time())
        return jwt.encode({"alg": "ES256", "kid": "k1"},
                          {"iss": self.client_id, "sub": self.client_id, "aud": aud,
                           "jti": uuid.uuid4().hex, "iat": now, "exp": now + 60},
                          self.key, algorithms=["ES256"])


@dataclass
class Writ:
    url: str  # the issuer: https, TLS terminated on loopback in front of writ serve
    ca_file: Path  # the test CA that issued the front's certificate
    tls: ssl.SSLContext  # trusts that CA alone
    profile: str
    td: DevTrustDomain
    gateway: Party  # private_key_jwt
    resource_server: Party  # private_key_jwt, may introspect the trust domain's tokens

    def svid(self, spiffe_id: str) -> str:
        return self.td.mint_svid(spiffe_id, self.url)

    def agent_svid(self) -> str:
        return self.svid(DEV_AGENT)

    def dev_gateway_svid(self) -> str:
        """The seeded jwt-spiffe gateway's own JWT-SVID, aud = the issuer."""
        return self.svid(DEV_GATEWAY)


class TlsFront:
    """TLS terminated on loopback in front of a plain-http Writ, as a load balancer does in a
    deployment: bytes pass through unchanged. ``url`` is https; ``stop()`` closes every
    connection and joins the thread."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.backend_port = 0  # set once the backend listens; no connection comes before
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server = self._loop.run_until_complete(asyncio.start_server(
            self._handle, "127.0.0.1", 0, ssl=context))
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"https://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(client_w)
        try:
            backend_r, backend_w = await asyncio.open_connection("127.0.0.1", self.backend_port)
        except OSError:
            await self._close(client_w)
            return
        self._writers.add(backend_w)
        pumps = [asyncio.ensure_future(self._pump(client_r, backend_w)),
                 asyncio.ensure_future(self._pump(backend_r, client_w))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            await self._close(backend_w)
            await self._close(client_w)
            self._tasks.discard(task)

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        self._writers.discard(writer)
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    async def _shutdown(self) -> None:
        self._server.close()
        await self._server.wait_closed()
        for writer in list(self._writers):
            await self._close(writer)
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=20)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=20)
        self._loop.close()
