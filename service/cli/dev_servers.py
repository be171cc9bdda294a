"""Private, throwaway redis-server and PostgreSQL instances in a temporary directory.

``flashsale dev`` uses them when no Redis or PostgreSQL is reachable, and the test suite
uses them for isolation (``tests/support/servers.py`` adds what only tests need). Each one
listens on loopback only, on a free port, and is gone (process and files) when its context
exits.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
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


def find_program(program: str, extra_dirs: list[Path] | None = None) -> str:
    found = shutil.which(program)
    for directory in extra_dirs or []:
        if found:
            break
        candidate = directory / program
        found = str(candidate) if candidate.exists() else None
    if not found:
        raise MissingServerBinary(f"{program} is not installed; {INSTALL_HINT}")
    return found


class Server:
    """One server process that can be stopped and started again on the same port and files
    (tests restart Redis and PostgreSQL under load)."""

    def __init__(
        self,
        command: list[str],
        port: int,
        name: str,
        timeout: float,
        url: str,
        stop_signal: int = signal.SIGTERM,
        run_as: dict | None = None,
    ) -> None:
        self.command, self.port, self.name, self.timeout, self.url = command, port, name, timeout, url
        self.stop_signal = stop_signal
        self._run_as = run_as or {}
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            self.command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches our owner, which stops us last
            **self._run_as,
        )
        process = self._process
        wait_until(
            lambda: port_open("127.0.0.1", self.port) or process.poll() is not None, self.timeout, self.name
        )
        if process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {process.returncode}")

    def stop(self, timeout: float = 20) -> None:
        """A graceful stop: Redis syncs its AOF, PostgreSQL (SIGINT, "fast") disconnects its
        clients and shuts down cleanly."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(self.stop_signal)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def serving(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def restartable_redis(port: int | None = None, *options: str) -> Iterator[Server]:
    """A redis-server without persistence unless ``options`` ask for it, configured as the
    queue needs (noeviction); ``options`` (``"--name", "value"`` pairs) come last and so win.
    Its files stay for the whole block, so a restart finds its AOF again."""
    program = find_program("redis-server")
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="flashsale-redis-") as directory:
        command = [program, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
        command += ["--maxmemory-policy", "noeviction", "--dir", directory, *options]
        with serving(Server(command, port, "redis-server", 10, f"redis://127.0.0.1:{port}/0")) as server:
            yield server


@contextmanager
def redis_server(port: int | None = None, *options: str) -> Iterator[str]:
    """A throwaway redis-server, by URL."""
    with restartable_redis(port, *options) as server:
        yield server.url


def _as_postgres_user() -> dict:
    """PostgreSQL refuses to run as root: run it as the ``postgres`` account when we are root
    (in the child itself, so our signals reach the server, not a wrapper)."""
    if os.geteuid() != 0:
        return {}
    account = pwd.getpwnam("postgres")
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


@contextmanager
def restartable_postgres(port: int | None = None, password: str | None = None) -> Iterator[Server]:
    """A fresh PostgreSQL cluster for ``postgres`` on loopback: trust auth, or with a
    ``password`` SCRAM auth (the URL then carries none: give it as PGPASSWORD)."""
    initdb = find_program("initdb", POSTGRES_BIN_DIRS)
    postgres = find_program("postgres", POSTGRES_BIN_DIRS)
    port = port or free_port()
    base = Path(tempfile.mkdtemp(prefix="flashsale-pg-"))
    data = base / "data"
    run_as = _as_postgres_user()
    try:
        if run_as:
            os.chown(base, run_as["user"], run_as["group"])
        auth = ["--auth=trust"]
        if password is not None:
            password_file = base / "password"
            password_file.write_text(password)
            if run_as:
                os.chown(password_file, run_as["user"], run_as["group"])
            auth = ["--auth=scram-sha-256", f"--pwfile={password_file}"]
        initialised = subprocess.run(
            [initdb, "-D", str(data), "-U", "postgres", *auth, "-E", "UTF8"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=base,
            **run_as,
        )
        if initialised.returncode != 0:
            raise RuntimeError(f"initdb failed in {base}: {initialised.stderr.strip()}")
        command = [postgres, "-D", str(data), "-p", str(port)]
        for option in (
            "listen_addresses=127.0.0.1",
            f"unix_socket_directories={base}",
            "fsync=off",
            "max_connections=200",
        ):
            command += ["-c", option]
        url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/flashsale"
        server = Server(command, port, "PostgreSQL", 30, url, stop_signal=signal.SIGINT, run_as=run_as)
        with serving(server):
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def postgres_server(port: int | None = None) -> Iterator[str]:
    """A throwaway PostgreSQL, by URL (database ``flashsale``, created by ``migrate``)."""
    with restartable_postgres(port) as server:
        yield server.url
