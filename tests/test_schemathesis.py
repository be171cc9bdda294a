"""Schemathesis against the API's own OpenAPI document, on a real API process (uvicorn, Redis,
PostgreSQL): every operation, valid and invalid input, every built-in check — no 5xx, and
every answer (status, content type, headers, body) is one the document declares."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx

from service.sale.stock_gate import seed

ADMIN_TOKEN = "schemathesis-admin-token"
MIN_REQUESTS = 1000
EXAMPLES_PER_OPERATION = 100
RUN_TIMEOUT_SECONDS = 240
OPEN_LIMITS = {"FLASHSALE_RATE_CAPACITY": "1000000000", "FLASHSALE_RATE_REFILL_PER_SEC": "1000000"}
"""The limiter stays out of the way: a 429 is documented, but would hide the handlers behind it."""

# 422 is this API's answer to a well-formed request naming what does not exist or cannot be
# (an unknown product, a sale closing before it opens, a price over 99,999,999.99): valid by
# the schema and rightly refused, like the 404 and 409 Schemathesis expects by default.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

# Half the order ids asked for are one that exists: random UUIDs alone only ever meet a 404.
[dictionaries.orders]
values = ["{order_id}"]

# Half the clients whose rate limits are asked for are ones the limiter derives; the rest are
# any other string (mostly not a client: 422).
[dictionaries.clients]
values = ["203.0.113.7", "2001:db8::1", "customer:42", "api_key:k-1"]

[parameters]
"path.order_id" = {{ dictionary = "orders", probability = 0.5 }}
"path.client" = {{ dictionary = "clients", probability = 0.5 }}
"""


def _operations(schema: dict) -> dict[tuple[str, re.Pattern], str]:
    """(method, path pattern) -> "METHOD /template" for every documented operation."""
    found = {}
    for template, item in schema["paths"].items():
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")
        for method in item:
            found[(method.upper(), pattern)] = f"{method.upper()} {template}"
    return found


def _operation_of(entry: dict, operations: dict) -> str | None:
    method, path = entry["request"]["method"], httpx.URL(entry["request"]["url"]).path
    return next((name for (m, p), name in operations.items() if m == method and p.match(path)), None)


def test_every_operation_answers_as_its_openapi_document_says(system, fresh_db, redis, tmp_path: Path):
    seed(fresh_db, redis, stock=1_000_000_000)  # /buy keeps admitting: no early sell-out
    system.start_apis(1, extra_env={"FLASHSALE_ADMIN_TOKEN": ADMIN_TOKEN, **OPEN_LIMITS})
    schema_url = f"{system.url}/schema/openapi.json"
    operations = _operations(httpx.get(schema_url).json())
    config = tmp_path / "schemathesis.toml"
    order = httpx.post(f"{system.url}/buy", json={})
    assert order.status_code == 202, order.text
    config.write_text(CONFIG.format(order_id=order.json()["order_id"]))
    har = tmp_path / "requests.har"
    run = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file",
            str(config),
            "run",
            schema_url,
            "--checks",
            "all",
            "--max-examples",
            str(EXAMPLES_PER_OPERATION),
            "--generation-deterministic",  # the same cases every run, and no example database
            "--workers",
            "1",
            "--header",
            f"Authorization: Bearer {ADMIN_TOKEN}",
            "--report",
            "har",
            "--report-har-path",
            str(har),
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        cwd=tmp_path,  # its caches land there, not in the checkout
    )
    assert run.returncode == 0, run.stdout[-30000:] + run.stderr[-5000:] + system.logs()

    entries = json.loads(har.read_text())["log"]["entries"]
    statuses = Counter(entry["response"]["status"] for entry in entries)
    assert not any(status >= 500 for status in statuses), statuses
    answered: dict[str, Counter] = {name: Counter() for name in operations.values()}
    for entry in entries:  # those of no operation: the methods a path lacks, probes
        if (name := _operation_of(entry, operations)) is not None:
            answered[name][entry["response"]["status"] // 100] += 1
    assert sum(sum(classes.values()) for classes in answered.values()) >= MIN_REQUESTS, answered
    # Every operation got past validation and the admin token to its handler at least once.
    assert all(classes[2] for classes in answered.values()), answered
