"""Private, throwaway redis-server and PostgreSQL instances in a temporary directory.

``flashsale dev`` uses them when no Redis or PostgreSQL is reachable, and the test suite
uses them for isolation. Each one listens on loopback only, on a free port, and is gone
(process and files) when its context exits.
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

POSTGRES_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
INSTALL_HINT = "install them with: apt-get install -y redis-server postgresql"


class MissingServerBinary(RuntimeError):
    """The server program to start is not installed."""


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s")
        time.sleep(interval)


def _find(program: str, extra_dirs: list[Path] | None = None) -> str:
    found = shutil.which(program)
    for directory in extra_dirs or []:
        if found:
            break
        candidate = directory / program
        found = str(candidate) if candidate.exists() else None
    if not found:
        raise MissingServerBinary(f"{program} is not installed; {INSTALL_HINT}")
    return found


def _stop(process: subprocess.Popen, timeout: float = 10) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def _serving(command: list[str], port: int, name: str, timeout: float) -> Iterator[None]:
    """Run a server until the block ends; ready once it listens on ``port``."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches our owner, which stops us last
    )
    try:
        wait_until(lambda: port_open("127.0.0.1", port) or process.poll() is not None, timeout, name)
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        yield
    finally:
        _stop(process, timeout=20)


@contextmanager
def redis_server(port: int | None = None, *options: str) -> Iterator[str]:
    """A redis-server without persistence, configured as the queue needs (noeviction);
    ``options`` (``"--name", "value"`` pairs) come last and so win."""
    program = _find("redis-server")
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="flashsale-redis-") as directory:
        command = [program, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
        command += ["--maxmemory-policy", "noeviction", "--dir", directory, *options]
        with _serving(command, port, "redis-server", timeout=10):
            yield f"redis://127.0.0.1:{port}/0"


def _free_cluster_port() -> int:
    """A port free together with port + 10000 (a cluster node's bus port)."""
    while True:
        port = random.randint(20_000, 29_999)
        if not port_open("127.0.0.1", port, 0.05) and not port_open("127.0.0.1", port + 10_000, 0.05):
            return port


def _cluster_ok(ports: list[int]) -> bool:
    from redis import Redis

    for port in ports:
        with Redis(port=port, socket_timeout=1) as node:
            if node.cluster("INFO").get("cluster_state") != "ok":
                return False
    return True


@contextmanager
def redis_cluster(nodes: int = 3) -> Iterator[str]:
    """A Redis Cluster of ``nodes`` primaries (no replicas), for the limiter's cluster mode."""
    program, cli = _find("redis-server"), _find("redis-cli")
    ports = [_free_cluster_port() for _ in range(nodes)]
    with tempfile.TemporaryDirectory(prefix="flashsale-cluster-") as directory, ExitStack() as servers:
        for port in ports:
            node_dir = Path(directory) / str(port)
            node_dir.mkdir()
            command = [program, "--bind", "127.0.0.1", "--port", str(port), "--cluster-enabled", "yes"]
            command += ["--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no"]
            servers.enter_context(
                _serving([*command, "--dir", str(node_dir)], port, f"cluster node {port}", 10)
            )
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
        )
        wait_until(lambda: _cluster_ok(ports), 30, "cluster_state:ok", interval=0.2)
        yield f"redis://127.0.0.1:{ports[0]}/0"


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: drop to the ``postgres`` account when we are root."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@contextmanager
def postgres_server(port: int | None = None) -> Iterator[str]:
    """A fresh PostgreSQL cluster with trust auth for ``postgres`` on loopback."""
    initdb = _find("initdb", POSTGRES_BIN_DIRS)
    postgres = _find("postgres", POSTGRES_BIN_DIRS)
    port = port or free_port()
    base = Path(tempfile.mkdtemp(prefix="flashsale-pg-"))
    data = base / "data"
    try:
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(base, account.pw_uid, account.pw_gid)
        initialised = subprocess.run(
            [*_as_postgres_user(), initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if initialised.returncode != 0:
            raise RuntimeError(f"initdb failed in {base}: {initialised.stderr.strip()}")
        command = [*_as_postgres_user(), postgres, "-D", str(data), "-p", str(port)]
        for option in (
            "listen_addresses=127.0.0.1",
            f"unix_socket_directories={base}",
            "fsync=off",
            "max_connections=200",
        ):
            command += ["-c", option]
        with _serving(command, port, "PostgreSQL", timeout=30):
            yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/flashsale"
    finally:
        shutil.rmtree(base, ignore_errors=True)
