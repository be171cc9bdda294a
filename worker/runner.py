"""``flashsale worker``: an RQ worker on the ``orders`` queue."""

from __future__ import annotations

from redis import Redis
from rq import SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer

from service.queue_redis import check_no_eviction
from service.settings import Settings
from worker.queue import order_queue

ABANDON_GRACE_SECONDS = 5


class OrderWorker(SimpleWorker):
    """Runs jobs in its own process: an order takes milliseconds, so forking a work horse per
    job (RQ's default) would cost more than the job and break connection pools across the fork.

    A job's started-registry entry expires ``ABANDON_GRACE_SECONDS`` after its timeout (RQ's
    default is 60 s); the maintenance sweep of any live worker then retries the orders of a
    worker that died mid-job.
    """

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return int(job.timeout or 0) + ABANDON_GRACE_SECONDS

    @property
    def dequeue_timeout(self) -> int:
        # An idle worker waits in BLPOP; wake it every maintenance interval so it sweeps for
        # abandoned jobs (RQ's default wait is worker_ttl - 15 s, about seven minutes).
        return self.maintenance_interval


def run_worker(settings: Settings, name: str | None = None, burst: bool = False) -> bool:
    connection = Redis.from_url(settings.redis_url)
    check_no_eviction(connection)
    worker = OrderWorker(
        [order_queue(connection)],
        connection=connection,
        name=name,
        serializer=JSONSerializer,
        maintenance_interval=settings.worker_maintenance_interval,
    )
    return worker.work(with_scheduler=True, burst=burst, logging_level=settings.log_level)
