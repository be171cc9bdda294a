"""uvicorn's HTTP/1.1 protocol (httptools) with the guards it lacks, answering in RFC 9457 like
the rest of the API.

uvicorn times out idle keep-alive connections only: a client may take forever over a request's
head (slowloris) or its body, each holding a connection and, for a body, a request in the app;
it takes headers of any size; and it answers a request it cannot parse in text/plain. Here a
request must arrive whole within ``FLASHSALE_REQUEST_TIMEOUT_SECONDS`` (else 408 and the
connection is closed), its head must fit in ``MAX_HEAD_BYTES`` (else 431), and unparsable HTTP
is a problem+json 400. A request pays for this with a few attribute stores and a search for
the end of its head: one sweep a second checks every connection, instead of a timer each.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.api.problems import PROBLEM_MEDIA_TYPE, problem, problem_body
from service.core.settings import get_settings

MAX_HEAD_BYTES = 64 * 1024
"""Request line and headers; a browser's stay under 8 KiB, and the ingress's limits are lower."""
SWEEP_SECONDS = 1.0
READ_TIMED_OUT = "flashsale.read_timed_out"
"""Scope key set when this protocol answered 408 for a body that stopped: the app, left with a
disconnect, answers a 500 nobody receives, and ``service.api.front_door`` counts the 408 instead."""

_swept: set = set()
"""uvicorn server states (one per process) whose connections a sweep watches."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout = get_settings().request_timeout_seconds
        self.reading_since: float | None = None
        """Loop time the request being read began; None between requests (uvicorn's keep-alive
        timeout governs those) and while the app answers a request read whole."""
        self.head_bytes: int | None = 0
        """Bytes received of the request head being read; None from its end to the request's."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.reading_since = self.loop.time()  # a connection that never sends is closed too
        if self.server_state not in _swept:
            _swept.add(self.server_state)
            self.loop.call_later(SWEEP_SECONDS, _sweep, self.loop, self.server_state)

    def data_received(self, data: bytes) -> None:
        if self.head_bytes is not None:  # counted before parsing: a whole head may come in one read
            end = data.find(b"\r\n\r\n")
            self.head_bytes += len(data) if end < 0 else end
            if self.head_bytes > MAX_HEAD_BYTES:
                self._refuse(
                    431, "headers-too-large", f"Request line and headers must fit in {MAX_HEAD_BYTES} bytes."
                )
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.reading_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self.head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.reading_since, self.head_bytes = None, 0  # the next bytes are the next request's head
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "malformed-request", "The request is not valid HTTP/1.1.")

    def read_timed_out(self) -> None:
        self.reading_since = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:  # the app has the request, not its body
            if cycle.response_started:
                self.transport.close()
                return
            cycle.scope[READ_TIMED_OUT] = True  # type: ignore[literal-required]
        elif not self.head_bytes:  # not a byte of a request yet: nothing to answer
            self.transport.close()
            return
        self._refuse(408, "request-timeout", f"The request did not arrive within {self.read_timeout:g} s.")

    def _refuse(self, status: int, slug: str, detail: str) -> None:
        """Answer ``status`` with a problem and close: what is left of the request is unread."""
        body = problem_body(problem(status, slug, detail))
        head = [STATUS_LINE[status]]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head.append(b"content-type: %s\r\ncontent-length: %d\r\n" % (PROBLEM_MEDIA_TYPE.encode(), len(body)))
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def _sweep(loop: asyncio.AbstractEventLoop, state) -> None:
    """Close every connection whose request has been arriving for longer than its timeout."""
    now = loop.time()
    for connection in list(state.connections):
        since = getattr(connection, "reading_since", None)
        if since is not None and now - since > connection.read_timeout:
            connection.read_timed_out()
    loop.call_later(SWEEP_SECONDS, _sweep, loop, state)
