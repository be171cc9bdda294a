"""What the chart's KEDA ScaledObject does to the workers, done to local worker processes.

The ScaledObject has two ``metrics-api`` triggers on the API's ``GET /backlog``, which KEDA
reads through the API Service (one replica or another: every replica reads the same Redis):
``undecided_orders`` as an ``AverageValue`` (a target per worker) and ``oldest_age_seconds``
as a ``Value``. The HPA turns each into a replica count and takes the largest, within
[min, max]. It scales out at once and scales in only after the wish has stayed lower for a
stabilisation window; a pod scaled in gets SIGTERM, which an RQ worker takes as a warm
shutdown (finish the job in hand, take no other). Here the same arithmetic runs in a thread
of the test process, on the same endpoint, read from the local API processes.
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

import httpx
import msgspec

from service.sale.backlog import Backlog
from tests.support.system import System

HPA_TOLERANCE = 0.1
"""The HPA leaves the replicas alone while a metric is within 10 % of its target."""


@dataclass(frozen=True)
class Scaling:
    """The ScaledObject's numbers, fitted to a 2-core machine and a test sale of a few hundred
    orders (the chart's defaults are sized for a real worker's throughput)."""

    orders_per_replica: int = 50
    """Undecided orders per worker (the ``undecided_orders`` trigger's target)."""
    oldest_age_seconds: float = 5.0
    """The oldest undecided order's wait the workers should keep under (the second trigger)."""
    min_replicas: int = 2
    """At least two, so killing one leaves a worker working."""
    max_replicas: int = 4
    """Two cores: more worker processes than this only take turns."""
    cooldown_seconds: float = 5.0
    """The scale-in stabilisation window (the kind cluster's is in k8s/values-kind.yaml)."""


def _replicas_for(ratio: float, current: int, proposal: int) -> int:
    """The HPA's tolerance: a metric within 10 % of its target proposes no change."""
    return current if abs(ratio - 1) <= HPA_TOLERANCE else proposal


def desired_replicas(backlog: Backlog, current: int, scaling: Scaling) -> int:
    """The HPA's arithmetic over KEDA's two triggers: for the ``AverageValue`` one,
    ceil(total / target); for the ``Value`` one, ceil(current * value / target); the larger
    of the two, within [min, max]."""
    total = backlog.undecided_orders
    by_orders = _replicas_for(
        total / (current * scaling.orders_per_replica), current, math.ceil(total / scaling.orders_per_replica)
    )
    age_ratio = backlog.oldest_age_seconds / scaling.oldest_age_seconds
    by_age = _replicas_for(age_ratio, current, math.ceil(current * age_ratio))
    return min(max(by_orders, by_age, scaling.min_replicas), scaling.max_replicas)


def read_backlog(urls: list[str]) -> Backlog | None:
    """``GET /backlog`` from the first API process that answers, as KEDA reads it through the
    Service; None when none does (KEDA then leaves the replicas as they are)."""
    for url in urls:
        try:
            response = httpx.get(f"{url}/backlog", timeout=2)
        except httpx.TransportError:
            continue  # a replica just killed: the Service would have dropped it
        if response.status_code == 200:
            return msgspec.json.decode(response.content, type=Backlog)
    return None


class Autoscaler:
    """Polls ``/backlog`` and sets the worker count, in a thread of the test process."""

    def __init__(self, processes: System, scaling: Scaling, lock: threading.Lock) -> None:
        self.processes, self.scaling, self.lock = processes, scaling, lock
        self.interval = 0.25
        self.wishes: deque[tuple[float, int]] = deque()
        self.draining: list[subprocess.Popen] = []
        self.events: list[str] = []
        """Every scaling decision, for failure messages."""
        self.largest = Backlog(undecided_orders=0, oldest_age_seconds=0.0)
        """The most undecided orders seen, for failure messages."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="e2e-autoscaler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.step()

    def step(self) -> None:
        now = time.monotonic()
        backlog = read_backlog(self.processes.urls)
        if backlog is None:
            self.events.append(f"{now:.1f}: no API answered /backlog")
            return
        if backlog.undecided_orders >= self.largest.undecided_orders:
            self.largest = backlog
        with self.lock:
            current = len(self.processes.workers)
            wish = desired_replicas(backlog, current, self.scaling)
            self.wishes.append((now, wish))
            while self.wishes[0][0] < now - self.scaling.cooldown_seconds:
                self.wishes.popleft()
            # As the HPA's scale-down stabilisation: the highest wish of the window, never below it.
            floor = max(w for _, w in self.wishes)
            if wish > current:
                self.processes.start_workers(wish - current, wait=False)
                self.events.append(f"{now:.1f}: {backlog} -> {current} to {wish} workers")
            elif floor < current:
                for _ in range(current - floor):
                    self.draining.append(self.processes.retire_worker(-1))
                self.events.append(f"{now:.1f}: {backlog} -> {current} to {floor} workers")
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
