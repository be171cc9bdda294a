"""The admin API: a locked door, products, restocks, sale windows and per-customer limits."""

import logging
import re
from datetime import UTC, datetime, timedelta

import pytest
from litestar.testing import TestClient

from service.api.app import create_app
from service.core.settings import settings_from_env
from tests.support.database import product_state

TOKEN = "s3cret-admin-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(settings_env, fresh_db):
    settings = settings_from_env({**settings_env, "FLASHSALE_ADMIN_TOKEN": TOKEN})
    with TestClient(create_app(settings)) as client:
        yield client


def _at(**delta):
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


def _new_product(client, **fields):
    body = {"name": "Concert ticket", "price": "49.50", "stock": 5, **fields}
    response = client.post("/admin/products", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    return response.json()


def _admin_requests(app):
    """(method, path) of every admin route the app serves, so a new one is checked too."""
    return [
        (method, re.sub(r"\{[^}]+\}", "1", route.path))
        for route in app.routes
        if route.path.startswith("/admin")
        for method in sorted(route.methods - {"OPTIONS"})
    ]


SAME_LENGTH = "x" * len(TOKEN)


@pytest.mark.parametrize(
    ("authorization", "error"),
    [
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer ", None),
        (TOKEN, None),  # no scheme
        (f"Basic {TOKEN}", None),
        (f"Token {TOKEN}", None),
        (f"Bearer {SAME_LENGTH}", "invalid_token"),
        (f"Bearer {TOKEN[:-1]}X", "invalid_token"),  # one character off
        (f"Bearer {TOKEN[:-1]}", "invalid_token"),  # a prefix
        (f"Bearer {TOKEN}x", "invalid_token"),
        (f"Bearer {TOKEN * 40}", "invalid_token"),
        (f"Bearer  {TOKEN}", "invalid_token"),  # the extra space is part of the token
        ("Bearer g\u00fcess".encode(), "invalid_token"),  # not ASCII (raw UTF-8 bytes)
    ],
    ids=repr,
)
def test_every_admin_route_is_locked_without_the_right_token(client, fresh_db, authorization, error, caplog):
    caplog.set_level(logging.DEBUG)
    headers = {} if authorization is None else {"authorization": authorization}
    routes = _admin_requests(client.app)
    # products, restock, sale; limits GET and DELETE, with a client and without (a 422 problem)
    assert len(routes) == 7
    for method, path in routes:
        refused = client.request(method, path, json={"name": "x", "units": 1}, headers=headers)
        assert refused.status_code == 401, (method, path, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
        challenge = refused.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="flashsale-admin"')
        assert ('error="invalid_token"' in challenge) is (error is not None)
        assert TOKEN not in refused.text
    assert TOKEN not in caplog.text and SAME_LENGTH not in caplog.text
    assert product_state(fresh_db, 1)[0] == 100 and client.get("/products/2").status_code == 404, (
        "nothing was created or restocked"
    )


def test_the_scheme_is_case_insensitive(client):
    restocked = client.post(
        "/admin/products/1/restock", json={"units": 1}, headers={"authorization": f"bEARER {TOKEN}"}
    )
    assert restocked.status_code == 200, restocked.text


@pytest.mark.parametrize("configured", [None, "", "   "], ids=repr)
@pytest.mark.parametrize("authorization", [None, "Bearer ", "Bearer  ", f"Bearer {TOKEN}"], ids=repr)
def test_without_a_configured_token_the_admin_api_is_closed(
    settings_env, fresh_db, configured, authorization
):
    env = {**settings_env, **({} if configured is None else {"FLASHSALE_ADMIN_TOKEN": configured})}
    headers = {} if authorization is None else {"authorization": authorization}
    with TestClient(create_app(settings_from_env(env))) as closed:
        for method, path in _admin_requests(closed.app):
            off = closed.request(method, path, json={"name": "x", "units": 1}, headers=headers)
            assert off.status_code == 403, (method, path, off.text)
            assert off.json()["type"] == "urn:flashsale:problem:admin-disabled"
    assert product_state(fresh_db, 1)[0] == 100, "nothing was restocked"


def test_a_created_product_can_be_bought_and_followed(client):
    product = _new_product(client, per_customer_limit=3)
    assert (product["stock"], product["available"], product["sale"], product["price"]) == (
        5,
        5,
        "open",
        "49.50",
    )
    bought = client.post("/buy", json={"product_id": product["id"], "quantity": 2})
    assert bought.status_code == 202
    assert client.get(f"/products/{product['id']}").json()["available"] == 3


def test_a_restock_adds_units_bumps_the_version_and_reopens_a_sold_out_sale(client, fresh_db):
    product = _new_product(client, stock=1)
    assert client.post("/buy", json={"product_id": product["id"]}).status_code == 202
    assert client.post("/buy", json={"product_id": product["id"]}).status_code == 409
    _, version = product_state(fresh_db, product["id"])
    restocked = client.post(f"/admin/products/{product['id']}/restock", json={"units": 4}, headers=AUTH)
    assert restocked.status_code == 200, restocked.text
    # The database holds 5 units; one admitted order is not decided yet, so the gate offers 4.
    assert (restocked.json()["stock"], restocked.json()["available"]) == (5, 4)
    assert product_state(fresh_db, product["id"]) == (5, version + 1)
    assert client.post("/buy", json={"product_id": product["id"]}).status_code == 202


def test_before_the_sale_opens_and_after_it_closes_buy_says_so(client):
    upcoming = _new_product(client, sale_opens_at=_at(hours=1))
    early = client.post("/buy", json={"product_id": upcoming["id"]})
    assert early.status_code == 409 and early.json()["type"] == "urn:flashsale:problem:sale-not-open"
    assert 3500 <= int(early.headers["retry-after"]) <= 3600
    assert early.json()["opens_at"].startswith(upcoming["sale_opens_at"][:16])
    assert client.get(f"/products/{upcoming['id']}").json()["sale"] == "upcoming"

    over = _new_product(client, sale_opens_at=_at(hours=-2), sale_closes_at=_at(hours=-1))
    late = client.post("/buy", json={"product_id": over["id"]})
    assert late.status_code == 409 and late.json()["type"] == "urn:flashsale:problem:sale-closed"
    assert client.get(f"/products/{over['id']}").json()["sale"] == "closed"

    reopened = client.put(
        f"/admin/products/{over['id']}/sale", json={"sale_closes_at": _at(hours=1)}, headers=AUTH
    )
    assert reopened.status_code == 200 and reopened.json()["sale"] == "open"
    assert client.post("/buy", json={"product_id": over["id"]}).status_code == 202


def test_a_customer_cannot_buy_past_the_per_customer_limit(client):
    product = _new_product(client, stock=10, per_customer_limit=2)

    def buy(ip, quantity=1):
        return client.post(
            "/buy", json={"product_id": product["id"], "quantity": quantity}, headers={"x-forwarded-for": ip}
        )

    assert buy("203.0.113.5").status_code == 202
    too_many = buy("203.0.113.5", quantity=2)
    assert too_many.status_code == 409 and too_many.json()["type"] == "urn:flashsale:problem:purchase-limit"
    assert too_many.json()["remaining"] == 1
    assert buy("203.0.113.5").status_code == 202
    assert buy("203.0.113.5").status_code == 409
    assert client.get(f"/products/{product['id']}").json()["available"] == 8


@pytest.mark.parametrize(
    ("path", "method", "body", "status"),
    [
        ("/admin/products", "post", {"name": "", "stock": 1}, 400),
        ("/admin/products", "post", {"stock": 1}, 422),
        ("/admin/products", "post", {"name": "x", "price": "0.001"}, 422),
        ("/admin/products", "post", {"name": "x", "stock": -1}, 400),
        ("/admin/products", "post", {"name": "x", "price": "lots"}, 400),
        ("/admin/products", "post", {"name": "x", "sale_opens_at": "2026-12-01T09:00:00"}, 422),
        (
            "/admin/products",
            "post",
            {"name": "x", "sale_opens_at": _at(hours=2), "sale_closes_at": _at(hours=1)},
            422,
        ),
        ("/admin/products/999/restock", "post", {"units": 1}, 404),
        ("/admin/products/1/restock", "post", {"units": 0}, 400),
        ("/admin/products/999/sale", "put", {}, 404),
        ("/admin/products/1/sale", "put", {"per_customer_limit": 0}, 400),
    ],
)
def test_bad_admin_requests_are_problems(client, path, method, body, status):
    response = getattr(client, method)(path, json=body, headers=AUTH)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
