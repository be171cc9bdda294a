"""lua/admit.lua through service/sale/admission.py on a real Redis, and the draining jobs it writes
on RQ's own worker."""

import asyncio
import json
import re
import zlib

from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

from service.core.keys import ADMITTED_KEY, drain_flag_keys, drain_job_id, gate_key, pending_key
from service.limiter.identity import ClientIdentity
from service.sale.admission import Decision, admit
from service.sale.order_jobs import entry_order_id, lane_of, order_queue
from service.sale.resources import close_resources, open_resources
from service.sale.stock_gate import set_gate
from tests.support.admitting import admit_orders
from tests.support.database import order_rows, product_state
from tests.support.enqueue import enqueue_drain
from tests.support.lanes import drains, pending_count


def _client(ip="203.0.113.7", customer=None):
    return ClientIdentity(ip, customer, {}, "x-api-key")


def _run(settings, body):
    async def run():
        resources = open_resources(settings)
        try:
            return await body(resources)
        finally:
            await close_resources(resources)

    return asyncio.run(run())


def _admit(resources, client=None, quantity=1, key=None, product_id=1, route_limits=False):
    client = client or _client()
    plan = resources.limiter.plan("buy", client) if route_limits else None
    return admit(resources, client, plan, product_id, quantity, key)


def test_the_gate_hands_out_all_or_nothing(settings, redis):
    set_gate(redis, 1, 3)

    async def body(resources):
        return [await _admit(resources, quantity=q) for q in (2, 2, 1)]

    two, too_many, last = _run(settings, body)
    assert (two.decision, two.left) == (Decision.ADMITTED, 1)
    assert (too_many.decision, too_many.left) == (Decision.NOT_ENOUGH_STOCK, 1)
    assert (last.decision, last.left) == (Decision.ADMITTED, 0)
    assert pending_count(redis) == 2
    lanes = drains(redis)
    assert redis.llen("rq:queue:orders") == len(lanes) == len(set(lanes.values())) <= 2, (
        "one draining job per lane with orders, not one per order"
    )


def test_a_missing_gate_is_reported_not_invented(settings, redis):
    async def body(resources):
        return await _admit(resources, product_id=8)

    assert _run(settings, body).decision is Decision.GATE_MISSING
    assert not redis.exists(gate_key(8)) and redis.llen("rq:queue:orders") == 0


def test_two_thousand_concurrent_buyers_get_exactly_the_stock(settings, redis):
    set_gate(redis, 1, 250)

    async def body(resources):
        results = await asyncio.gather(
            *(_admit(resources, _client(f"10.0.{i // 256}.{i % 256}")) for i in range(2000))
        )
        return sum(r.decision is Decision.ADMITTED for r in results)

    assert _run(settings, body) == 250
    assert int(redis.get(gate_key(1))) == 0
    assert pending_count(redis) == 250 and redis.zcard(ADMITTED_KEY) == 250
    lanes = [redis.llen(pending_key(1, lane)) for lane in range(settings.drain_lanes)]
    assert sum(lanes) == 250 and min(lanes) > 250 / settings.drain_lanes / 2, (
        f"spread over the lanes: {lanes}"
    )
    assert redis.llen("rq:queue:orders") == settings.drain_lanes, "one draining job per lane"


def test_a_no_charges_nothing(settings, redis):
    set_gate(redis, 1, 0)

    async def body(resources):
        sold_out = await _admit(resources, route_limits=True)
        return sold_out, await resources.redis.keys("fs:rl:*")

    sold_out, buckets = _run(settings, body)
    assert sold_out.decision is Decision.NOT_ENOUGH_STOCK
    assert buckets == [], "a sold-out answer must not spend the client's tokens"

    set_gate(redis, 1, 100)

    async def spend(resources):
        return [await _admit(resources, route_limits=True) for _ in range(6)]

    decisions = [a.decision for a in _run(settings, spend)]
    assert decisions == [Decision.ADMITTED] * 5 + [Decision.LIMITED]
    assert int(redis.get(gate_key(1))) == 95, "a rate-limited answer must not take a unit"


def test_an_idempotency_key_returns_the_first_order_and_makes_no_second(settings, redis):
    set_gate(redis, 1, 10)

    async def body(resources):
        first = await _admit(resources, key="k-1")
        again = await _admit(resources, key="k-1")
        other_payload = await _admit(resources, key="k-1", quantity=2)
        other_client = await _admit(resources, _client("198.51.100.1"), key="k-1")
        return first, again, other_payload, other_client

    first, again, other_payload, other_client = _run(settings, body)
    assert first.decision is Decision.ADMITTED
    assert (again.decision, again.order_id) == (Decision.REPLAY, first.order_id)
    assert (other_payload.decision, other_payload.order_id) == (Decision.KEY_REUSED, first.order_id)
    assert other_client.decision is Decision.ADMITTED and other_client.order_id != first.order_id
    assert pending_count(redis) == 2 and int(redis.get(gate_key(1))) == 8
    ttls = [redis.ttl(key) for key in redis.keys("fs:idem:*")]
    assert len(ttls) == 2 and all(23 * 3600 < ttl <= 24 * 3600 for ttl in ttls)


RQ_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
"""How RQ writes a job's times (rq.utils.utcformat)."""


def test_admit_writes_the_draining_job_hash_rq_itself_writes(settings, redis):
    """RQ's own enqueue of the same draining job (its id, arguments, options and drawn retry
    waits) writes the same hash, field for field, but that admit.lua leaves the call data
    uncompressed (RQ reads both) and stamps the admission's time instead of the enqueue's: for
    lane 0 (the jobs from before lanes) and for another lane."""
    set_gate(redis, 1, 1000)

    async def body(resources):
        while not {0} < set(drains(redis)):  # orders until lane 0 and another have a job
            await _admit(resources, _client(f"10.1.{len(drains(redis))}.{pending_count(redis) % 256}"))

    _run(settings, body)
    queue = order_queue(redis)
    for lane, job_id in drains(redis).items():
        (first,) = [raw for raw in redis.lrange(pending_key(1, lane), 0, 0)]
        order_id = entry_order_id(first)
        assert lane_of(order_id, settings.drain_lanes) == lane
        assert job_id == drain_job_id(1, order_id, lane), "named after the order whose admission queued it"
        ours = redis.hgetall(Job.key_for(job_id))
        job = Job.fetch(job_id, connection=redis, serializer=queue.serializer)
        assert job.args == ([1, lane] if lane else [1])
        redis.delete(job.key)  # RQ enqueues a job id only once
        rqs = redis.hgetall(
            enqueue_drain(queue, job_id, settings.job_timeout_seconds, job.retry_intervals).key
        )

        assert set(ours) == set(rqs), "the same fields"
        assert ours[b"data"] == zlib.decompress(rqs[b"data"])
        times = (b"created_at", b"enqueued_at")
        stamps = [fields[time].decode() for fields in (ours, rqs) for time in times]
        assert [stamp for stamp in stamps if not RQ_TIMESTAMP.fullmatch(stamp)] == [], "as RQ writes times"
        assert {f: v for f, v in ours.items() if f not in (b"data", *times)} == {
            f: v for f, v in rqs.items() if f not in (b"data", *times)
        }
        waits = json.loads(ours[b"retry_intervals"])
        base = settings.job_retry_backoff_seconds
        assert len(waits) == len(base) and waits[0] == base[0] == 0
        assert all(0.5 * b - 1 <= wait <= 1.5 * b + 1 for wait, b in zip(waits, base, strict=True)), (
            "jittered"
        )


def test_rqs_own_simple_worker_runs_the_draining_job_admit_writes(settings, redis, fresh_db, worker_env):
    """``rq.worker.SimpleWorker`` as shipped, with RQ's JSON serializer: no class of ours. The
    draining jobs (one per lane with orders) decide the twenty orders, end their drains and
    leave nothing behind: no job hash, no result, no pending entry, no admitted record, no flag."""
    worker_env()
    admitted = admit_orders(settings, 20)
    queue = order_queue(redis)
    job_ids = drains(redis).values()
    assert sorted(queue.get_job_ids()) == sorted(job_ids) and len(job_ids) > 1
    SimpleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)

    assert set(order_rows(fresh_db)) == set(admitted)
    assert product_state(fresh_db)[0] == 80
    assert FailedJobRegistry(queue=queue).count == 0 and queue.count == 0
    assert redis.zcard(ADMITTED_KEY) == 0 and pending_count(redis) == 0
    assert not redis.exists(*map(Job.key_for, job_ids), *drain_flag_keys(1)), (
        "a decided order leaves Redis at once"
    )
