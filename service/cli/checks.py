"""``flashsale check``: the probes and smoke tests the image runs against itself.

Kubernetes runs ``check worker`` as the worker's liveness probe; ``helm test`` runs
``check ready`` and ``check demo`` against the API Service. Their HTTP calls use the standard
library (the image ships no HTTP client). Each returns None when all is well, else the reason.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from service.core.redis_clients import WORKER_REDIS_RETRY_SECONDS
from service.core.settings import Settings

REQUEST_TIMEOUT_SECONDS = 5
RQ_LONGEST_RECONNECT_WAIT_SECONDS = 60  # rq.Worker.max_connection_wait_time


def _call(method: str, url: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {"content-type": "application/json"}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:  # 4xx/5xx still carry an answer
        return error.code, dict(error.headers), error.read()


def check_ready(base_url: str) -> str | None:
    """The API answers ``/readyz`` with 200, and reaches PostgreSQL: readiness itself never
    asks for the database (a blip must not empty the Service), but a fresh install whose
    workers cannot reach it is not a working one (``helm test`` runs this)."""
    try:
        status, _, body = _call("GET", f"{base_url}/readyz")
    except OSError as exc:
        return f"{base_url}/readyz unreachable: {exc}"
    if status != 200:
        return f"{base_url}/readyz answered {status}: {body[:300]!r}"
    database = json.loads(body).get("database", {})
    if not database.get("reachable"):
        return f"{base_url}/readyz: ready, but PostgreSQL is unreachable: {database.get('error')}"
    return None


def check_demo(base_url: str, requests: int = 10) -> str | None:
    """The README's demo: instant buys from one client get as many 202s as the burst allows
    (5 by default), then only 429s with Retry-After."""
    try:
        replies = [_call("POST", f"{base_url}/buy", b"{}") for _ in range(requests)]
    except OSError as exc:
        return f"{base_url}/buy unreachable: {exc}"
    statuses = [status for status, _, _ in replies]
    admitted = statuses.count(202)
    if admitted == 0 or statuses != [202] * admitted + [429] * (requests - admitted):
        return f"expected 202s then 429s, got {statuses}"
    for status, headers, body in replies:
        if status == 202 and "order_id" not in json.loads(body):
            return f"a 202 without an order id: {body[:300]!r}"
        if status == 429 and int({k.lower(): v for k, v in headers.items()}.get("retry-after", "0")) < 1:
            return "a 429 without Retry-After"
    return None


def worker_max_silence(settings: Settings) -> float:
    """The longest a healthy worker goes between heartbeats: a job, an idle wait, or RQ's
    longest pause between attempts to reach Redis after a command's own retries, whichever is
    longest, plus margin."""
    busiest = settings.job_timeout_seconds + settings.worker_maintenance_interval
    waiting_for_redis = RQ_LONGEST_RECONNECT_WAIT_SECONDS + WORKER_REDIS_RETRY_SECONDS
    return max(busiest, waiting_for_redis) + settings.worker_maintenance_interval


def check_worker(heartbeat_file: Path | None, max_silence_seconds: float) -> str | None:
    """The worker's loop touched its heartbeat file recently (it does not ask Redis)."""
    if heartbeat_file is None:
        return "FLASHSALE_WORKER_HEARTBEAT_FILE is not set"
    try:
        silence = time.time() - heartbeat_file.stat().st_mtime
    except FileNotFoundError:
        return f"no heartbeat yet at {heartbeat_file}"
    if silence > max_silence_seconds:
        return f"last heartbeat {silence:.0f}s ago (limit {max_silence_seconds:.0f}s)"
    return None
