"""A main Redis that may evict keys would silently drop queued orders: refuse to start on it."""

import pytest

from service.cli.dev_servers import free_port, redis_server
from tests.support.cli import run_cli


@pytest.fixture(scope="module")
def evicting_redis():
    with redis_server(None, "--maxmemory-policy", "allkeys-lru") as url:
        yield url


@pytest.mark.parametrize("command", [["worker", "--burst"], ["api", "--host", "127.0.0.1"]])
def test_api_and_worker_refuse_an_evicting_redis(settings_env, evicting_redis, command):
    env = {**settings_env, "FLASHSALE_REDIS_URL": evicting_redis}
    if command[0] == "api":
        command = [*command, "--port", str(free_port())]
    result = run_cli(env, *command)
    assert result.returncode != 0
    assert "maxmemory-policy allkeys-lru" in result.stderr
    assert "maxmemory-policy noeviction" in result.stderr
