"""``flashsale worker``: an RQ worker on the ``orders`` queue."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from opentelemetry.instrumentation.utils import suppress_instrumentation
from redis.exceptions import RedisError
from rq import SimpleWorker
from rq.job import Job
from rq.logutils import colorizer
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from sqlalchemy.exc import SQLAlchemyError

from service.core.keys import RECONCILE_LOCK, STRANDED_LOCK
from service.core.logs import AtDebug, coloured_logs
from service.core.redis_clients import check_no_eviction, worker_redis
from service.core.settings import Settings
from service.core.tracing import configure_tracing
from service.sale.order_jobs import order_queue
from service.sale.reconcile import reconcile
from worker.dead_letters import forget_decided
from worker.jobs import STOPPING
from worker.jobs import engine as jobs_engine
from worker.metrics import sample_queue, serve_metrics
from worker.stranded import requeue_stranded

ABANDON_GRACE_SECONDS = 5
HEARTBEAT_SECONDS = 1.0
RQ_MAINTENANCE_LINES = (
    "Worker %s: cleaning registries for queue: %s",
    "Worker %s: cleaning group registries",
)
"""What RQ's worker logs at INFO on every maintenance pass (two lines every interval): we write
them at DEBUG; its other lines, warnings and errors keep their level."""


class OrderWorker(SimpleWorker):
    """Runs jobs in its own process: an order takes milliseconds, so forking a work horse per
    job (RQ's default) would cost more than the job and break connection pools across the fork.

    A job's started-registry entry expires ``ABANDON_GRACE_SECONDS`` after its timeout (RQ's
    default is 60 s); the maintenance sweep of any live worker then retries the orders of a
    worker that died mid-job.
    """

    reconcile_interval: int | None = None
    """Seconds between reconciler passes (one worker at a time runs it); None: never."""
    _last_reconciled = 0.0

    def reconcile_every(self, seconds: int) -> None:
        """Reconcile the stock gates every ``seconds``, the first time ``seconds`` from now."""
        self.reconcile_interval = seconds
        self._last_reconciled = time.monotonic()

    stranded_after_seconds: float | None = None
    """Admitted orders older than this and in no RQ list are queued again; None: never."""

    heartbeat_file: Path | None = None
    """Touched on every turn of the loop, before Redis is asked: liveness, not readiness."""

    _last_redis_heartbeat = float("-inf")

    def heartbeat(self, timeout: int | None = None, pipeline=None):
        """RQ beats twice per job (three round trips each) to extend a worker key that lives
        eight minutes; a busy worker sends those default beats at most once a second."""
        if self.heartbeat_file is not None:
            self.heartbeat_file.touch()
        if timeout is None and pipeline is None:
            beat_at = time.monotonic()
            if beat_at - self._last_redis_heartbeat < HEARTBEAT_SECONDS:
                return
            self._last_redis_heartbeat = beat_at
        super().heartbeat(timeout, pipeline)

    def request_stop(self, signum, frame):
        """SIGTERM: RQ lets the job in hand finish; a draining job then stops after its batch
        and hands the product's other orders to a new job, for another worker."""
        STOPPING.set()
        super().request_stop(signum, frame)

    def run_maintenance_tasks(self):
        with suppress_instrumentation():  # housekeeping every few seconds: not worth traces
            super().run_maintenance_tasks()
            self._sample_queue()
            self._recover_lost_jobs()
            self._reconcile_when_due()

    def _recover_lost_jobs(self) -> None:
        """Retry the jobs of dead workers, take decided orders out of the dead-letter queue,
        then queue again admitted orders RQ lost track of (undecided dead letters included).

        RQ recovers abandoned jobs (started registry, intermediate queue) only under its
        registry-cleaning lock, which lives 899 s: a worker killed while holding it would stall
        that recovery for 15 minutes, mid-sale. We run the same recovery under our own lock,
        which expires with the maintenance interval."""
        if self.stranded_after_seconds is None:
            return
        if not self.connection.set(STRANDED_LOCK, self.name, nx=True, ex=self.maintenance_interval):
            return  # another worker's turn
        try:
            for queue in self.queues:
                StartedJobRegistry(queue=queue).cleanup(exception_handlers=self._exc_handlers)
                queue.intermediate_queue.cleanup(self, queue)
            forget_decided(self.connection)  # needs no PostgreSQL: done even while it is away
            requeue_stranded(self.connection, jobs_engine(), self.stranded_after_seconds)
        except (RedisError, SQLAlchemyError) as exc:
            self.log.warning("stranded-order sweep skipped: %s", type(exc).__name__)

    def _sample_queue(self) -> None:
        try:
            for queue in self.queues:
                sample_queue(self.connection, queue)
        except RedisError as exc:
            self.log.debug("queue sample skipped: %s", type(exc).__name__)

    def _reconcile_when_due(self) -> None:
        now = time.monotonic()
        if self.reconcile_interval is None or now - self._last_reconciled < self.reconcile_interval:
            return
        self._last_reconciled = now
        if not self.connection.set(RECONCILE_LOCK, self.name, nx=True, ex=self.reconcile_interval):
            return  # another worker's turn
        try:
            reconcile(self.connection, jobs_engine())
        except (RedisError, SQLAlchemyError) as exc:
            self.log.warning("reconcile skipped: %s", type(exc).__name__)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return int(job.timeout or 0) + ABANDON_GRACE_SECONDS

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None):
        """RQ looks at ``rq suspend`` only between jobs: an idle worker, waiting in its
        blocking pop, would still take the next job whenever it came. Waiting one ``timeout``
        (a maintenance interval) at a time and looking in between, a suspension holds idle
        workers too; a suspended worker keeps beating, so its liveness probe stays green."""
        if timeout is None or max_idle_time is not None:  # burst mode, or an idle limit of RQ's
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        while not self._stop_requested:
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time=timeout)
            if result is not None:
                return result
            self.check_for_suspension(burst=False)
        return None

    @property
    def dequeue_timeout(self) -> int:
        # An idle worker waits in BLPOP; wake it every maintenance interval so it sweeps for
        # abandoned jobs (RQ's default wait is worker_ttl - 15 s, about seven minutes).
        return self.maintenance_interval


def run_worker(settings: Settings, name: str | None = None, burst: bool = False) -> bool:
    configure_tracing("flashsale-worker", trace_redis=False)
    logging.getLogger("rq.worker").addFilter(AtDebug(*RQ_MAINTENANCE_LINES))
    colorizer.notty = not coloured_logs()  # RQ colours words of its lines whenever stdout is a tty
    if settings.worker_metrics_port is not None:
        serve_metrics(settings.worker_metrics_port)
    connection = worker_redis(settings)  # its commands outlast a Redis restart: see there
    check_no_eviction(connection)
    worker = OrderWorker(
        [order_queue(connection)],
        connection=connection,
        name=name,
        serializer=JSONSerializer,
        maintenance_interval=settings.worker_maintenance_interval,
    )
    worker.heartbeat_file = settings.worker_heartbeat_file
    worker.reconcile_every(settings.reconcile_interval_seconds)
    # Long after any job still moving through RQ's own lists (or its abandoned-job recovery).
    worker.stranded_after_seconds = (
        settings.job_timeout_seconds + ABANDON_GRACE_SECONDS + 2 * settings.worker_maintenance_interval + 10
    )
    return worker.work(with_scheduler=True, burst=burst, logging_level=settings.log_level)
