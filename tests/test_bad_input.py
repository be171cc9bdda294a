"""Bad input, hand-picked: every answer is the exact status and an RFC 9457 problem, never a
stack trace. ``POST /buy`` is asked twice, by the fast path (``service.api.fast_buy``) and by the
full Litestar path (a CORS request always takes it), and both must answer alike. What only a
real server sees (raw bytes, slow clients, the peer address) is sent to a real uvicorn process
over a socket; the rest in-process on the real Redis and PostgreSQL.

(Bodies the schema refuses in bulk are ``tests/test_api.py``'s and Schemathesis's.)"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from urllib.parse import urlparse

import httpx
import pytest
from litestar.testing import TestClient

from service.api.app import create_app
from service.api.http_server import MAX_HEAD_BYTES
from service.api.schemas import MAX_BODY_BYTES
from service.cli.dev_servers import wait_until
from service.core.settings import settings_from_env
from tests.support.problems import assert_problem

ORIGIN = "https://shop.example"
TOKEN = "bad-input-admin-token"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
JSON = {"content-type": "application/json"}
READ_TIMEOUT_SECONDS = 1
PROMPT_SECONDS = 2.0
"""Generous on a loaded 2-core machine; a blocked server would take the whole read timeout or more."""


@pytest.fixture
def client(settings_env, fresh_db):
    settings = settings_from_env(
        {**settings_env, "FLASHSALE_CORS_ORIGINS": ORIGIN, "FLASHSALE_ADMIN_TOKEN": TOKEN}
    )
    with TestClient(create_app(settings)) as client:
        yield client


def buy(client, content: bytes | None = None, headers: dict | None = None) -> httpx.Response:
    """``POST /buy`` by both paths; they must agree. The fast path's answer."""
    fast = client.post("/buy", content=content, headers=headers or {})
    full = client.post("/buy", content=content, headers={**(headers or {}), "origin": ORIGIN})
    assert full.headers["access-control-allow-origin"] == ORIGIN, "Litestar's CORS layer answered it"
    assert "access-control-allow-origin" not in fast.headers
    assert fast.status_code == full.status_code, (fast.text, full.text)
    assert fast.headers["content-type"] == full.headers["content-type"]
    if fast.status_code != 202:  # a 202 carries a new order id each time
        assert fast.json() == full.json()
    return fast


# -- sizes --------------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413_whatever_it_holds(client):
    at_limit = b'{"quantity": 1}'.ljust(MAX_BODY_BYTES)  # JSON allows the trailing spaces
    assert buy(client, at_limit, JSON).status_code == 202
    assert_problem(buy(client, at_limit + b" ", JSON), 413)
    assert_problem(buy(client, b"[" * 10_000 + b"]" * 10_000, JSON), 413)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 8_000 + b"]" * 8_000,  # under the size limit, far deeper than the decoder goes
        b'{"quantity": ' + b"[" * 8_000 + b"]" * 8_000 + b"}",
        b'{"quantity": 1, "padding": "' + b"x" * (MAX_BODY_BYTES - 40) + b'"}',
        b'{"quantity": 1' + b"0" * 5_000 + b"}",  # more digits than Python turns into an int
        b'{"quantity": 1e400}',
        b'{"quantity": 9223372036854775808}',
        b'{"quantity": "2"}',
        b'{"quantity": 1.5}',
        b'{"product_id": "1"}',
    ],
    ids=[
        "deep",
        "deep-member",
        "huge",
        "5000-digits",
        "1e400",
        "2**63",
        "numeric-string",
        "float",
        "id-string",
    ],
)
def test_deep_huge_and_mistyped_json_is_400_on_both_paths(client, body):
    assert_problem(buy(client, body, JSON), 400)


def test_a_whole_number_written_as_a_float_is_an_integer(client):
    # JSON Schema (and so the OpenAPI document) counts 2.0 as an integer.
    assert buy(client, b'{"quantity": 2.0}', JSON).status_code == 202


@pytest.mark.parametrize("body", [b"[" * 8_000 + b"]" * 8_000, b'{"name": "caf\xe9"}'], ids=["deep", "utf-8"])
def test_admin_bodies_that_broke_the_decoder_are_400(client, body):
    assert_problem(client.post("/admin/products", content=body, headers={**JSON, **ADMIN}), 400)


# -- content types and encodings -----------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""]
)
def test_a_body_declared_as_anything_but_json_is_415(client, content_type):
    problem = assert_problem(
        buy(client, b"{}", {"content-type": content_type}), 415, "unsupported-media-type"
    )
    assert "application/json" in problem["detail"]
    admin = client.post(
        "/admin/products", content=b'{"name": "x"}', headers={"content-type": content_type, **ADMIN}
    )
    assert_problem(admin, 415, "unsupported-media-type")


def test_the_admin_token_is_checked_before_the_content_type(client):
    assert_problem(client.post("/admin/products", content=b"{}", headers={"content-type": "text/plain"}), 401)


@pytest.mark.parametrize("headers", [{}, {"content-type": "application/json; charset=utf-8"}, JSON])
def test_json_or_no_content_type_at_all_is_read_as_json(client, headers):
    assert buy(client, b'{"quantity": 2}', headers).status_code == 202


@pytest.mark.parametrize(
    "body",
    [b'{"quantity": "\xff"}', b'{"\xc3\x28": 1}', b"\xef\xbb\xbf{}", b'{"quantity": 1}\xff'],
    ids=["in-a-string", "in-a-key", "byte-order-mark", "trailing"],
)
def test_invalid_utf8_is_400(client, body):
    assert_problem(buy(client, body, JSON), 400)


# -- ids in paths --------------------------------------------------------------------------------


@pytest.mark.parametrize("order_id", ["0", "-1", str(2**63), "1.5", "abc", "1e3", "%00", "%ZZ", "a" * 5_000])
def test_an_order_id_that_is_no_uuid_is_404(client, order_id):
    assert_problem(client.get(f"/orders/{order_id}"), 404)


def test_an_order_id_in_capitals_is_the_same_uuid_and_unknown(client):
    problem = assert_problem(client.get("/orders/00000000-0000-0000-0000-00000000000A"), 404, "unknown-order")
    assert "00000000-0000-0000-0000-00000000000a" in problem["detail"]


@pytest.mark.parametrize("product_id", ["0", "-1", str(2**31), str(2**63), str(10**30)])
def test_a_product_id_no_product_can_have_is_an_unknown_product(client, product_id):
    assert_problem(client.get(f"/products/{product_id}"), 404, "unknown-product")


@pytest.mark.parametrize("product_id", ["1.5", "abc", "1e3", "0x10", "%00"])
def test_a_product_id_that_is_no_integer_matches_no_route(client, product_id):
    assert_problem(client.get(f"/products/{product_id}"), 404)


def test_an_out_of_range_id_in_an_admin_path_is_404(client):
    too_big = client.post(f"/admin/products/{2**63}/restock", json={"units": 1}, headers=ADMIN)
    assert_problem(too_big, 404, "unknown-product")


# -- headers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["caf\xc3\xa9".encode("latin-1"), b"x" * 256, b'"' + b"x" * 256 + b'"', b"a\x7fb", b"a\x01b"],
    ids=["utf-8", "256-chars", "256-quoted", "DEL", "control"],
)
def test_a_malformed_idempotency_key_is_400_on_both_paths(client, key):
    assert_problem(buy(client, b"{}", {**JSON, "idempotency-key": key}), 400, "invalid-idempotency-key")


def test_an_idempotency_key_of_255_characters_is_fine(client):
    assert buy(client, b"{}", {**JSON, "idempotency-key": "k" * 255}).status_code == 202


# -- routes and methods --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nowhere", "/BUY", "/orders", "/admin", "/%ff", "/" + "a" * 5_000])
def test_unknown_routes_are_404_problems(client, path):
    assert_problem(client.get(path), 404)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/buy", {"POST", "OPTIONS"}),
        ("PUT", "/buy", {"POST", "OPTIONS"}),
        ("DELETE", "/products/1", {"GET", "OPTIONS"}),
        ("POST", "/orders/00000000-0000-0000-0000-000000000000", {"GET", "OPTIONS"}),
        ("PATCH", "/admin/products/1/sale", {"PUT", "OPTIONS"}),
        ("TRACE", "/healthz", {"GET", "OPTIONS"}),
    ],
)
def test_a_wrong_method_is_a_405_problem_saying_what_is_allowed(client, method, path, allowed):
    response = client.request(method, path)
    assert_problem(response, 405)
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed


# -- a real server: raw bytes, the peer address, slow clients ------------------------------------


def _send(url: str, data: bytes, timeout: float = 10) -> httpx.Response:
    """``data`` as it is, over a socket; the one answer (the server closes after it)."""
    address = urlparse(url)
    with socket.create_connection((address.hostname, address.port), timeout=timeout) as sock:
        sock.sendall(data)
        return _answer(sock)


def _answer(sock: socket.socket) -> httpx.Response:
    reply = http.client.HTTPResponse(sock)
    reply.begin()
    return httpx.Response(reply.status, headers=reply.getheaders(), content=reply.read())


def _post(headers: bytes, body: bytes = b"{}") -> bytes:
    return (
        b"POST /buy HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\nConnection: close\r\n"
        + headers
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


@pytest.fixture
def api(system):
    """One API process: loopback is not a trusted proxy, browsers of ORIGIN may call it (so a
    request with an Origin takes the full path), requests get READ_TIMEOUT_SECONDS to arrive."""
    system.start_apis(
        1,
        extra_env={
            "FLASHSALE_TRUSTED_PROXIES": "10.0.0.0/8",
            "FLASHSALE_CORS_ORIGINS": ORIGIN,
            "FLASHSALE_REQUEST_TIMEOUT_SECONDS": str(READ_TIMEOUT_SECONDS),
        },
    )
    return system.url


@pytest.mark.parametrize(
    "header",
    [
        b"Idempotency-Key: a\rb\r\n",  # a bare CR
        b"Idempotency-Key: a\nX-Injected: yes\r\n",  # a bare LF: a second header smuggled in
        b"Idempotency-Key: a\r\n b\r\n",  # obsolete line folding
        b"Idempotency-Key: a\x00b\r\n",
        b"Content-Length: 3\r\n",  # a second, different length: request smuggling
        b"Transfer-Encoding: chunked\r\n",  # with a Content-Length too
        b"Bad Header: x\r\n",
    ],
    ids=["CR", "LF", "folded", "NUL", "two-lengths", "chunked-and-length", "space-in-name"],
)
def test_header_injection_is_a_400_problem_before_any_route(api, header):
    assert_problem(_send(api, _post(header)), 400, "malformed-request")


def test_an_idempotency_key_with_utf8_from_a_real_client_is_400(api):
    for origin in (b"", b"Origin: " + ORIGIN.encode() + b"\r\n"):
        answer = _send(api, _post(origin + "Idempotency-Key: café\r\n".encode()))
        assert_problem(answer, 400, "invalid-idempotency-key")


def test_a_request_line_that_is_no_http_is_a_400_problem(api):
    assert_problem(_send(api, b"GARBAGE\r\n\r\n"), 400, "malformed-request")


def test_headers_over_the_limit_are_431(api):
    big = b"X-Padding: " + b"a" * MAX_HEAD_BYTES + b"\r\n"
    assert_problem(_send(api, _post(big)), 431, "headers-too-large")
    assert _send(api, _post(b"X-Padding: " + b"a" * (MAX_HEAD_BYTES // 2) + b"\r\n")).status_code == 202


def test_a_chunked_body_growing_past_the_limit_is_413_on_both_paths(api):
    address = urlparse(api)
    for origin in (b"", b"Origin: " + ORIGIN.encode() + b"\r\n"):
        with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
            sock.sendall(
                b"POST /buy HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
                + origin
                + b"Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n"
            )
            chunk = b" " * 4096
            try:  # the server may answer, and stop reading, before the last chunk
                for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                pass
            assert_problem(_answer(sock), 413)


def test_x_forwarded_for_from_an_untrusted_peer_changes_nothing(api):
    spoofs = [
        b"X-Forwarded-For: 203.0.113.%d\r\n",
        b"X-Forwarded-For: 10.0.0.%d\r\n",  # even an address of the trusted proxies
        b"X-Forwarded-For: 198.51.100.%d, 10.0.0.1\r\n",
        b"Forwarded: for=192.0.2.%d\r\n",
        b"X-Real-IP: 192.0.2.%d\r\n",
        b"X-Forwarded-For: garbage%d\r\n",
    ]
    statuses = [_send(api, _post(spoof % i)).status_code for i, spoof in enumerate(spoofs)]
    # Six new "clients" each claimed a fresh address: all counted as the one loopback peer.
    assert statuses == [202] * 5 + [429]
    limited = _send(api, _post(b"Origin: " + ORIGIN.encode() + b"\r\nX-Forwarded-For: 203.0.113.99\r\n"))
    assert_problem(limited, 429, "rate-limited")


class _SlowClient:
    """A connection that sends ``opening``, then one byte of ``trickle`` every ``interval`` s,
    until the server closes it; what the server answered, if anything."""

    def __init__(self, url: str, opening: bytes, trickle: bytes = b"", interval: float = 0.2) -> None:
        address = urlparse(url)
        self.sock = socket.create_connection((address.hostname, address.port), timeout=15)
        self.sock.sendall(opening)
        self.trickle, self.interval = trickle, interval
        self.started = time.monotonic()
        self.closed_after: float | None = None
        self.answer = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        threading.Thread(target=self._send, daemon=True).start()

    def _send(self) -> None:
        for byte in self.trickle:
            if self.closed_after is not None:
                return
            try:
                self.sock.send(bytes([byte]))
            except OSError:
                return
            time.sleep(self.interval)  # the pace of the attack, not a wait for the server

    def _read(self) -> None:
        try:
            while chunk := self.sock.recv(65536):
                self.answer += chunk
        except OSError:
            pass
        self.closed_after = time.monotonic() - self.started

    def response(self) -> httpx.Response:
        head, _, body = self.answer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
        return httpx.Response(int(lines[0].split()[1]), headers=headers, content=body)


def test_slow_clients_are_timed_out_and_never_hold_up_the_others(api):
    head = b"POST /buy HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
    slow_head = _SlowClient(api, b"POST /buy HTTP/1.1\r\nHost: api\r\n", trickle=b"X-Slow: " + b"a" * 200)
    slow_body = _SlowClient(api, head + b"Content-Length: 40\r\n\r\n{", trickle=b'"quantity": 1' + b" " * 30)
    slow_cors_body = _SlowClient(
        api, head + b"Origin: " + ORIGIN.encode() + b"\r\nContent-Length: 40\r\n\r\n{"
    )
    idle = _SlowClient(api, b"")
    crowd = [_SlowClient(api, b"GET /healthz HTTP/1.1\r\n", trickle=b"X: " + b"a" * 100) for _ in range(50)]

    with httpx.Client(base_url=api) as other:
        for _ in range(5):  # served as ever while the slow ones hang on
            started = time.monotonic()
            assert other.get("/healthz").status_code == 200
            assert other.post("/buy", json={}).status_code == 202
            assert time.monotonic() - started < PROMPT_SECONDS

    everyone = [slow_head, slow_body, slow_cors_body, idle, *crowd]
    deadline = READ_TIMEOUT_SECONDS + 2 + 5  # timeout, the once-a-second sweep, a loaded machine
    wait_until(lambda: all(c.closed_after is not None for c in everyone), deadline, "slow clients closed")
    assert all(c.closed_after >= READ_TIMEOUT_SECONDS for c in everyone)
    for slow in (slow_head, slow_body, slow_cors_body, *crowd):
        assert_problem(slow.response(), 408, "request-timeout")
    assert idle.answer == b"", "a connection that never asked gets no answer, only closed"
    metrics = httpx.get(f"{api}/metrics").text
    # The app saw the bodies stop (a disconnect, a 500 nobody received): counted as the 408s they were.
    assert 'path="/buy",status_code="408"} 2.0' in metrics
    assert 'status_code="500"' not in metrics
