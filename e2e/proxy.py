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
import logging
import multiprocessing
from multiprocessing.connection import Connection
from pathlib import Path

import httpx
import uvicorn

from service.throwaway import free_port, port_open, wait_until

log = logging.getLogger("e2e.proxy")

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

        backends, http = self.backends, self._http()
        first = next(self._turn)
        for attempt in range(len(backends)):
            backend = backends[(first + attempt) % len(backends)]
            request = http.build_request(scope["method"], backend + path, headers=headers, content=body)
            try:
                upstream = await http.send(request)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                log.warning("%s %s: %s, trying the next replica", scope["method"], backend, exc)
                continue  # nothing was sent: the next replica may take it
            except httpx.TransportError as exc:
                log.warning("%s %s: %r after sending: 502", scope["method"], backend, exc)
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


def _serve(port: int, backends: list[str], updates: Connection, log_path: str) -> None:
    """The proxy process: uvicorn on ``port``; new backend lists arrive on ``updates``."""
    logging.basicConfig(filename=log_path, level=logging.WARNING, format="%(asctime)s %(message)s")
    app = RoundRobin(backends)

    def take_update() -> None:
        try:
            app.backends = updates.recv()  # one assignment: a request sees the old list or the new
        except EOFError:  # the test process is gone: so are we
            asyncio.get_running_loop().remove_reader(updates.fileno())
            server.should_exit = True

    async def serve() -> None:
        asyncio.get_running_loop().add_reader(updates.fileno(), take_update)
        await server.serve()

    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on", backlog=4096
    )
    server = uvicorn.Server(config)
    asyncio.run(serve())


class Proxy:
    """The proxy in a process of its own (beside the load generator it must not share a core
    with), on a free loopback port."""

    def __init__(self, backends: list[str], log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._backends = list(backends)
        self._updates, self._child_end = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_serve,
            args=(self.port, self._backends, self._child_end, str(log_dir / "proxy.log")),
            name="e2e-proxy",
            daemon=True,
        )

    @property
    def backends(self) -> list[str]:
        return list(self._backends)

    @backends.setter
    def backends(self, urls: list[str]) -> None:
        self._backends = list(urls)
        self._updates.send(self._backends)

    def start(self) -> None:
        self._process.start()
        self._child_end.close()  # the child's copy alone: it reads EOF if the test process dies
        wait_until(
            lambda: port_open("127.0.0.1", self.port) or not self._process.is_alive(), 30, "the e2e proxy"
        )
        if not self._process.is_alive():
            raise RuntimeError(f"the e2e proxy exited with {self._process.exitcode}")

    def stop(self) -> None:
        if self._process.is_alive():
            self._process.terminate()  # SIGTERM: uvicorn finishes what it is answering
            self._process.join(15)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._updates.close()
