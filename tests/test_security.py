"""Secrets stay secret: the admin token and the passwords in the Redis and PostgreSQL URLs
never reach a log line, an HTTP answer, an exported span or /metrics, on the happy path or
when a backing service is away."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from service.cli.dev_servers import free_port, wait_until
from tests.support.cli import cli_running, run_cli
from tests.support.orders import wait_all_terminal
from tests.support.otlp import OtlpReceiver

pytestmark = pytest.mark.slow


def _with_password(redis_url: str, password: str) -> str:
    # The test Redis has no password: its default user (nopass) accepts any, as trust auth does.
    return redis_url.replace("redis://", f"redis://default:{password}@", 1)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def _api(env: dict[str, str], log: Path) -> Iterator[str]:
    """An API process that may not be ready (its Redis or PostgreSQL is away): up is /healthz."""
    url = f"http://127.0.0.1:{free_port()}"
    with cli_running(env, log, "api", "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1]) as process:
        wait_until(lambda: _healthy(url) or process.poll() is not None, 30, f"API {url}")
        assert process.poll() is None, log.read_text()
        yield url


@pytest.fixture
def secrets() -> dict[str, str]:
    return {name: f"{name}-{uuid.uuid4().hex}" for name in ("token", "redis-password", "db-password")}


def test_no_secret_reaches_logs_answers_traces_or_metrics(system, secrets, tmp_path):
    token = secrets["token"]
    database_url = make_url(system.env["FLASHSALE_DATABASE_URL"]).set(password=secrets["db-password"])
    dead_database = database_url.set(port=free_port()).render_as_string(hide_password=False)
    redis_url = _with_password(system.env["FLASHSALE_REDIS_URL"], secrets["redis-password"])
    dead_redis = _with_password(f"redis://127.0.0.1:{free_port()}/0", secrets["redis-password"])
    seen: list[str] = []  # every answer and every command's output, searched at the end

    def answered(response: httpx.Response) -> None:
        response.read()
        seen.append(f"{response.status_code} {dict(response.headers)} {response.text}")

    with OtlpReceiver() as receiver:
        system.env.update(
            FLASHSALE_ADMIN_TOKEN=token,
            FLASHSALE_DATABASE_URL=database_url.render_as_string(hide_password=False),
            FLASHSALE_REDIS_URL=redis_url,
            FLASHSALE_LOG_LEVEL="DEBUG",
            FLASHSALE_REQUEST_LOG_LEVEL="INFO",
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",
            # An operator who records every header must still not record the admin token.
            OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST=".*",
            OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE=".*",
        )
        system.start_apis(1)
        system.start_workers(1)
        hooks = {"response": [answered]}
        with httpx.Client(base_url=system.url, timeout=10, event_hooks=hooks) as http:
            good = {"authorization": f"Bearer {token}"}
            created = http.post("/admin/products", json={"name": "Secret", "stock": 3}, headers=good)
            assert created.status_code == 201
            assert http.post("/admin/products/1/restock", json={"units": 2}, headers=good).status_code == 200
            for wrong in (f"Bearer {token[:-1]}x", f"Bearer {token}{token}", token, f"Basic {token}"):
                refused = http.put("/admin/products/1/sale", json={}, headers={"authorization": wrong})
                assert refused.status_code == 401
            bought = http.post("/buy", json={}, headers={"authorization": f"Bearer {token}"})
            assert bought.status_code == 202
            wait_all_terminal(system.url, [bought.json()["order_id"]], timeout=30)
            for path in (
                "/readyz",
                "/healthz",
                "/metrics",
                "/backlog",
                "/products/1",
                "/schema/openapi.json",
            ):
                assert http.get(path).status_code == 200, path
            assert http.get("/no/such/path").status_code == 404

        # PostgreSQL away: readiness reports it (and logs why), admin writes fail, and so does
        # the job of an order a worker that cannot reach it takes (the good worker has left).
        system.retire_worker(0).wait(30)
        broken = {**system.env, "FLASHSALE_DATABASE_URL": dead_database}
        with (
            _api(broken, tmp_path / "api-no-database.log") as url,
            httpx.Client(base_url=url, timeout=10, event_hooks=hooks) as http,
        ):
            assert http.post("/buy", json={}, headers={"x-forwarded-for": "10.1.2.3"}).status_code == 202
            worker_log = tmp_path / "worker-no-database.log"
            with cli_running(broken, worker_log, "worker"):
                wait_until(lambda: "OperationalError" in worker_log.read_text(), 60, "the job's failure")
            assert http.get("/readyz").json()["database"]["reachable"] is False
            restock = http.post("/admin/products/1/restock", json={"units": 1}, headers=good)
            assert restock.status_code == 503
            assert http.get("/metrics").status_code == 200
        # Redis away: readiness (which logs why), the backlog and /buy fail.
        broken = {**system.env, "FLASHSALE_REDIS_URL": dead_redis}
        with (
            _api(broken, tmp_path / "api-no-redis.log") as url,
            httpx.Client(base_url=url, timeout=10, event_hooks=hooks) as http,
        ):
            assert http.get("/readyz").status_code == 503
            assert http.get("/backlog").status_code == 503
            assert http.post("/buy", json={}).status_code == 503

        # The commands, working and failing.
        for env, args in [
            (system.env, ["migrate"]),
            (system.env, ["reconcile"]),
            (system.env, ["orders", "failed"]),
            ({**system.env, "FLASHSALE_DATABASE_URL": dead_database}, ["migrate", "--wait", "1"]),
            ({**system.env, "FLASHSALE_DATABASE_URL": dead_database}, ["seed"]),
            ({**system.env, "FLASHSALE_REDIS_URL": dead_redis}, ["orders", "failed"]),
            ({**system.env, "FLASHSALE_RATE_CAPACITY": "lots"}, ["api"]),
        ]:
            done = run_cli(env, *args)
            seen.append(done.stdout + done.stderr)

        # `flashsale dev` says which configured server did not answer before starting its own.
        dev_log = tmp_path / "dev.log"
        dev_env = {**system.env, "FLASHSALE_REDIS_URL": dead_redis}
        with cli_running(dev_env, dev_log, "dev", "--port", str(free_port())):
            wait_until(lambda: "flashsale is running" in dev_log.read_text(), 60, "flashsale dev")

        # Spans of the admin calls, the order's job and the failures have all left.
        wait_until(
            lambda: {"flashsale-api", "flashsale-worker"} <= {s.service for s in receiver.spans},
            30,
            "spans from the API and the worker",
        )
        system.stop()
        exported = b"".join(receiver.bodies)
        attributes = [
            (span.name, key, str(value)) for span in receiver.spans for key, value in span.attributes.items()
        ]

    logs = {path.name: path.read_text() for path in tmp_path.glob("*.log")}
    leaks = []
    for name, secret in secrets.items():
        if secret.encode() in exported:
            where = [(span, key) for span, key, value in attributes if secret in value]
            leaks.append(f"the {name} in exported spans: {where or 'outside span attributes'}")
        leaks += [f"the {name} in {log_name}" for log_name, text in logs.items() if secret in text]
        leaks += [f"the {name} in {entry[:300]!r}" for entry in seen if secret in entry]
    assert not leaks
    # The paths that could have leaked them did run.
    assert any('"status": 401' in text for text in logs.values()), "refusals were logged"
    assert any("order decided" in text for text in logs.values())
    assert "dependency unavailable" in logs["api-no-database.log"]
    assert "redis://default:***@" in logs["dev.log"], "dev named the Redis it could not reach"
    assert ("POST /admin/products", "http.request.header.authorization", "['[REDACTED]']") in attributes
