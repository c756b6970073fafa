"""What ``writ serve`` hands uvicorn besides the app: an HTTP protocol that bounds the
request head.

uvicorn's httptools protocol (llhttp) sets no bound of its own on a request head: a client
can send megabytes of one header, which httptools keeps concatenating (CPU and memory) until
the head ends. h11 has a bound but costs several times more per request. This protocol
counts the bytes received while a head is incomplete and, past the bound, answers 431 and
closes the connection (RFC 6585 §5). The bound is uvicorn's own setting for h11,
``h11_max_incomplete_event_size``, so both parsers read one number. The app's
``InputBounds`` still checks every head that does complete.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

DEFAULT_MAX_HEAD_BYTES = 24 * 1024
_BODY = json.dumps({"error": "invalid_request",
                    "error_description": "request headers too large"}).encode()
REFUSAL = (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
           b"content-type: application/json\r\ncache-control: no-store\r\n"
           b"content-length: " + str(len(_BODY)).encode() + b"\r\nconnection: close\r\n\r\n"
           + _BODY)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._max_head = config.h11_max_incomplete_event_size or DEFAULT_MAX_HEAD_BYTES
        self._in_head = True
        self._boundary = False
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_head, self._boundary = False, True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # what comes next is the next request's head
        self._in_head, self._boundary = True, True

    def data_received(self, data: bytes) -> None:
        self._boundary = False
        super().data_received(data)
        if self._boundary:
            # a head or a message ended within this read: the rest of it is a body or the
            # start of the next head, counted from the next read on (the bound may be passed
            # by one read, never by more)
            self._head_bytes = 0
            return
        if not self._in_head or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > self._max_head:
            self.transport.write(REFUSAL)
            self.transport.close()

