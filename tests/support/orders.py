"""Following orders through the public API until they reach a terminal state."""

from __future__ import annotations

from collections import Counter

import httpx
from redis import Redis
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from service.cli.dev_servers import wait_until
from service.core.keys import ADMITTED_KEY, drain_flag_keys, pending_keys
from service.sale.order_jobs import entry_order_id, order_queue

TERMINAL = {"confirmed", "rejected"}


def wait_all_terminal(url: str, order_ids: list[str], timeout: float = 60) -> dict[str, dict]:
    """Poll ``GET /orders/{id}`` until every order is confirmed or rejected; return the last views.

    On timeout the error names how many orders are still open and in which states."""
    views: dict[str, dict] = {}
    pending = set(order_ids)
    with httpx.Client(base_url=url, timeout=10) as client:

        def all_terminal() -> bool:
            for order_id in list(pending):
                view = client.get(f"/orders/{order_id}").json()
                views[order_id] = view
                if view["status"] in TERMINAL:
                    pending.discard(order_id)
            return not pending

        try:
            wait_until(all_terminal, timeout, f"{len(order_ids)} orders to reach a terminal state", 0.2)
        except TimeoutError as exc:
            open_states = Counter(views[order_id]["status"] for order_id in pending)
            raise TimeoutError(f"{exc}: {len(pending)} still open {dict(open_states)}") from None
    return views


def rq_whereabouts(redis: Redis, order_ids: list[str], product_id: int = 1) -> dict:
    """How many of these orders are still admitted and pending, and where RQ keeps the
    draining jobs of the product's lanes (for failure messages)."""
    queue = order_queue(redis)
    drains = {flag.decode() for flag in redis.mget(drain_flag_keys(product_id)) if flag is not None}
    places = {
        "queued": set(queue.get_job_ids()),
        "intermediate": set(queue.intermediate_queue.get_job_ids()),
        "started": set(StartedJobRegistry(queue=queue).get_job_ids(cleanup=False)),
        "scheduled": set(ScheduledJobRegistry(queue=queue).get_job_ids(cleanup=False)),
        "failed": set(FailedJobRegistry(queue=queue).get_job_ids(cleanup=False)),
    }
    wanted = set(order_ids)
    pending = {entry_order_id(raw) for key in pending_keys(product_id) for raw in redis.lrange(key, 0, -1)}
    return {
        "admitted": len(wanted & {member.decode() for member in redis.zrange(ADMITTED_KEY, 0, -1)}),
        "pending": len(wanted & pending),
        "drains": sorted(drains),
        "drains_in": {job_id: [place for place, ids in places.items() if job_id in ids] for job_id in drains},
        "locks": sorted(key.decode() for key in redis.keys("rq:*lock*")),
    }
