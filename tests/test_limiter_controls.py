"""Sale-day controls on real API processes sharing one Redis: a policy file changed under a
running sale (a ConfigMap's symlink swap), a broken one, a limit tried in shadow then enforced,
one client's buckets inspected and refilled (on a Redis Cluster limiter too), overrides and the
allow list."""

import contextlib
import json
import threading
import time

import httpx
import pytest

from service.cli.dev_servers import wait_until
from service.core.policies import parse_policies, policy_digest
from service.sale.stock_gate import seed
from tests.support.configmap import ConfigMapDir
from tests.support.servers import redis_cluster

pytestmark = pytest.mark.slow

APPLY_WITHIN_SECONDS = 5


def _policy(capacity, mode="enforce"):
    limit = {"name": "per-ip", "key": "ip", "capacity": capacity, "refill_per_sec": 0.01, "mode": mode}
    return json.dumps({"buy": {"limits": [limit]}})


@pytest.fixture
def plenty_of_stock(fresh_db, redis):
    seed(fresh_db, redis, stock=1_000_000)


def _buy(url, ip):
    return httpx.post(f"{url}/buy", json={}, headers={"x-forwarded-for": ip}, timeout=10).status_code


def _digest(url):
    return httpx.get(f"{url}/readyz", timeout=5).json()["limiter"]["policy"]["digest"]


def _metric(url, name, **labels):
    """A sample's value from one replica's /metrics (0 when absent)."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name) and all(label in line for label in wanted):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class Traffic(threading.Thread):
    """Buyers on every replica until stopped: every answer they got, and every failure to get one."""

    def __init__(self, urls):
        super().__init__(daemon=True)
        self.urls, self.statuses, self.errors = urls, [], []
        self._halt = threading.Event()

    def run(self):
        with httpx.Client(timeout=10) as client:
            i = 0
            while not self._halt.is_set():
                url = self.urls[i % len(self.urls)]
                try:
                    reply = client.post(
                        f"{url}/buy", json={}, headers={"x-forwarded-for": f"10.1.{i % 200}.1"}
                    )
                    self.statuses.append(reply.status_code)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                i += 1

    def stop(self):
        self._halt.set()
        self.join(30)


def _start(system, tmp_path, policy, replicas=3):
    mount_dir = tmp_path / "policies"
    mount_dir.mkdir()
    mount = ConfigMapDir(mount_dir, {"policies.json": policy})
    system.env.update(FLASHSALE_RATE_POLICY_FILE=str(mount_dir / "policies.json"))
    system.start_apis(replicas)
    return mount


def test_a_policy_changed_under_a_running_sale_applies_on_every_replica_within_5s(
    system, plenty_of_stock, tmp_path
):
    mount = _start(system, tmp_path, _policy(2))
    old = policy_digest(parse_policies(_policy(2)))
    assert {_digest(url) for url in system.urls} == {old}
    for n, url in enumerate(system.urls):
        assert [_buy(url, f"203.0.113.{n}") for _ in range(3)] == [202, 202, 429]

    traffic = Traffic(system.urls)
    traffic.start()
    wait_until(lambda: len(traffic.statuses) > 30, 30, "traffic flowing")
    mount.update({"policies.json": _policy(6)})
    changed_at = time.monotonic()
    new = policy_digest(parse_policies(_policy(6)))
    wait_until(
        lambda: all(_digest(url) == new for url in system.urls),
        APPLY_WITHIN_SECONDS,
        "every replica on the new policy",
    )
    applied_in = time.monotonic() - changed_at
    time.sleep(0.5)  # traffic on the new policy too (a fixed span of load, not a wait for a condition)
    traffic.stop()
    assert applied_in < APPLY_WITHIN_SECONDS
    assert traffic.errors == [] and set(traffic.statuses) <= {202, 429}, "no request dropped"

    for n, url in enumerate(system.urls):
        # A new client gets the new capacity; an old one keeps its bucket (same limit name): empty,
        # and the capacity change helps it only as it refills.
        assert [_buy(url, f"198.51.100.{n}") for _ in range(7)] == [202] * 6 + [429]
        assert _buy(url, f"203.0.113.{n}") == 429
        assert _metric(url, "flashsale_rate_policy_loaded_timestamp_seconds", digest=new) > 0


def test_a_broken_policy_file_is_ignored_and_counted_on_every_replica(system, plenty_of_stock, tmp_path):
    mount = _start(system, tmp_path, _policy(2), replicas=2)
    digest = policy_digest(parse_policies(_policy(2)))
    mount.update({"policies.json": '{"buy": {"limits": [{"name": "per-ip", "key": "ip"'})
    wait_until(
        lambda: all(_metric(url, "flashsale_policy_reload_errors_total") == 1 for url in system.urls),
        APPLY_WITHIN_SECONDS,
        "the broken file counted on every replica",
    )
    for n, url in enumerate(system.urls):
        assert _digest(url) == digest
        assert [_buy(url, f"203.0.113.{n}") for _ in range(3)] == [202, 202, 429], "the old limit holds"
    assert "rate policy file rejected" in system.logs()


def test_a_limit_tried_in_shadow_admits_and_counts_then_enforced_denies(system, plenty_of_stock, tmp_path):
    mount = _start(system, tmp_path, _policy(3, mode="shadow"), replicas=2)
    statuses = [_buy(system.urls[i % 2], "192.0.2.50") for i in range(10)]
    assert statuses == [202] * 10, "a shadow limit never denies"
    shadowed = sum(
        _metric(url, "flashsale_limiter_decisions_total", outcome="shadow_limited") for url in system.urls
    )
    assert shadowed == 7, "what the limit would have denied, counted over the replicas"

    mount.update({"policies.json": _policy(3)})
    enforced = policy_digest(parse_policies(_policy(3)))
    wait_until(lambda: all(_digest(url) == enforced for url in system.urls), APPLY_WITHIN_SECONDS, "enforced")
    assert [_buy(system.urls[i % 2], "192.0.2.51") for i in range(4)] == [202] * 3 + [429]


TOKEN = "controls-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
WITH_OVERRIDES = {
    "buy": {
        "limits": [{"name": "per-ip", "key": "ip", "capacity": 3, "refill_per_sec": 0.01}],
        "overrides": [{"match": "203.0.113.0/24", "capacity": 6, "refill_per_sec": 0.01}],
        "allow": ["192.0.2.99"],
    }
}


def _tokens(url, client, method="GET"):
    reply = httpx.request(method, f"{url}/admin/limits/buy/{client}", headers=ADMIN, timeout=10)
    assert reply.status_code == 200, reply.text
    return [(limit["capacity"], limit["tokens"]) for limit in reply.json()["limits"]]


@pytest.mark.parametrize("limiter", ["main-redis", "redis-cluster"])
def test_inspect_charges_nothing_and_reset_refills_on_every_replica(system, plenty_of_stock, limiter):
    with contextlib.ExitStack() as stack:
        if limiter == "redis-cluster":
            cluster_url = stack.enter_context(redis_cluster(nodes=3))
            system.env.update(FLASHSALE_LIMITER_REDIS_URL=cluster_url, FLASHSALE_LIMITER_REDIS_CLUSTER="true")
        system.env.update(FLASHSALE_ADMIN_TOKEN=TOKEN, FLASHSALE_RATE_POLICIES=json.dumps(WITH_OVERRIDES))
        system.start_apis(2)
        first, second = system.urls
        who = "198.51.100.7"
        assert [_tokens(url, who) for url in (first, second, first)] == [[(3, 3)]] * 3, "reads charge nothing"
        assert [_buy(system.urls[i % 2], who) for i in range(5)] == [202] * 3 + [429] * 2  # both deny caches
        assert _tokens(second, who) == [(3, 0)]

        assert _tokens(first, who, method="DELETE") == [(3, 3)]
        # The other replica's deny cache lets go once it hears of the reset (a 429 charges nothing).
        wait_until(lambda: _buy(second, who) == 202, APPLY_WITHIN_SECONDS, "a buy after the reset")
        assert _tokens(first, who) == [(3, 2)]

        assert _tokens(first, "203.0.113.5") == [(6, 6)], "an override"
        assert [_buy(second, "203.0.113.5") for _ in range(7)] == [202] * 6 + [429]
        assert [_buy(first, "192.0.2.99") for _ in range(10)] == [202] * 10, "the allow list"
        assert httpx.get(f"{first}/admin/limits/buy/192.0.2.99", headers=ADMIN).json()["allow_listed"]
        system.stop()


PER_CUSTOMER = {
    "buy": {
        "limits": [{"name": "per-customer", "key": "customer", "capacity": 2, "refill_per_sec": 0.01}],
        "overrides": [{"match": "customer:jürgen", "capacity": 4, "refill_per_sec": 0.01}],
    }
}


def test_a_non_ascii_customer_is_one_bucket_for_buyers_policies_and_the_admin_routes(system, plenty_of_stock):
    """The header arrives as bytes (UTF-8 from the gateway); the policy and the admin path name the
    same customer in UTF-8: the override applies, and inspect shows the bucket the buyer spends."""
    system.env.update(
        FLASHSALE_ADMIN_TOKEN=TOKEN,
        FLASHSALE_RATE_POLICIES=json.dumps(PER_CUSTOMER),
        FLASHSALE_CUSTOMER_ID_HEADER="x-customer-id",
        FLASHSALE_TRUSTED_PROXIES="127.0.0.1/32",
    )
    system.start_apis(1)
    headers = {"x-customer-id": "jürgen".encode(), "x-forwarded-for": "198.51.100.8"}

    def buy():
        return httpx.post(f"{system.url}/buy", json={}, headers=headers, timeout=10).status_code

    who = "customer:j%C3%BCrgen"
    assert _tokens(system.url, who) == [(4, 4)], "the override, for the customer the path names"
    assert [buy() for _ in range(3)] == [202] * 3
    assert _tokens(system.url, who) == [(4, 1)], "the bucket the buyer spends"
    assert [buy() for _ in range(2)] == [202, 429], "the override's capacity, not the limit's 2"
    assert _tokens(system.url, who, method="DELETE") == [(4, 4)]
    assert buy() == 202
