"""A small round-robin reverse proxy: the local stand-in for the cluster's ingress.

It does what the ingress does for flashsale and nothing more: spread requests over the API
replicas in turn, append the peer's address to ``X-Forwarded-For``, and route around a
dead replica. A request is tried on the next replica only when connecting failed, that is,
before a byte of it was sent; once sent, a failure is a 502, because a ``POST /buy`` the
replica may already have admitted must never be replayed (the client may retry with its
``Idempotency-Key``).
"""

from __future__ import annotations

import asyncio
import itertools
import threading

import httpx
import uvicorn

from service.throwaway import free_port, wait_until

HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"host",
    b"content-length",
}
BAD_GATEWAY = b'{"type":"about:blank","title":"Bad Gateway","status":502}'


class RoundRobin:
    """The ASGI app. ``backends`` may be replaced at any time (a pod replaced by another)."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = list(backends)
        self._turn = itertools.count()
        self._client: httpx.AsyncClient | None = None
        self.connect_retries = 0
        """Requests moved to another replica because one refused the connection."""

    def _http(self) -> httpx.AsyncClient:
        # Created on the serving loop: an httpx client belongs to the loop that first uses it.
        if self._client is None:
            # Idle connections close before uvicorn's 5 s keep-alive ends them, so a request is
            # never written into a connection the replica is closing (a 502 for nothing).
            limits = httpx.Limits(max_connections=256, max_keepalive_connections=256, keepalive_expiry=2)
            self._client = httpx.AsyncClient(limits=limits, timeout=30)
        return self._client

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        body = await _read_body(receive)
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP and k != b"x-forwarded-for"]
        forwarded = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
        # As an ingress does: the chain so far, then the address this request came from.
        forwarded.append(scope["client"][0])
        headers.append((b"x-forwarded-for", ", ".join(forwarded).encode("latin-1")))
        path = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            path += "?" + scope["query_string"].decode("latin-1")

        backends = self.backends
        first = next(self._turn)
        for attempt in range(len(backends)):
            backend = backends[(first + attempt) % len(backends)]
            request = self._http().build_request(scope["method"], backend + path, headers=headers, content=body)
            try:
                upstream = await self._http().send(request)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                self.connect_retries += 1
                continue  # nothing was sent: the next replica may take it
            except httpx.TransportError:
                break  # sent, maybe processed: never replayed
            await _answer(send, upstream.status_code, upstream.headers.raw, upstream.content)
            return
        await _answer(send, 502, [(b"content-type", b"application/problem+json")], BAD_GATEWAY)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send, status: int, headers, body: bytes) -> None:
    # httpx decoded any content-encoding into .content, so neither that nor the length may pass.
    kept = [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP and k.lower() != b"content-encoding"]
    kept.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": kept})
    await send({"type": "http.response.body", "body": body})


class Proxy:
    """The proxy served by uvicorn on a free loopback port, in a thread of the test process."""

    def __init__(self, backends: list[str]) -> None:
        self.app = RoundRobin(backends)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            backlog=4096,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="e2e-proxy", daemon=True)

    def _serve(self) -> None:
        asyncio.run(self._server.serve())

    @property
    def backends(self) -> list[str]:
        return self.app.backends

    @backends.setter
    def backends(self, urls: list[str]) -> None:
        self.app.backends = list(urls)  # one assignment: a request sees the old list or the new

    def start(self) -> None:
        self._thread.start()
        wait_until(lambda: self._server.started or not self._thread.is_alive(), 10, "proxy")
        if not self._server.started:
            raise RuntimeError("the e2e proxy did not start")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(15)
