"""The ``flashsale`` console script: api | worker | migrate | seed | reconcile | orders | check | dev."""

from __future__ import annotations

import argparse
import logging
import sys

from service.core.settings import Settings, SettingsError, get_settings

log = logging.getLogger("flashsale")


def _api(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from service.api.http_server import GuardedHttpToolsProtocol

    uvicorn.run(
        "service.api.app:serve_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        # Our code resolves the client from the header the trusted proxies write
        # (FLASHSALE_TRUSTED_PROXIES, FLASHSALE_CLIENT_IP_HEADER); uvicorn's own handling would
        # trust any loopback peer's X-Forwarded-For.
        proxy_headers=False,
        http=GuardedHttpToolsProtocol,  # slow, oversized and unparsable requests: see there
        access_log=False,
        log_config=None,
        timeout_keep_alive=settings.keep_alive_seconds,  # type: ignore[arg-type]  # a float works
        timeout_graceful_shutdown=args.shutdown_timeout,
        workers=args.processes,
    )
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from worker.runner import run_worker

    run_worker(settings, name=args.name, burst=args.burst)
    return 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from db.migrate import migrate

    migrate(settings.database_url, wait_seconds=args.wait)
    log.info("database is at the latest migration")
    return 0


def _seed(settings: Settings, args: argparse.Namespace) -> int:
    from db.session import make_engine
    from service.core.redis_clients import sync_redis
    from service.sale.stock_gate import seed

    engine = make_engine(settings.database_url, pool_size=1)
    with sync_redis(settings.redis_url) as redis:
        product = seed(engine, redis, args.stock)
    engine.dispose()
    log.info("seeded demo product", extra={"product_id": product.id, "stock": product.stock})
    return 0


def _reconcile(settings: Settings, args: argparse.Namespace) -> int:
    from db.session import make_engine
    from service.core.redis_clients import sync_redis
    from service.sale.reconcile import reconcile

    engine = make_engine(settings.database_url, pool_size=1)
    with sync_redis(settings.redis_url) as redis:
        repairs = reconcile(redis, engine)
    engine.dispose()
    for repair in repairs:
        print(f"product {repair.product_id}: gate {repair.gate_before} -> {repair.gate_after}")
    print(f"{len(repairs)} gate(s) repaired", file=sys.stderr)
    return 0


def _orders_failed(settings: Settings, args: argparse.Namespace) -> int:
    from service.core.redis_clients import sync_redis
    from worker.dead_letters import failed_orders

    with sync_redis(settings.redis_url) as redis:
        letters = failed_orders(redis)
    for letter in letters:
        print(
            f"{letter.order_id}  product {letter.product_id}  x{letter.quantity}",
            letter.ended_at,
            letter.error,
        )
    print(f"{len(letters)} failed order(s)", file=sys.stderr)
    return 0


def _orders_requeue(settings: Settings, args: argparse.Namespace) -> int:
    from service.core.redis_clients import sync_redis
    from worker.dead_letters import requeue_orders

    if not args.all and not args.order_ids:
        print("flashsale: name order ids to requeue, or --all", file=sys.stderr)
        return 2
    with sync_redis(settings.redis_url) as redis:
        count = requeue_orders(redis, None if args.all else args.order_ids)
    print(f"requeued {count} order(s)", file=sys.stderr)
    return 0


def _check(settings: Settings, args: argparse.Namespace) -> int:
    from service.cli import checks

    if args.what == "worker":
        max_silence = args.max_silence or checks.worker_max_silence(settings)
        problem = checks.check_worker(settings.worker_heartbeat_file, max_silence)
    else:
        url = (args.url or f"http://127.0.0.1:{settings.port}").rstrip("/")
        problem = checks.check_ready(url) if args.what == "ready" else checks.check_demo(url)
    if problem:
        print(f"flashsale check {args.what}: {problem}", file=sys.stderr)
        return 1
    print(f"flashsale check {args.what}: ok")
    return 0


def _dev(settings: Settings, args: argparse.Namespace) -> int:
    from service.cli.dev import run_dev

    return run_dev(settings, port=args.port or settings.port, workers=args.workers, stock=args.stock)


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _non_negative(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flashsale", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    api = commands.add_parser("api", help="serve the HTTP API (uvicorn, one process)")
    api.add_argument("--host", help="listen address (default FLASHSALE_HOST or 0.0.0.0)")
    api.add_argument("--port", type=int, help="listen port (default FLASHSALE_PORT or 8000)")
    api.add_argument(
        "--processes",
        type=_positive,
        default=1,
        help="uvicorn worker processes sharing the port (default 1; on Kubernetes, scale pods)",
    )
    api.add_argument(
        "--shutdown-timeout",
        type=_non_negative,
        default=10,
        help="seconds in-flight requests may take to finish after SIGTERM (default 10)",
    )
    api.set_defaults(run=_api)

    worker = commands.add_parser("worker", help="apply queued orders to PostgreSQL (RQ worker)")
    worker.add_argument("--name", help="worker name shown by RQ (e.g. the pod name)")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.set_defaults(run=_worker)

    migrate = commands.add_parser("migrate", help="create the database if missing and upgrade it")
    migrate.add_argument("--wait", type=float, default=60.0, help="seconds to wait for PostgreSQL")
    migrate.set_defaults(run=_migrate)

    seed = commands.add_parser("seed", help="create the demo product (id 1, stock 100)")
    seed.add_argument("--stock", type=_non_negative, help="reset the demo product's stock to N")
    seed.set_defaults(run=_seed)

    reconcile = commands.add_parser("reconcile", help="repair stock gates from the database and the queue")
    reconcile.set_defaults(run=_reconcile)

    orders = commands.add_parser("orders", help="dead letters: undecided orders whose draining job gave up")
    order_commands = orders.add_subparsers(dest="orders_command", required=True)
    failed = order_commands.add_parser(
        "failed", help="list undecided orders whose draining job failed every retry"
    )
    failed.set_defaults(run=_orders_failed)
    requeue = order_commands.add_parser("requeue", help="run dead letters again")
    requeue.add_argument("order_ids", nargs="*", help="order ids whose draining jobs to requeue")
    requeue.add_argument("--all", action="store_true", help="requeue every dead letter")
    requeue.set_defaults(run=_orders_requeue)

    check = commands.add_parser("check", help="probes and smoke tests: ready | demo | worker")
    check.add_argument(
        "what",
        choices=["ready", "demo", "worker"],
        help="ready: /readyz is 200; demo: 10 buys give 202s then 429s; worker: recent heartbeat",
    )
    check.add_argument("--url", help="API base URL (default http://127.0.0.1:FLASHSALE_PORT)")
    check.add_argument("--max-silence", type=float, help="worker: seconds without a heartbeat that fail")
    check.set_defaults(run=_check)

    dev = commands.add_parser("dev", help="run everything on this machine (what `make run` runs)")
    dev.add_argument("--port", type=int, help="API port (default FLASHSALE_PORT or 8000)")
    dev.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    dev.add_argument("--stock", type=_non_negative, help="reset the demo product's stock to N")
    dev.set_defaults(run=_dev)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from service.core.tracing import TracingError, chosen_exporter

    try:
        settings = get_settings()
        chosen_exporter()
    except (SettingsError, TracingError) as exc:
        print(f"flashsale: {exc}", file=sys.stderr)
        return 2
    from service.core.logs import configure_logging

    configure_logging(settings.log_level)
    try:
        return args.run(settings, args)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # a clear one-line reason, not a traceback, for start-up failures
        from db.migrate import DatabaseUnavailable
        from service.cli.dev_servers import MissingServerBinary
        from service.core.redis_clients import EvictingRedis

        if isinstance(exc, DatabaseUnavailable | MissingServerBinary | EvictingRedis):
            log.error(str(exc))
            return 1
        raise
