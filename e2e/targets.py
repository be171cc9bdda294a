"""The system under test, wherever it runs: the one interface the e2e tests see.

``E2E_TARGET=local`` (the default) starts everything on this machine; ``E2E_TARGET=kind``
drives the Helm release in a kind cluster. The tests talk HTTP to ``base_url`` only and use
these operations for what a client cannot do (reset the stock, kill pods, count workers, hold
them, read the autoscaler's signal).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass

from service.sale.backlog import Backlog


@dataclass(frozen=True)
class Timeouts:
    """Seconds each kind of wait may take on this target (a cluster is slower at everything)."""

    settle: float
    """Every 202 reaches a terminal state, even after a worker died holding jobs."""
    scale_up: float
    scale_down: float
    lost_after_kill: float
    """How long after a killed API pod is routed around an answer it held may still be lost
    (the ingress finds out about a vanished pod's connections when they time out)."""


HOLD_LIMIT_SECONDS = 900
"""A hold lapses by itself after this long (RQ's suspension TTL), so workers a crashed test
run left held start working again."""
HELD = "suspended"
"""What a held RQ worker reports as its state."""


class Target(ABC):
    base_url: str
    timeouts: Timeouts

    @abstractmethod
    def api_replicas(self) -> int:
        """API replicas ready behind the ingress."""

    @abstractmethod
    def worker_replicas(self) -> int:
        """Worker replicas running and not being scaled in."""

    @abstractmethod
    def worker_bounds(self) -> tuple[int, int]:
        """(min, max) worker replicas the autoscaler keeps to."""

    @abstractmethod
    def orders_per_worker(self) -> float:
        """The autoscaler's target of undecided orders per worker replica."""

    @abstractmethod
    def backlog(self) -> Backlog:
        """``GET /backlog`` as the autoscaler reads it (inside the cluster, not through the
        ingress): the orders admitted and not yet decided."""

    @abstractmethod
    def hold_workers(self) -> None:
        """Make every worker, running or yet to start, take no job until ``release_workers``
        (RQ's suspension; workers stay alive and scalable); return once none will take one.
        Admitted orders then wait, so a test can make a backlog the workers cannot clear."""

    @abstractmethod
    def release_workers(self) -> None:
        """Let the workers take jobs again."""

    @abstractmethod
    def seed(self, stock: int) -> None:
        """Reset product 1 to ``stock`` units and publish it to Redis (``flashsale seed --stock``)."""

    @abstractmethod
    def kill_api_pod(self) -> None:
        """Kill one API replica without warning; return once its replacement is ready."""

    @abstractmethod
    def kill_worker_pod(self) -> None:
        """Kill one worker without warning; return once its replacement runs."""

    def diagnostics(self) -> str:
        """What to read when a test fails (logs, scaling decisions)."""
        return ""

    def close(self) -> None:  # noqa: B027  (a cluster target started nothing to stop)
        """Stop whatever this target started."""


def open_target(name: str | None = None) -> Target:
    name = name or os.environ.get("E2E_TARGET", "local")
    if name == "local":
        from e2e.local import LocalTarget

        return LocalTarget()
    if name == "kind":
        from e2e.kind import KindTarget

        return KindTarget()
    raise ValueError(f"E2E_TARGET must be local or kind, not {name!r}")
