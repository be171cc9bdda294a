"""nginx as the local target's ingress, doing for flashsale what the kind cluster's Traefik does.

It spreads requests over the API replicas in turn, appends the peer's address to
``X-Forwarded-For``, and keeps idle upstream connections for 90 s as Traefik does
(``idleConnTimeout``), so the API's longer keep-alive (FLASHSALE_KEEP_ALIVE_SECONDS) is tested
against the real order of closing. A request goes to the next replica only when connecting
failed: a ``POST /buy`` that was sent is never replayed (nginx's default for a non-idempotent
request), so a lost answer shows as a 502 instead of a second order.

A new backend list is a new configuration and a reload (SIGHUP): nginx's workers finish what
they answer and new connections see the new list.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import httpx

from service.cli.dev_servers import free_port, wait_until

NGINX_PACKAGE = "nginx-light"
UPSTREAM_IDLE_SECONDS = 90
"""Traefik's default ``serversTransport.forwardingTimeouts.idleConnTimeout``."""
CLIENT_IDLE_SECONDS = 75
"""How long a buyer's idle connection stays open (nginx's default), beyond any client's own."""
GENERATION_PATH = "/.ingress/generation"

CONFIG = """\
worker_processes 1;
daemon off;
pid {state}/nginx.pid;
error_log {state}/ingress-error.log warn;
{user}
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {state}/client-body;
    proxy_temp_path {state}/proxy;
    fastcgi_temp_path {state}/fastcgi;
    uwsgi_temp_path {state}/uwsgi;
    scgi_temp_path {state}/scgi;
    keepalive_timeout {client_idle}s;
    keepalive_requests 100000;
    upstream api {{
{servers}
        keepalive 256;
        keepalive_timeout {upstream_idle}s;
        keepalive_requests 100000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = {generation_path} {{ return 200 "{generation}"; }}
        location / {{
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError(f"the local e2e target needs nginx: apt-get install {NGINX_PACKAGE}")
    return found


class Ingress:
    """nginx in front of ``backends`` (``http://host:port`` URLs), on a free loopback port."""

    def __init__(self, backends: list[str], log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._state = log_dir / "ingress"
        self._state.mkdir(parents=True, exist_ok=True)
        self._config = self._state / "nginx.conf"
        self._backends = list(backends)
        self._generation = 0
        self._process: subprocess.Popen | None = None

    @property
    def backends(self) -> list[str]:
        return list(self._backends)

    @backends.setter
    def backends(self, urls: list[str]) -> None:
        self._backends = list(urls)
        self._write_config()
        assert self._process is not None, "start the ingress first"
        self._process.send_signal(signal.SIGHUP)
        self._wait_for_generation()

    def _write_config(self) -> None:
        self._generation += 1
        servers = "\n".join(f"        server {url.removeprefix('http://')};" for url in self._backends)
        # As root, nginx's workers would run as nobody; the temporary paths here are root's.
        user = "user root;" if os.geteuid() == 0 else ""
        self._config.write_text(
            CONFIG.format(
                state=self._state,
                user=user,
                client_idle=CLIENT_IDLE_SECONDS,
                upstream_idle=UPSTREAM_IDLE_SECONDS,
                servers=servers,
                port=self.port,
                generation_path=GENERATION_PATH,
                generation=self._generation,
            )
        )

    def _serves_generation(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"nginx exited with {self._process.returncode}: {self.error_log()}")
        try:  # a new connection each time: it reaches a worker of the newest configuration
            answer = httpx.get(self.url + GENERATION_PATH, timeout=2, headers={"connection": "close"})
        except httpx.TransportError:
            return False
        return answer.text == str(self._generation)

    def _wait_for_generation(self) -> None:
        wait_until(
            self._serves_generation,
            30,
            f"the ingress serving configuration {self._generation}",
            interval=0.05,
        )

    def error_log(self) -> str:
        log = self._state / "ingress-error.log"
        return log.read_text()[-4000:] if log.exists() else ""

    def start(self) -> None:
        self._write_config()
        self._process = subprocess.Popen(
            [
                nginx_binary(),
                "-p",
                str(self._state),
                "-c",
                str(self._config),
                "-e",
                str(self._state / "ingress-error.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_for_generation()

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGQUIT)  # graceful: answers what it has in hand
        try:
            self._process.wait(15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
