"""Allow lists and overrides, indexed at load: the lookups a request costs do not grow with the
lists, the most specific match wins, and matches no request could meet are refused or made
meetable (IPv4-mapped, zones, IPv6 narrower than the counted network)."""

import json
import logging

import pytest

from service.core.policies import MAX_MATCHES_PER_ROUTE, PolicyError, parse_policies
from service.core.settings import settings_from_env
from service.limiter import overrides
from service.limiter.identity import ClientIdentity
from service.limiter.overrides import RouteIndex
from service.sale.resources import open_resources

LIMITS = [
    {"name": "ip", "key": "ip", "capacity": 5, "refill_per_sec": 1},
    {"name": "cust", "key": "customer", "capacity": 5, "refill_per_sec": 1},
    {"name": "key", "key": "api_key", "capacity": 5, "refill_per_sec": 1},
]


def _policy(overrides=(), allow=(), ipv6_prefix=64):
    route = {"limits": LIMITS, "overrides": list(overrides), "allow": list(allow)}
    return parse_policies(json.dumps({"buy": route}), ipv6_prefix=ipv6_prefix)["buy"]


def _who(ip="198.51.100.1", customer=None, key=None):
    return ClientIdentity(ip, customer, {"x-api-key": key} if key else {}, "x-api-key")


def _override(match, capacity):
    return {"match": match, "capacity": capacity, "refill_per_sec": 1}


def _capacities(index, who):
    applied = index.for_client(who)
    return None if applied is None else [limit.capacity for limit in applied.limits]


class CountingDict(dict):
    probes = 0

    def get(self, key, default=None):
        CountingDict.probes += 1
        return super().get(key, default)


def _count_probes(index: RouteIndex) -> None:
    """Every table of the index counts the lookups made in it."""
    for matches in (index.allow, index.overrides):
        matches.customers = CountingDict(matches.customers)
        matches.keys = CountingDict(matches.keys)
        matches.prefixes = [(length, CountingDict(table)) for length, table in matches.prefixes]
        matches.networks = {
            version: [(shift, CountingDict(table)) for shift, table in tables]
            for version, tables in matches.networks.items()
        }


def test_a_lookup_in_the_largest_lists_costs_a_few_probes_not_a_scan():
    """20,000 entries (the most a route may have): deciding a request probes one dict per
    distinct network length, prefix length or exact kind, never each entry."""
    assert MAX_MATCHES_PER_ROUTE == 20_000
    networks = [_override(f"10.{i // 256}.{i % 256}.0/24", 50) for i in range(5000)]
    addresses = [_override(f"172.16.{i // 256}.{i % 256}", 60) for i in range(2000)]
    customers = [_override(f"customer:c{i}", 70) for i in range(2000)]
    keys = [_override(f"api_key:partner-{i}-*", 80) for i in range(1000)]
    allow = [f"192.168.{i // 256}.{i % 256}" for i in range(5000)] + [f"customer:ops{i}" for i in range(5000)]
    index = RouteIndex(_policy(networks + addresses + customers + keys, allow))
    _count_probes(index)

    for who, expected in [
        (_who("10.3.7.9", "c1999", "partner-999-xyz"), [50, 70, 80]),
        (_who("172.16.7.207", "nobody", "someone"), [60, 5, 5]),
        (_who("203.0.113.1"), [5, 5, 5]),
        (_who("192.168.19.135"), None),
    ]:
        CountingDict.probes = 0
        assert _capacities(index, who) == expected
        # allow: customer, network lengths (1); overrides: customer, key, prefix lengths (1),
        # network lengths (/32, /24): at most 7, whatever the number of entries.
        assert CountingDict.probes <= 7, CountingDict.probes

    with pytest.raises(PolicyError, match="at most 20000"):
        _policy(networks + addresses + customers + keys, [*allow, "customer:one-too-many"])


def test_lookups_are_bounded_by_the_distinct_lengths():
    v4 = [_override(f"10.0.0.0/{length}", length) for length in range(8, 33)]
    v6 = [_override(f"2001:db8::/{length}", length) for length in range(32, 65)]
    index = RouteIndex(_policy(v4 + v6))
    _count_probes(index)
    CountingDict.probes = 0
    assert _capacities(index, _who("11.0.0.1")) == [5, 5, 5]
    assert CountingDict.probes <= 25, "one probe per IPv4 length (25 of them), none per IPv6 one"


def test_the_most_specific_match_wins_whatever_the_order():
    entries = [
        _override("10.0.0.0/8", 8),
        _override("10.1.0.0/16", 16),
        _override("10.1.2.3", 32),
        _override("api_key:p-*", 1),
        _override("api_key:p-long-*", 2),
        _override("api_key:p-long-exact", 3),
    ]
    for ordered in (entries, entries[::-1]):
        index = RouteIndex(_policy(ordered))
        assert _capacities(index, _who("10.1.2.3"))[0] == 32
        assert _capacities(index, _who("10.1.9.9"))[0] == 16
        assert _capacities(index, _who("10.9.9.9"))[0] == 8
        assert _capacities(index, _who(key="p-long-exact"))[2] == 3
        assert _capacities(index, _who(key="p-long-exactly"))[2] == 2
        assert _capacities(index, _who(key="p-x"))[2] == 1
        assert _capacities(index, _who(key="p"))[2] == 5


def test_no_cache_of_parsed_matches_is_left():
    assert not [
        name
        for name in vars(overrides)
        if name.startswith("_") and hasattr(vars(overrides)[name], "cache_info")
    ]


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("fe80::1%eth0", "zone"),
        ("fe80::1%eth0/128", "zone"),
        ("2001:db8::1", "/64 network"),  # narrower than the /64 a client is counted by
        ("2001:db8::/96", "/64 network"),
    ],
)
def test_matches_no_counted_client_could_meet_are_refused(entry, reason):
    for route in ({"allow": [entry]}, {"overrides": [_override(entry, 9)]}):
        with pytest.raises(PolicyError, match=reason):
            _policy(**route)


def test_a_single_ipv6_address_is_allowed_when_addresses_count_alone():
    index = RouteIndex(_policy([_override("2001:db8::1", 9)], ipv6_prefix=128), 128)
    assert _capacities(index, _who("2001:db8::1"))[0] == 9


def test_an_override_of_the_counted_ipv6_network_covers_every_address_in_it():
    index = RouteIndex(_policy([_override("2001:db8:0:1::/64", 9)]))
    assert _capacities(index, _who("2001:db8:0:1::1"))[0] == 9
    assert _capacities(index, _who("2001:db8:0:1:ffff::7"))[0] == 9, "the same bucket, the same capacity"
    assert _capacities(index, _who("2001:db8:0:2::1"))[0] == 5


def test_ipv4_mapped_entries_match_their_ipv4_clients():
    index = RouteIndex(_policy([_override("::ffff:1.2.3.0/120", 9)], allow=["::ffff:5.6.7.8"]))
    assert _capacities(index, _who("1.2.3.4"))[0] == 9
    assert _capacities(index, _who("5.6.7.8")) is None
    assert _capacities(index, _who("1.2.4.4"))[0] == 5


def test_a_match_named_twice_is_refused():
    with pytest.raises(PolicyError, match="twice"):
        _policy([_override("10.0.0.0/8", 9), _override("10.0.0.0/8", 10)])
    with pytest.raises(PolicyError, match="twice"):
        _policy(allow=["1.2.3.4", "::ffff:1.2.3.4"])


CUSTOMER_POLICY = {
    "buy": {"limits": [{"name": "per-customer", "key": "customer", "capacity": 3, "refill_per_sec": 0.05}]}
}


def test_customer_limits_without_a_customer_header_are_warned_of_at_load(settings_env, caplog):
    env = {**settings_env, "FLASHSALE_RATE_POLICIES": json.dumps(CUSTOMER_POLICY)}
    with caplog.at_level(logging.WARNING, logger="service.limiter.ratelimit"):
        limiter = open_resources(settings_from_env(env)).limiter
    (warning,) = [r for r in caplog.records if "FLASHSALE_CUSTOMER_ID_HEADER" in r.getMessage()]
    assert warning.route == "buy" and "per-customer" in warning.names
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="service.limiter.ratelimit"):
        limiter.apply(parse_policies(json.dumps({"buy": {"limits": LIMITS[:1], "allow": ["customer:ops"]}})))
    assert any("'customer:ops'" in getattr(r, "names", "") for r in caplog.records), "on reload too"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="service.limiter.ratelimit"):
        open_resources(settings_from_env({**env, "FLASHSALE_CUSTOMER_ID_HEADER": "x-customer-id"}))
    assert not [r for r in caplog.records if "FLASHSALE_CUSTOMER_ID_HEADER" in r.getMessage()]
