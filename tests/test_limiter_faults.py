"""When the limiter's Redis dies or hangs: a fast, defined answer per route, and recovery."""

import json
import os
import signal
import time

import httpx
import pytest
from redis import Redis

from service.cli.dev_servers import free_port, redis_server, wait_until

pytestmark = pytest.mark.slow

TIMEOUT_MS = 200
COOLDOWN_MS = 500


def _policy(mode):
    return json.dumps(
        {
            "buy": {
                "on_redis_error": mode,
                "limits": [{"name": "per-ip", "key": "ip", "capacity": 5, "refill_per_sec": 1}],
            }
        }
    )


@pytest.fixture
def limiter_port():
    return free_port()


@pytest.fixture
def limited_system(system, limiter_port):
    """One API whose limiter has a Redis of its own, on a port we can stop and restart."""

    def start(mode):
        system.env.update(
            FLASHSALE_LIMITER_REDIS_URL=f"redis://127.0.0.1:{limiter_port}/0",
            FLASHSALE_RATE_POLICIES=_policy(mode),
            FLASHSALE_LIMITER_TIMEOUT_MS=str(TIMEOUT_MS),
            FLASHSALE_LIMITER_BREAKER_COOLDOWN_MS=str(COOLDOWN_MS),
        )
        system.start_apis(1)
        return system.url

    return start


def _buy(url, ip):
    started = time.monotonic()
    response = httpx.post(f"{url}/buy", json={}, headers={"x-forwarded-for": ip}, timeout=10)
    return response, time.monotonic() - started


def _metric(url, outcome):
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("flashsale_limiter_decisions_total") and f'outcome="{outcome}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _limits_resume(url):
    """After Redis is back: a fresh client gets exactly its five, then 429s."""
    # Only an answer Redis decided carries the RateLimit field (fail-open answers do not).
    wait_until(lambda: "ratelimit" in _buy(url, "192.0.2.1")[0].headers, 10, "limiter back", interval=0.1)
    statuses = [_buy(url, "192.0.2.2")[0].status_code for _ in range(7)]
    assert statuses == [202] * 5 + [429] * 2


def _assert_fails_closed_fast(url):
    for attempt in range(8):  # past the breaker's threshold: later answers need no Redis at all
        response, seconds = _buy(url, f"192.0.2.{20 + attempt}")
        assert response.status_code == 503, response.text
        assert seconds < TIMEOUT_MS / 1000 + 0.5
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "urn:flashsale:problem:limiter-unavailable"
        assert int(response.headers["retry-after"]) >= 1
    assert httpx.get(f"{url}/healthz").status_code == 200
    ready = httpx.get(f"{url}/readyz").json()
    assert ready["limiter"]["degraded"] is True and ready["limiter"]["breaker"] in ("open", "half_open")
    assert _metric(url, "failed_closed") >= 8


def test_fail_closed_when_redis_dies_then_recovers_when_it_restarts(limited_system, limiter_port):
    with redis_server(limiter_port):
        url = limited_system("closed")
        assert _buy(url, "192.0.2.10")[0].status_code == 202
    _assert_fails_closed_fast(url)
    with redis_server(limiter_port):
        _limits_resume(url)
        assert httpx.get(f"{url}/readyz").json()["limiter"]["degraded"] is False


def test_fail_closed_when_redis_hangs_then_recovers_when_it_wakes(limited_system, limiter_port):
    with redis_server(limiter_port) as redis_url:
        url = limited_system("closed")
        assert _buy(url, "192.0.2.10")[0].status_code == 202
        pid = Redis.from_url(redis_url).info("server")["process_id"]
        os.kill(pid, signal.SIGSTOP)
        try:
            _assert_fails_closed_fast(url)
        finally:
            os.kill(pid, signal.SIGCONT)
        _limits_resume(url)


def test_fail_open_admits_and_counts_it(limited_system, limiter_port):
    with redis_server(limiter_port):
        url = limited_system("open")
        assert _buy(url, "192.0.2.30")[0].status_code == 202
    # Redis is gone: the route fails open, so every buyer is admitted (and counted).
    statuses = [_buy(url, "192.0.2.31")[0].status_code for _ in range(8)]
    assert statuses == [202] * 8
    assert _metric(url, "failed_open") == 8
    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 200, "failing open keeps the pod serving"
    with redis_server(limiter_port):
        _limits_resume(url)
