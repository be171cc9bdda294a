"""Admitting orders as ``POST /buy`` does: ``service.sale.admission.admit``, one lua/admit.lua call each."""

from __future__ import annotations

import asyncio

from service.core.settings import Settings
from service.limiter.identity import ClientIdentity
from service.sale.admission import Decision, admit
from service.sale.resources import close_resources, open_resources


def admit_orders(settings: Settings, count: int, quantity: int = 1, first_client: int = 0) -> list[str]:
    """``count`` orders of product 1 from different clients; all must be admitted. Returns their ids."""
    results = try_to_admit(settings, count, quantity, first_client)
    assert all(result.decision is Decision.ADMITTED for result in results), results
    return [result.order_id for result in results]


def try_to_admit(settings: Settings, count: int, quantity: int = 1, first_client: int = 0) -> list:
    """``count`` buyers of product 1, one after another; returns admit's answers."""

    async def run() -> list:
        resources = open_resources(settings)
        try:
            clients = [
                ClientIdentity(f"10.2.{n // 256 % 256}.{n % 256}", None, {}, "x-api-key")
                for n in range(first_client, first_client + count)
            ]
            return [await admit(resources, client, None, 1, quantity, None) for client in clients]
        finally:
            await close_resources(resources)

    return asyncio.run(run())
