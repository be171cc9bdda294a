"""Following orders through the public API until they reach a terminal state."""

from __future__ import annotations

import httpx

from service.throwaway import wait_until

TERMINAL = {"confirmed", "rejected"}


def wait_all_terminal(url: str, order_ids: list[str], timeout: float = 60) -> dict[str, dict]:
    """Poll ``GET /orders/{id}`` until every order is confirmed or rejected; return the last views."""
    views: dict[str, dict] = {}
    pending = set(order_ids)
    with httpx.Client(base_url=url, timeout=10) as client:

        def all_terminal() -> bool:
            for order_id in list(pending):
                view = client.get(f"/orders/{order_id}").json()
                views[order_id] = view
                if view["status"] in TERMINAL:
                    pending.discard(order_id)
            return not pending

        wait_until(all_terminal, timeout, f"{len(pending)} orders to reach a terminal state", interval=0.2)
    return views
