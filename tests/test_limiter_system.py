"""The limiter across real API processes: accuracy, clock skew, Redis Cluster, client identity."""

import glob
import json
from email.utils import parsedate_to_datetime

import httpx
import pytest

from service.sale.stock_gate import seed
from tests.support.load import assert_admitted_within, hammer, hammer_clients
from tests.support.servers import redis_cluster

pytestmark = pytest.mark.slow

MIXED_POLICY = {
    "buy": {
        "limits": [
            {"name": "per-ip", "key": "ip", "capacity": 5, "refill_per_sec": 2},
            {"name": "per-customer", "key": "customer", "capacity": 8, "refill_per_sec": 1},
        ]
    }
}


def _mixed_bound(window: float) -> float:
    """Greedy demand on two buckets charged together gets the lower envelope of the two."""
    return min(5 + 2 * window, 8 + 1 * window)


@pytest.fixture
def plenty_of_stock(fresh_db, redis):
    seed(fresh_db, redis, stock=1_000_000)


def _mixed_clients(count):
    return [{"x-forwarded-for": f"198.51.100.{i}", "x-customer-id": f"customer-{i}"} for i in range(count)]


def test_four_replicas_many_clients_two_limits_each_exact(system, plenty_of_stock):
    system.env.update(
        FLASHSALE_RATE_POLICIES=json.dumps(MIXED_POLICY), FLASHSALE_CUSTOMER_ID_HEADER="x-customer-id"
    )
    system.start_apis(4)
    grouped = hammer_clients(system.urls, _mixed_clients(12), seconds=5, processes=4)
    assert len(grouped) == 12
    for replies in grouped.values():
        assert_admitted_within(replies, _mixed_bound)


def test_the_same_limits_hold_on_a_redis_cluster(system, plenty_of_stock):
    with redis_cluster(nodes=3) as cluster_url:
        system.env.update(
            FLASHSALE_LIMITER_REDIS_URL=cluster_url,
            FLASHSALE_LIMITER_REDIS_CLUSTER="true",
            FLASHSALE_RATE_POLICIES=json.dumps(MIXED_POLICY),
            FLASHSALE_CUSTOMER_ID_HEADER="x-customer-id",
        )
        system.start_apis(3)
        grouped = hammer_clients(system.urls, _mixed_clients(6), seconds=4, processes=3)
        system.stop()
    assert len(grouped) == 6
    for replies in grouped.values():
        assert_admitted_within(replies, _mixed_bound)


def _faketime_library() -> str:
    found = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    assert found, "libfaketime is missing: apt-get install -y faketime (.ci/run installs it)"
    return found[0]


@pytest.mark.parametrize("offset_hours", [3, -3])
def test_with_the_app_clock_a_replica_hours_off_never_lets_more_through(
    system, plenty_of_stock, offset_hours
):
    system.env.update(FLASHSALE_RATE_CLOCK="app")
    system.start_apis(2)
    skew = {"LD_PRELOAD": _faketime_library(), "FAKETIME": f"{offset_hours:+d}h"}
    system.start_apis(1, extra_env=skew)
    skewed_date = parsedate_to_datetime(httpx.get(f"{system.urls[2]}/healthz").headers["date"])
    honest_date = parsedate_to_datetime(httpx.get(f"{system.urls[0]}/healthz").headers["date"])
    assert abs((skewed_date - honest_date).total_seconds() - offset_hours * 3600) < 60, (
        "the replica is skewed"
    )

    replies = hammer(system.urls, "203.0.113.99", seconds=5, processes=3)
    window = max(r.done_at for r in replies) - min(r.sent_at for r in replies)
    admitted = sum(r.status == 202 for r in replies)
    assert admitted <= 5 + 1 * window + 1, (admitted, window)
    assert admitted >= 5, "the burst is still served"


def _post(url, **headers):
    return httpx.post(f"{url}/buy", json={}, headers=headers, timeout=10).status_code


def test_a_customer_id_counts_only_when_a_trusted_proxy_says_it(system, plenty_of_stock, settings_env):
    per_customer = {
        "buy": {
            "limits": [{"name": "per-customer", "key": "customer", "capacity": 2, "refill_per_sec": 0.01}]
        }
    }
    system.env.update(
        FLASHSALE_RATE_POLICIES=json.dumps(per_customer), FLASHSALE_CUSTOMER_ID_HEADER="x-customer-id"
    )
    system.start_apis(1)
    trusting = system.url
    # From a trusted peer: one customer on many addresses shares one bucket...
    statuses = [
        _post(trusting, **{"x-forwarded-for": f"10.0.0.{i}", "x-customer-id": "alice"}) for i in range(4)
    ]
    assert statuses == [202, 202, 429, 429]
    # ...and another customer has their own.
    assert _post(trusting, **{"x-customer-id": "bob"}) == 202

    system.start_apis(1, extra_env={"FLASHSALE_TRUSTED_PROXIES": ""})
    untrusting = system.urls[1]
    # From an untrusted peer the header means nothing: every "customer" counts as the peer's IP.
    statuses = [_post(untrusting, **{"x-customer-id": f"mallory-{i}"}) for i in range(4)]
    assert statuses == [202, 202, 429, 429]


def _statuses(url, header, values):
    return [_post(url, **{header: value}) for value in values]


def test_ipv6_clients_count_by_network_and_ipv4_ones_alone_through_a_real_proxy_chain(
    system, plenty_of_stock
):
    system.env.update(FLASHSALE_RATE_REFILL_PER_SEC="0.01")  # nothing refills during the test
    system.start_apis(1)
    url = system.url
    one_network = [f"2001:db8:1:2::{i:x}" for i in range(1, 13)]
    assert _statuses(url, "x-forwarded-for", one_network) == [202] * 5 + [429] * 7
    # The next /64 is another line, another bucket; in brackets with a port it is the same address.
    assert _statuses(url, "x-forwarded-for", ["[2001:db8:1:3::1]:443"] * 6) == [202] * 5 + [429]
    # Seven IPv4 clients behind a load balancer that writes ports: seven buckets, not the proxy's.
    assert _statuses(url, "x-forwarded-for", [f"10.1.1.{i}:5555" for i in range(7)]) == [202] * 7
    # IPv4-mapped clients are IPv4 clients: never one /64 of ::ffff:0:0 (CVE-2026-30827).
    assert _statuses(url, "x-forwarded-for", [f"::ffff:198.51.100.{i}" for i in range(7)]) == [202] * 7


def test_rfc_7239_forwarded_from_a_proxy_that_writes_it(system, plenty_of_stock):
    system.env.update(FLASHSALE_RATE_REFILL_PER_SEC="0.01", FLASHSALE_CLIENT_IP_HEADER="forwarded")
    system.start_apis(1)
    url = system.url
    one_network = [f'for="[2001:db8:1:2::{i:x}]:443";proto=https' for i in range(1, 13)]
    assert _statuses(url, "forwarded", one_network) == [202] * 5 + [429] * 7
    assert _statuses(url, "forwarded", [f'for="10.2.2.{i}:5555"' for i in range(7)]) == [202] * 7
    # X-Forwarded-For is not what this proxy writes: a client's own says nothing, all six are the proxy.
    assert _statuses(url, "x-forwarded-for", [f"203.0.113.{i}" for i in range(6)]) == [202] * 5 + [429]
