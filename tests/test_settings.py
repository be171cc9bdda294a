import ipaddress

import pytest

from service.core.settings import DEFAULT_DATABASE_URL, Settings, SettingsError, redact_url, settings_from_env
from tests.support.cli import run_cli


def test_defaults_match_the_design():
    settings = settings_from_env({})
    assert settings.rate_capacity == 5
    assert settings.rate_refill_per_sec == 1.0
    assert settings.trusted_proxies == ()
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.limiter_redis_url == settings.redis_url
    assert settings.drain_lanes == 4


def test_values_are_parsed_and_typed():
    settings = settings_from_env(
        {
            "FLASHSALE_RATE_CAPACITY": "20",
            "FLASHSALE_RATE_REFILL_PER_SEC": "0.5",
            "FLASHSALE_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
            "FLASHSALE_CORS_ORIGINS": "https://shop.example, https://m.shop.example",
            "FLASHSALE_DATABASE_URL": "postgres://app:pw@db:5432/sale",
            "FLASHSALE_REDIS_URL": "redis://cache:6379/1",
        }
    )
    assert settings.rate_capacity == 20
    assert settings.rate_refill_per_sec == 0.5
    assert settings.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("127.0.0.1/32"),
    )
    assert settings.cors_origins == ("https://shop.example", "https://m.shop.example")
    assert settings.database_url == "postgresql+psycopg2://app:pw@db:5432/sale"
    # The limiter follows the main Redis unless told otherwise.
    assert settings.limiter_redis_url == "redis://cache:6379/1"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FLASHSALE_RATE_CAPACITY", "abc"),
        ("FLASHSALE_RATE_CAPACITY", "0"),
        ("FLASHSALE_RATE_REFILL_PER_SEC", "-1"),
        ("FLASHSALE_RATE_REFILL_PER_SEC", "nan"),
        ("FLASHSALE_TRUSTED_PROXIES", "not-a-network"),
        ("FLASHSALE_REDIS_URL", "http://localhost"),
        ("FLASHSALE_DATABASE_URL", "mysql://x"),
        ("FLASHSALE_PORT", "70000"),
        ("FLASHSALE_LOG_LEVEL", "LOUD"),
        ("FLASHSALE_DRAIN_LANES", "0"),
        ("FLASHSALE_DRAIN_LANES", "17"),
    ],
)
def test_a_bad_value_names_its_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        settings_from_env({name: value})


def test_every_bad_value_is_reported_at_once():
    with pytest.raises(SettingsError) as caught:
        settings_from_env({"FLASHSALE_RATE_CAPACITY": "x", "FLASHSALE_PORT": "0"})
    assert "FLASHSALE_RATE_CAPACITY" in str(caught.value)
    assert "FLASHSALE_PORT" in str(caught.value)


def test_the_cli_fails_fast_with_a_message_not_a_traceback():
    result = run_cli({"FLASHSALE_RATE_CAPACITY": "lots", "PATH": "/usr/bin:/bin"}, "api")
    assert result.returncode == 2
    assert "FLASHSALE_RATE_CAPACITY" in result.stderr
    assert "Traceback" not in result.stderr


def test_secrets_stay_out_of_repr():
    settings = Settings(database_url="postgresql+psycopg2://app:hunter2@db/sale", admin_token="s3cret")
    assert "hunter2" not in repr(settings)
    assert "s3cret" not in repr(settings)
    assert redact_url("redis://:pw@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact_url("redis://cache:6379/0") == "redis://cache:6379/0"
    query = redact_url("postgresql://app@db/sale?sslmode=require&PASSWORD=hunter2&password=")
    assert query == "postgresql://app@db/sale?sslmode=require&PASSWORD=***&password=***"
    assert redact_url("redis://:a@b@cache/0?password=x@y") == "redis://:***@cache/0?password=***"
