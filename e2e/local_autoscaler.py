"""What the chart's KEDA ScaledObject does to the workers, done to local worker processes.

KEDA's Redis list scaler feeds the HPA the length of ``rq:queue:orders`` with a target of
``listLength`` per replica, so the HPA wants ceil(length / listLength) replicas within
[min, max]. It scales out at once and scales in only after the wish has stayed lower for a
stabilisation window; a pod scaled in gets SIGTERM, which an RQ worker takes as a warm
shutdown (finish the job in hand, take no other).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass

from redis import Redis

from tests.support.system import System

QUEUE_KEY = "rq:queue:orders"


@dataclass(frozen=True)
class Scaling:
    """The ScaledObject's numbers, fitted to a 2-core machine where a test sale's queue peaks
    near 100 jobs (the chart's defaults, 200 per worker and 1..10 workers, would never move)."""

    list_length: int = 10
    """Jobs per worker: workers now drain a burst fast, so a queue of 40 may never form."""
    min_replicas: int = 2
    """At least two, so killing one leaves a worker working."""
    max_replicas: int = 4
    """Two cores: more worker processes than this only take turns."""
    cooldown_seconds: float = 5.0
    """The scale-in stabilisation window (the kind cluster's is in k8s/values-kind.yaml)."""


def desired_replicas(queue_length: int, scaling: Scaling) -> int:
    """The HPA's arithmetic for KEDA's list scaler: ceil(length / target), within bounds."""
    wanted = math.ceil(queue_length / scaling.list_length)
    return min(max(wanted, scaling.min_replicas), scaling.max_replicas)


class Autoscaler:
    """Polls the queue length and sets the worker count, in a thread of the test process."""

    def __init__(self, processes: System, redis_url: str, scaling: Scaling, lock: threading.Lock) -> None:
        self.processes, self.scaling, self.lock = processes, scaling, lock
        self.redis = Redis.from_url(redis_url)
        self.interval = 0.25
        self.wishes: deque[tuple[float, int]] = deque()
        self.draining: list[subprocess.Popen] = []
        self.events: list[str] = []
        """Every scaling decision, for failure messages."""
        self.longest = 0
        """The longest queue seen."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="e2e-autoscaler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.step()

    def step(self) -> None:
        now = time.monotonic()
        length = self.redis.llen(QUEUE_KEY)
        self.longest = max(self.longest, length)
        wish = desired_replicas(length, self.scaling)
        self.wishes.append((now, wish))
        while self.wishes[0][0] < now - self.scaling.cooldown_seconds:
            self.wishes.popleft()
        # As the HPA's scale-down stabilisation: the highest wish of the window, never below it.
        floor = max(w for _, w in self.wishes)
        with self.lock:
            current = len(self.processes.workers)
            if wish > current:
                self.processes.start_workers(wish - current, wait=False)
                self.events.append(f"{now:.1f}: queue {length} -> {current} to {wish} workers")
            elif floor < current:
                for _ in range(current - floor):
                    self.draining.append(self.processes.retire_worker(-1))
                self.events.append(f"{now:.1f}: queue {length} -> {current} to {floor} workers")
        self._reap()

    def _reap(self, timeout: float = 0) -> None:
        for process in list(self.draining):
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                continue
            # Its RQ scheduler is a child in its process group: nothing of it may stay.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            self.draining.remove(process)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._reap(timeout=20)
        self.redis.close()
