"""Traces: one POST /buy is one trace across the API and the worker, through the queue;
the log lines it writes carry that trace's id."""

import json

import httpx
import pytest

from service.cli.dev_servers import wait_until
from tests.support.orders import wait_all_terminal
from tests.support.otlp import OtlpReceiver

pytestmark = pytest.mark.slow


def _log_lines(system) -> list[dict]:
    lines = []
    for path in system.log_dir.glob("*.log"):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    return lines


def test_one_buy_is_one_trace_from_the_api_through_the_queue_to_the_database(system):
    with OtlpReceiver() as receiver:
        system.env.update(
            FLASHSALE_LOG_LEVEL="INFO",
            FLASHSALE_REQUEST_LOG_LEVEL="INFO",
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",  # export within a tenth of a second, not five
        )
        system.start_apis(1)
        system.start_workers(1)
        reply = httpx.post(f"{system.url}/buy", json={}, headers={"x-forwarded-for": "10.9.0.1"}, timeout=10)
        assert reply.status_code == 202
        order_id = reply.json()["order_id"]
        wait_all_terminal(system.url, [order_id], timeout=30)

        def admit_span():
            ours = (s for s in receiver.spans if s.attributes.get("flashsale.order_id") == order_id)
            return next(ours, None)

        wait_until(lambda: admit_span() is not None, 30, "the admission span")
        trace_id = admit_span().trace_id
        wait_until(
            lambda: (
                # The job's span ends (and leaves) after the SQL spans inside it.
                any(s.name == "flashsale.apply_order" for s in receiver.trace(trace_id))
                and any(s.attributes.get("db.system") == "postgresql" for s in receiver.trace(trace_id))
            ),
            30,
            "the worker's spans in the same trace",
        )
        spans = receiver.trace(trace_id)
        # Probes, samplers and worker housekeeping make no traces of their own.
        roots = [s for s in receiver.spans if s.parent_id == ""]
        stray = [(s.service, s.name) for s in roots if "http.method" not in s.attributes]

    by_name = {span.name: span for span in spans}
    server = next(s for s in spans if s.service == "flashsale-api" and s.parent_id == "")
    assert server.name.startswith("POST /buy")
    admit = by_name["flashsale.admit"]
    assert admit.attributes["flashsale.decision"] == "admitted"
    assert admit.attributes["flashsale.product_id"] == 1
    assert any(s.attributes.get("db.system") == "redis" and s.parent_id == admit.span_id for s in spans), (
        "admit.lua's EVALSHA under the admission span"
    )
    # The limiter's decision is on the request's span.
    assert any(s.attributes.get("flashsale.limiter_outcome") == "admitted" for s in spans)

    apply = by_name["flashsale.apply_order"]
    assert apply.service == "flashsale-worker"
    assert apply.parent_id == admit.span_id, "the job continues the trace the API started"
    assert apply.attributes["flashsale.status"] == "confirmed"
    assert apply.attributes["flashsale.attempt"] == 1
    sql = [s for s in spans if s.attributes.get("db.system") == "postgresql"]
    assert sql and all(s.service == "flashsale-worker" for s in sql)
    assert {s.service for s in spans} == {"flashsale-api", "flashsale-worker"}
    assert stray == [], f"only requests start traces: {stray}"

    # Every line about this request, API and worker, names the trace; none names the buyer.
    lines = _log_lines(system)
    request_line = next(line for line in lines if line.get("logger") == "flashsale.requests")
    assert (request_line["method"], request_line["path"], request_line["status"]) == ("POST", "/buy", 202)
    assert request_line["trace_id"] == trace_id
    decided = next(line for line in lines if line.get("message") == "order decided")
    assert decided["trace_id"] == trace_id and decided["order_id"] == order_id
    assert not [line for line in lines if "10.9.0.1" in json.dumps(line)], "no client address in the logs"
