"""What every error answer of the API must be: an RFC 9457 problem, never a stack trace."""

from __future__ import annotations

PROBLEM = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:flashsale:problem:"


def assert_problem(response, status: int, slug: str | None = None) -> dict:
    """``response`` (httpx's) is a ``status`` problem, of type ``slug`` when given; its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["title"], body
    assert "Traceback" not in response.text
    if slug is not None:
        assert body["type"] == PROBLEM_TYPE_PREFIX + slug, body
    return body
