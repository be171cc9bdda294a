"""The app's lifespan: the shared clients (``service.sale.resources``) and the background
loops of an API process, started before the first request and stopped after the last."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from opentelemetry.instrumentation.utils import suppress_instrumentation
from redis.exceptions import RedisError

from service.api.dashboard import DashboardFeed, close_on_shutdown_signal
from service.core.redis_clients import check_no_eviction_async
from service.core.settings import Settings
from service.limiter.operations import follow_limit_resets
from service.limiter.policy_watch import PolicyWatcher, watch_policies
from service.sale.latches import follow_gate_changes
from service.sale.queue_gauges import sample_queue
from service.sale.resources import Resources, close_resources, open_resources
from service.sale.stats import OUTCOME_COUNTS, flush_forever

TASKS_STOP_SECONDS = 5.0
"""How long shutdown waits for the background loops to end once cancelled."""


def resources_lifespan(settings: Settings):
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        resources = open_resources(settings)
        app.state.resources = resources
        # Snapshots shared by this process's open dashboards.
        dashboard = app.state.dashboard = DashboardFeed(resources)
        queue = resources.queue
        # Start-up checks and background loops are not requests: no traces of their own (the
        # tasks inherit this context).
        with suppress_instrumentation():
            await check_no_eviction_async(resources.redis)
            tasks = [
                asyncio.create_task(
                    follow_gate_changes(resources.redis, resources.sold_out, resources.not_open)
                ),
                asyncio.create_task(sample_queue(resources.redis, queue)),
                asyncio.create_task(flush_forever(resources.redis)),
                asyncio.create_task(follow_limit_resets(resources.redis, resources.limiter)),
            ]
            if settings.rate_policy_file is not None:
                watcher = PolicyWatcher(settings.rate_policy_file, resources.limiter, settings.rate_shadow)
                tasks.append(asyncio.create_task(watch_policies(watcher)))
        restore_signals = close_on_shutdown_signal(dashboard)
        # Everything built so far lives as long as the process: out of the collector's sight,
        # so full collections under load do not walk the whole framework again and again.
        gc.freeze()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            # They unwind (a pub/sub unsubscribes, its connection goes back) while their Redis
            # client is still open; closing it under them could leave one waiting for ever.
            await asyncio.wait(tasks, timeout=TASKS_STOP_SECONDS)
            restore_signals()
            dashboard.close()
            # The last second's /buy outcomes still reach the dashboards of the other pods.
            with contextlib.suppress(RedisError, OSError):
                await OUTCOME_COUNTS.flush(resources.redis)
            # Stop answering ready first, so a load balancer drains us before clients go.
            resources.ready = False
            await close_resources(resources)

    return lifespan


def provide_resources(state: State) -> Resources:
    return state.resources


def provide_dashboard(state: State) -> DashboardFeed:
    return state.dashboard
