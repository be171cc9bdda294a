"""A TCP proxy on loopback in front of one server, for fault tests: it can hold traffic (a
network partition: nothing arrives, nothing is refused), drop every connection (resets, then
refused), add latency, and resume.

It runs an asyncio loop in a background thread; the test's thread steers it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from service.cli.dev_servers import free_port

CHUNK = 65536
NO_LINGER = struct.pack("ii", 1, 0)


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._latency = 0.0
        self._refusing = False
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._transports: set[asyncio.Transport] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> None:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._serve, "127.0.0.1", self.port))

    def close(self) -> None:
        self._call(self._shut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def hold(self) -> None:
        """Stop carrying bytes either way; what is sent meanwhile arrives on ``resume`` (as TCP
        retransmits after a partition heals). New connections are accepted and held too."""
        self._call(self._hold())

    def drop(self) -> None:
        """Reset every open connection and refuse new ones until ``resume``."""
        self._call(self._drop())

    def resume(self) -> None:
        self._call(self._resume())

    def set_latency(self, seconds: float) -> None:
        """Deliver every chunk, each way, ``seconds`` after it arrived (order kept)."""
        self._latency = seconds

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _shut(self) -> None:
        self._server.close()
        await self._drop()
        # Pumps may still wait for a held flow: end them before the loop goes.
        pumps = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)

    async def _drop(self) -> None:
        self._refusing = True
        for transport in list(self._transports):
            # Linger 0: the close sends a reset, as a firewall's reject does; a plain close
            # would send an orderly end of stream, which a client takes for a server that left.
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, NO_LINGER)
            transport.abort()
        self._transports.clear()

    async def _hold(self) -> None:
        self._flowing.clear()

    async def _resume(self) -> None:
        self._refusing = False
        self._flowing.set()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            client_writer.transport.abort()
            return
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        pair = {client_writer.transport, server_writer.transport}
        self._transports |= pair
        try:
            await asyncio.gather(
                self._pump(client_reader, server_writer), self._pump(server_reader, client_writer)
            )
        except OSError:  # one side failed: the connection is over both ways
            pass
        finally:
            self._transports -= pair
            for transport in pair:
                transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read chunks as they come, and deliver each one ``latency`` later, while flowing; an
        end of stream is passed on after the data before it."""
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await chunks.get()
                await self._flowing.wait()
                await asyncio.sleep(due - self._loop.time())
                if not data:
                    writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        delivering = asyncio.create_task(deliver())
        try:
            while data := await reader.read(CHUNK):
                chunks.put_nowait((self._loop.time() + self._latency, data))
                if delivering.done():  # the other side is gone
                    break
            chunks.put_nowait((self._loop.time() + self._latency, b""))
            await delivering
        finally:
            delivering.cancel()


@contextmanager
def tcp_proxy(target_port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy(target_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()
