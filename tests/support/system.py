"""Run flashsale as real processes: API replicas (uvicorn) and RQ workers on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from redis import Redis
from rq import Worker

from service.cli.dev_servers import free_port, wait_until
from service.sale.order_jobs import order_queue

START_TIMEOUT_SECONDS = 30


def process_env(redis_url: str, database_url: str) -> dict[str, str]:
    """Environment for flashsale processes under test: our servers, loopback trusted as the
    proxy (tests and the e2e proxy set X-Forwarded-For), fast failure detection (a killed
    worker's jobs are retried after 3 + 5 s)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHSALE_")}
    env.update(
        FLASHSALE_REDIS_URL=redis_url,
        FLASHSALE_DATABASE_URL=database_url,
        FLASHSALE_TRUSTED_PROXIES="127.0.0.1/32",
        FLASHSALE_LOG_LEVEL="WARNING",
        FLASHSALE_JOB_TIMEOUT_SECONDS="3",
        FLASHSALE_WORKER_MAINTENANCE_INTERVAL="1",
    )
    return env


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class System:
    """API and worker processes sharing one Redis and one database."""

    env: dict[str, str]
    log_dir: Path
    apis: list[tuple[subprocess.Popen, str]] = field(default_factory=list)
    workers: list[subprocess.Popen] = field(default_factory=list)
    _retired: list[subprocess.Popen] = field(default_factory=list)
    """Killed workers, kept so names stay unique and stop() reaps them."""

    @property
    def urls(self) -> list[str]:
        return [url for _, url in self.apis]

    @property
    def url(self) -> str:
        return self.urls[0]

    def _spawn(self, name: str, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115  (closed with the process)
        return subprocess.Popen(
            [sys.executable, "-m", "service.cli", *args],
            env={**self.env, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_apis(self, count: int, extra_env: dict[str, str] | None = None) -> None:
        started = []
        for _ in range(count):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            process = self._spawn(
                f"api-{port}", "api", "--host", "127.0.0.1", "--port", str(port), extra_env=extra_env
            )
            started.append((process, url))
        self.apis += started
        for process, url in started:
            wait_until(
                lambda p=process, u=url: _ready(u) or p.poll() is not None,
                START_TIMEOUT_SECONDS,
                f"API {url}",
            )
            assert process.poll() is None, self.logs()

    def start_workers(self, count: int, wait: bool = True) -> None:
        first = len(self.workers) + len(self._retired)
        names = [f"test-worker-{os.getpid()}-{first + i}" for i in range(count)]
        self.workers += [self._spawn(name, "worker", "--name", name) for name in names]
        if not wait:
            return
        with Redis.from_url(self.env["FLASHSALE_REDIS_URL"]) as redis:
            queue = order_queue(redis)

            def registered() -> bool:
                return {w.name for w in Worker.all(queue=queue)} >= set(names)

            wait_until(registered, START_TIMEOUT_SECONDS, f"{count} workers")

    def busy_worker(self, timeout: float = START_TIMEOUT_SECONDS) -> int:
        """Wait for a worker busy with a job (RQ's record of it); returns its index."""
        found: list[int] = []

        def busy() -> bool:
            with Redis.from_url(self.env["FLASHSALE_REDIS_URL"]) as redis:
                pids = {w.pid for w in Worker.all(queue=order_queue(redis)) if w.get_state() == "busy"}
            found[:] = [i for i, process in enumerate(self.workers) if process.pid in pids]
            return bool(found)

        wait_until(busy, timeout, "a worker busy with a job")
        return found[0]

    def kill_worker(self, index: int) -> None:
        """SIGKILL a worker and everything it started, as when its pod dies."""
        process = self.workers.pop(index)
        self._retired.append(process)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def retire_worker(self, index: int) -> subprocess.Popen:
        """SIGTERM a worker's main process, as the kubelet does to a pod scaled in (RQ's warm
        shutdown); the caller waits for it. Its name is never reused."""
        process = self.workers.pop(index)
        self._retired.append(process)
        process.send_signal(signal.SIGTERM)
        return process

    def kill_api(self, index: int) -> str:
        """SIGKILL an API process, as when its pod dies; returns its URL."""
        process, url = self.apis.pop(index)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        return url

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.log_dir.glob("*.log")))

    def stop(self) -> None:
        processes = [p for p, _ in self.apis] + self.workers
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            # RQ's scheduler is a child of its worker: leave nothing of the group behind.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
