"""Inspect and reset one client's buckets through the admin API, overrides and the allow list,
in-process (tests/test_limiter_controls.py has them on real processes and a Redis Cluster)."""

import json

import pytest
from litestar.testing import TestClient

from service.api.app import create_app
from service.core.policies import PolicyError, parse_policies
from service.core.settings import settings_from_env
from service.limiter.identity import ClientIdentity
from service.limiter.overrides import for_client

TOKEN = "limits-admin-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
POLICY = {
    "buy": {
        "limits": [
            {"name": "per-key", "key": "api_key", "capacity": 3, "refill_per_sec": 0.01},
            {"name": "sale", "key": "global", "capacity": 1000, "refill_per_sec": 0.01},
        ],
        "overrides": [{"match": "api_key:vip-*", "capacity": 10, "refill_per_sec": 1}],
        "allow": ["api_key:ops"],
    }
}


@pytest.fixture
def client(settings_env, fresh_db):
    env = {**settings_env, "FLASHSALE_ADMIN_TOKEN": TOKEN, "FLASHSALE_RATE_POLICIES": json.dumps(POLICY)}
    with TestClient(create_app(settings_from_env(env))) as client:
        yield client


def _limits(client, who, method="GET"):
    reply = client.request(method, f"/admin/limits/buy/{who}", headers=AUTH)
    assert reply.status_code == 200, reply.text
    return reply.json()


def _tokens(view):
    return {limit["name"]: limit["tokens"] for limit in view["limits"]}


def _buy(client, key):
    return client.post("/buy", json={}, headers={"x-api-key": key}).status_code


def test_inspect_charges_nothing_and_reset_refills_the_clients_own_buckets(client):
    fresh = _limits(client, "api_key:k1")
    assert fresh["allow_listed"] is False
    assert [(x["name"], x["capacity"], x["tokens"], x["seconds_to_full"]) for x in fresh["limits"]] == [
        ("per-key", 3, 3, 0),
        ("sale", 1000, 1000, 0),
    ]
    assert [_limits(client, "api_key:k1") for _ in range(5)][-1] == fresh, "reading charges nothing"
    assert [_buy(client, "k1") for _ in range(4)] == [202, 202, 202, 429]
    spent = _limits(client, "api_key:k1")
    assert _tokens(spent) == {"per-key": 0, "sale": 997}
    assert 299 < spent["limits"][0]["seconds_to_full"] <= 300

    reset = _limits(client, "api_key:k1", method="DELETE")
    assert _tokens(reset) == {"per-key": 3, "sale": 997}, "a global limit is every client's: kept"
    assert _buy(client, "k1") == 202, "refilled, and this process's deny cache forgot the bucket"


def test_an_override_and_the_allow_list(client):
    vip = _limits(client, "api_key:vip-7")
    assert vip["limits"][0]["capacity"] == 10 and vip["limits"][0]["refill_per_sec"] == 1
    assert [_buy(client, "vip-7") for _ in range(11)].count(202) >= 10
    assert [_buy(client, "ops") for _ in range(20)] == [202] * 20, "never limited"
    assert _limits(client, "api_key:ops") == {
        "route": "buy",
        "client": "api_key:ops",
        "allow_listed": True,
        "limits": [],
    }
    assert 'outcome="allow_listed"' in client.get("/metrics").text


@pytest.mark.parametrize(
    ("path", "status", "slug"),
    [
        ("/admin/limits/buy/1.2.3.4.5", 422, "invalid-client"),
        ("/admin/limits/buy/customer", 422, ""),  # not even shaped like a client
        ("/admin/limits/checkout/203.0.113.7", 400, ""),  # not a route the limiter knows
        ("/admin/limits/orders/203.0.113.7", 404, "unknown-route"),  # no policy for /orders here
    ],
)
def test_bad_limit_requests_are_problems(client, path, status, slug):
    for method in ("GET", "DELETE"):
        reply = client.request(method, path, headers=AUTH)
        assert reply.status_code == status and reply.json()["type"].endswith(slug)


def test_the_routes_are_in_the_openapi_document(client):
    paths = client.get("/schema/openapi.json").json()["paths"]
    operations = paths["/admin/limits/{route}/{client}"]
    assert {operations["get"]["operationId"], operations["delete"]["operationId"]} == {
        "inspectLimits",
        "resetLimits",
    }


def _who(ip="198.51.100.1", customer=None, key=None):
    return ClientIdentity(ip, customer, {"x-api-key": key} if key else {}, "x-api-key")


def test_overrides_match_networks_customers_and_key_prefixes():
    policy = parse_policies(
        json.dumps(
            {
                "buy": {
                    "limits": [
                        {"name": "ip", "key": "ip", "capacity": 5, "refill_per_sec": 1},
                        {"name": "cust", "key": "customer", "capacity": 5, "refill_per_sec": 1},
                    ],
                    "overrides": [
                        {"match": "203.0.113.0/24", "capacity": 50, "refill_per_sec": 5},
                        {"match": "2001:db8::/32", "capacity": 60, "refill_per_sec": 5},
                        {"match": "customer:42", "capacity": 70, "refill_per_sec": 5},
                    ],
                    "allow": ["192.0.2.9", "api_key:ops-*"],
                }
            }
        )
    )["buy"]

    def capacities(who):
        applied = for_client(policy, who)
        return None if applied is None else [limit.capacity for limit in applied.limits]

    assert capacities(_who()) == [5, 5]
    assert capacities(_who("203.0.113.200")) == [50, 5]
    assert capacities(_who("::ffff:203.0.113.5")) == [50, 5], "an IPv4-mapped address is its IPv4"
    assert capacities(_who("2001:db8:1::5", customer="42")) == [60, 70]
    assert capacities(_who(customer="43")) == [5, 5]
    assert capacities(_who("192.0.2.9")) is None
    assert capacities(_who(key="ops-team")) is None and capacities(_who(key="op")) == [5, 5]


@pytest.mark.parametrize(
    "route",
    [
        {"limits": [{"name": "a", "key": "ip", "capacity": 1, "refill_per_sec": 1, "mode": "dry"}]},
        {"limits": [{"name": "a", "key": "ip", "capacity": 1, "refill_per_sec": 1}], "allow": ["somebody"]},
        {"limits": [{"name": "a", "key": "ip", "capacity": 1, "refill_per_sec": 1}], "allow": ["10.0.0.1/8"]},
        {
            "limits": [{"name": "a", "key": "ip", "capacity": 1, "refill_per_sec": 1}],
            "allow": ["customer:a*"],
        },
        {  # an override of a kind no limit counts
            "limits": [{"name": "a", "key": "ip", "capacity": 1, "refill_per_sec": 1}],
            "overrides": [{"match": "customer:1", "capacity": 5, "refill_per_sec": 1}],
        },
        {  # an override too small for the limit's cost
            "limits": [{"name": "a", "key": "ip", "capacity": 5, "refill_per_sec": 1, "cost": 3}],
            "overrides": [{"match": "10.0.0.0/8", "capacity": 2, "refill_per_sec": 1}],
        },
        {
            "limits": [{"name": "a", "key": "ip", "capacity": 1, "refill_per_sec": 1}],
            "overrides": [{"match": "10.0.0.0/8", "capacity": 2}],
        },
    ],
    ids=str,
)
def test_bad_modes_overrides_and_allow_lists_are_refused_at_load(route):
    with pytest.raises(PolicyError):
        parse_policies(json.dumps({"buy": route}))


def test_a_client_holding_a_slash_is_inspected_and_reset(client):
    """A base64 API key holds '/': sent as %2F (decoded before routing) or as is, it names the key."""
    key = "ab/cd+ef=="
    assert [_buy(client, key) for _ in range(2)] == [202, 202]
    for path in ("api_key:ab%2Fcd+ef==", "api_key:ab/cd+ef=="):
        assert _tokens(_limits(client, path)) == {"per-key": 1, "sale": 998}, path
    assert _tokens(_limits(client, "api_key:ab%2Fcd+ef==", method="DELETE"))["per-key"] == 3
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert "/admin/limits/{route}/{client}" in paths


@pytest.mark.parametrize(
    "path",
    [
        "/admin/limits/buy/customer:" + "x" * 400,  # past the 300 characters the route states
        "/admin/limits/buy/fe80::1%25eth0",  # a zone: an interface, never a client counted
        "/admin/limits/buy/customer:%20padded",  # HTTP strips what surrounds a header value
        "/admin/limits/buy/api_key:a%0Ab",  # no header carries a line feed
        "/admin/limits/buy/",  # no client at all: the route's problem, never an untyped 404
        "/admin/limits/buy/%2F",
    ],
)
def test_a_client_no_request_could_be_counted_as_is_a_422_problem(client, path):
    for method in ("GET", "DELETE"):
        reply = client.request(method, path, headers=AUTH)
        assert reply.status_code == 422, reply.text
        assert reply.headers["content-type"].startswith("application/problem+json")
        assert reply.json()["type"] == "urn:flashsale:problem:invalid-client", reply.text


def test_an_ipv4_mapped_client_is_its_ipv4_bucket(client):
    assert _limits(client, "::ffff:198.51.100.1") == {
        **_limits(client, "198.51.100.1"),
        "client": "::ffff:198.51.100.1",
    }
