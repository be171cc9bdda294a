import json

import pytest

from service.core.policies import (
    MAX_POLICY_FILE_BYTES,
    PolicyError,
    default_policies,
    load_policy_file,
    parse_policies,
)
from service.core.settings import SettingsError, settings_from_env

POLICY = {
    "buy": {
        "on_redis_error": "open",
        "limits": [
            {"name": "per-ip", "key": "ip", "capacity": 5, "refill_per_sec": 1},
            {"name": "per-customer", "key": "customer", "capacity": 3, "refill_per_sec": 0.1},
            {"name": "tenant", "key": "header:X-Tenant", "capacity": 100, "refill_per_sec": 10, "cost": 2},
            {"name": "sale", "key": "global", "capacity": 2000, "refill_per_sec": 500},
        ],
    },
    "orders": {"limits": [{"name": "polling", "key": "ip", "capacity": 20, "refill_per_sec": 5}]},
}


def test_a_policy_document_is_parsed():
    policies = parse_policies(json.dumps(POLICY))
    assert policies["buy"].on_redis_error == "open"
    assert [limit.name for limit in policies["buy"].limits] == ["per-ip", "per-customer", "tenant", "sale"]
    assert policies["buy"].limits[2].cost == 2
    assert policies["orders"].on_redis_error == "closed"


def test_the_default_keeps_the_seed_behaviour():
    (limit,) = default_policies(5, 1.0)["buy"].limits
    assert (limit.name, limit.key, limit.capacity, limit.refill_per_sec, limit.cost) == (
        "per-ip",
        "ip",
        5,
        1.0,
        1,
    )


def test_the_window_is_the_time_an_empty_bucket_takes_to_fill():
    (limit,) = default_policies(5, 2.0)["buy"].limits
    assert limit.window_seconds == 3
    assert default_policies(10, 0.1)["buy"].limits[0].window_seconds == 100


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["buy"]["limits"][0].update(key="cookie"), "key must be one of"),
        (lambda p: p["buy"]["limits"][0].update(capacity=0), "capacity"),
        (lambda p: p["buy"]["limits"][0].update(refill_per_sec=0), "refill_per_sec"),
        (lambda p: p["buy"]["limits"][0].update(cost=6), "cost exceeds capacity"),
        (lambda p: p["buy"]["limits"][0].update(name="Per IP!"), "name"),
        (lambda p: p["buy"]["limits"][0].update(burst=3), "unknown field"),
        (lambda p: p["buy"]["limits"][1].update(name="per-ip"), "unique"),
        (lambda p: p["buy"].update(limits=[]), "between 1 and 8"),
        (lambda p: p["buy"].update(on_redis_error="maybe"), "on_redis_error"),
        (lambda p: p.update(checkout=p["orders"]), "checkout"),
    ],
)
def test_bad_policies_are_refused_with_a_reason(change, message):
    policy = json.loads(json.dumps(POLICY))
    change(policy)
    with pytest.raises(PolicyError, match=message):
        parse_policies(json.dumps(policy))


def test_toml_and_json_files(tmp_path):
    toml = tmp_path / "limits.toml"
    toml.write_text(
        '[buy]\non_redis_error = "closed"\n[[buy.limits]]\nname = "per-ip"\nkey = "ip"\ncapacity = 7\n'
        "refill_per_sec = 2\n"
    )
    assert load_policy_file(toml)["buy"].limits[0].capacity == 7
    as_json = tmp_path / "limits.json"
    as_json.write_text(json.dumps(POLICY))
    assert len(load_policy_file(as_json)["buy"].limits) == 4


def test_settings_name_the_variable_of_a_bad_policy(tmp_path):
    with pytest.raises(SettingsError, match=r"FLASHSALE_RATE_POLICIES: .*capacity"):
        settings_from_env({"FLASHSALE_RATE_POLICIES": '{"buy": {"limits": [{"name": "a", "key": "ip"}]}}'})
    broken = tmp_path / "limits.toml"
    broken.write_text("[buy\n")
    with pytest.raises(SettingsError, match="FLASHSALE_RATE_POLICY_FILE"):
        settings_from_env({"FLASHSALE_RATE_POLICY_FILE": str(broken)})
    with pytest.raises(SettingsError, match=r"FLASHSALE_RATE_POLICY_FILE: must name an existing file"):
        settings_from_env({"FLASHSALE_RATE_POLICY_FILE": str(tmp_path / "missing.toml")})


def test_capacity_and_refill_shape_the_default_policy():
    settings = settings_from_env({"FLASHSALE_RATE_CAPACITY": "9", "FLASHSALE_RATE_REFILL_PER_SEC": "3"})
    (limit,) = settings.policies["buy"].limits
    assert (limit.capacity, limit.refill_per_sec) == (9, 3.0)


def test_a_policy_file_that_is_not_utf8_or_too_large_is_a_configuration_error(tmp_path, settings_env):
    path = tmp_path / "limits.json"
    path.write_bytes(
        b'{"buy": {"limits": [{"name": "caf\xe9", "key": "ip", "capacity": 1, "refill_per_sec": 1}]}}'
    )
    with pytest.raises(SettingsError, match=r"^invalid configuration: FLASHSALE_RATE_POLICY_FILE: not UTF-8"):
        settings_from_env({**settings_env, "FLASHSALE_RATE_POLICY_FILE": str(path)})
    path.write_bytes(json.dumps(POLICY).encode().ljust(MAX_POLICY_FILE_BYTES + 1))
    with pytest.raises(SettingsError, match=r"FLASHSALE_RATE_POLICY_FILE: .* above the 1048576"):
        settings_from_env({**settings_env, "FLASHSALE_RATE_POLICY_FILE": str(path)})
