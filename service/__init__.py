"""flashsale: flash sales and API rate limiting on Redis, RQ and PostgreSQL.

One room per concern (``tests/test_layout.py`` holds every rule below):

* ``service.api`` — the web: everything that imports Litestar, and nothing else does.
* ``service.sale`` — what ``POST /buy`` decides (plain data in, domain refusals out), admission,
  the stock gate, the sold-out latch, the order-job format the API writes and workers read.
* ``service.limiter`` — token buckets, deny cache, circuit breaker, client addresses.
* ``service.core`` — settings, the one Redis client factory, the Redis key names, the Lua
  loader, tracing, logs, metrics.
* ``service.cli`` — the ``flashsale`` console script, ``flashsale dev`` and its servers, checks.
"""
