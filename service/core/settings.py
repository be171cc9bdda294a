"""One settings object, read once from the ``FLASHSALE_*`` environment.

Every field has a default that works on a laptop; a bad value stops the process at start
with a message naming the variable, never later with a stack trace.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import msgspec

from db.session import DEFAULT_DATABASE_URL, psycopg2_url
from service.core.keys import MAX_DRAIN_LANES
from service.core.policies import (
    DEFAULT_IPV6_PREFIX,
    Policies,
    PolicyError,
    default_policies,
    in_shadow,
    load_policy_file,
    parse_policies,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_JOB_RETRY_BACKOFF_SECONDS = (0, 1, 2, 5, 10, 30, 60)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(ValueError):
    """A ``FLASHSALE_*`` variable holds a value we cannot use."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    redis_url: str = DEFAULT_REDIS_URL
    """Main Redis: stock gate and the RQ queue (never a Redis Cluster)."""
    limiter_redis_url: str = DEFAULT_REDIS_URL
    """Redis holding the token buckets; defaults to the main Redis."""
    database_url: str = DEFAULT_DATABASE_URL
    rate_capacity: int = 5
    """Burst size of each client's token bucket for ``POST /buy``."""
    rate_refill_per_sec: float = 1.0
    rate_policies: str | None = None
    """JSON policy document (see service/core/policies.py); overrides capacity and refill."""
    rate_policy_file: Path | None = None
    """A JSON or TOML policy file (e.g. a mounted ConfigMap); wins over ``rate_policies``. Watched:
    each API process applies a changed file within seconds (service/limiter/policy_watch.py)."""
    rate_shadow: bool = False
    """Every limit in shadow: checked and charged, never denying (counted ``shadow_limited``)."""
    rate_clock: str = "redis"
    """``redis``: buckets use Redis TIME; ``app``: the API's clock, bounded by Redis's expiry clock."""
    rate_legacy_headers: bool = False
    """Also send X-RateLimit-Limit/-Remaining/-Reset for old clients."""
    trusted_proxies: tuple[IPNetwork, ...] = ()
    """Peers whose client header (``client_ip_header``) is believed."""
    client_ip_header: str = "x-forwarded-for"
    """The header the trusted proxies write the client into: ``x-forwarded-for`` or ``forwarded``
    (RFC 7239). Only that one is read: a proxy passes on whatever a client put in the other."""
    rate_ipv6_prefix: int = DEFAULT_IPV6_PREFIX
    """IPv6 clients are counted by their network of this many bits (a home line gets a /64 or a
    /56); 128 counts single addresses. IPv4 addresses, IPv4-mapped ones too, are counted alone."""
    customer_id_header: str | None = None
    """Header naming the customer, set by the auth gateway; believed only from trusted proxies."""
    api_key_header: str = "x-api-key"
    limiter_redis_cluster: bool = False
    """The limiter Redis is a Redis Cluster (the main Redis never can be: RQ needs one node)."""
    limiter_timeout_ms: int = 1000
    """Longest the API waits for one limiter decision before treating Redis as failed. Keep it
    above the API's own p99 under load: an overloaded event loop resumes a request late even
    when Redis answered at once, and that must not count as a Redis failure."""
    limiter_breaker_failures: int = 5
    """Consecutive limiter failures that open the circuit breaker."""
    limiter_breaker_cooldown_ms: int = 2000
    """How long an open breaker answers without Redis before one request probes it again."""
    limiter_deny_cache: bool = True
    """Answer 429 locally, without Redis, while a bucket is known to be empty."""
    admin_token: str | None = None
    request_timeout_seconds: float = 10.0
    """Longest a client may take to send a whole request, headers and body; a slower one is
    answered 408 and its connection closed (a slowloris holds nothing for long)."""
    keep_alive_seconds: float = 100.0
    """How long an idle keep-alive connection stays open. Longer than the proxy in front keeps
    its idle upstream connections (Traefik 90 s, ingress-nginx 60 s, AWS ALB 60 s), so the proxy
    always closes first: a server closing one just as the proxy sends a request on it is a 502
    for a ``POST /buy`` the proxy may not replay."""
    cors_origins: tuple[str, ...] = ()
    host: str = "0.0.0.0"
    port: int = 8000
    log_level: str = "INFO"
    log_format: str = "auto"
    """``json``, ``console`` (a person's lines, coloured on a terminal unless ``NO_COLOR``), or
    ``auto``: console when stderr is a terminal, else JSON (pods have none: JSON)."""
    request_log_level: str = "DEBUG"
    """Level of the one line each request writes (below FLASHSALE_LOG_LEVEL: not written, so
    by default a sale's hot path formats no line per request)."""
    job_timeout_seconds: int = 10
    """Longest one draining job may run (it hands the rest of its lane's orders to a new job
    after half of it); a worker silent for longer is presumed dead."""
    job_retry_backoff_seconds: tuple[int, ...] = DEFAULT_JOB_RETRY_BACKOFF_SECONDS
    """Waits before each retry of a failed draining job (each drawn from 50-150 % of itself), one
    retry per wait; then the batch in hand is rejected as failed, or, when PostgreSQL cannot take
    that, the product's orders wait undecided behind a dead letter (worker/dead_letters.py)."""
    worker_maintenance_interval: int = 5
    """Seconds between a worker's sweeps for jobs abandoned by dead workers."""
    reconcile_interval_seconds: int = 30
    """Seconds between reconciler passes over the stock gates (one worker at a time)."""
    worker_batch_size: int = 1024
    """Most orders of one product a worker applies in one transaction."""
    drain_lanes: int = 4
    """Lanes a product's admitted orders are split over, each drained by its own job: how many
    workers can apply one hot product side by side (at most MAX_DRAIN_LANES)."""
    worker_metrics_port: int | None = None
    """Where a worker serves its Prometheus /metrics; unset, it serves none."""
    worker_heartbeat_file: Path | None = None
    """A file the worker touches on every turn of its loop, for ``flashsale check worker``
    (a liveness probe that does not depend on Redis)."""
    lua_dir: Path = REPO_ROOT / "lua"
    policies: Policies = msgspec.field(default_factory=lambda: default_policies(5, 1.0))
    """Parsed from the fields above at start; not a variable of its own."""

    def __repr__(self) -> str:  # never print the admin token or URL passwords
        return f"Settings(redis={redact_url(self.redis_url)}, database={redact_url(self.database_url)})"


def redact_url(url: str) -> str:
    """The URL with any password replaced, fit for logs: in its credentials and in a
    ``password=`` query parameter (which libpq and redis-py both accept)."""
    scheme, sep, rest = url.partition("://")
    rest, question, query = rest.partition("?")
    credentials, at, host = rest.rpartition("@")
    if at and ":" in credentials:
        rest = f"{credentials.split(':', 1)[0]}:***@{host}"
    if question:
        pairs = (pair.partition("=") for pair in query.split("&"))
        query = "&".join(
            f"{name}{eq}***" if name.lower() == "password" and eq else f"{name}{eq}{value}"
            for name, eq, value in pairs
        )
    return f"{scheme}{sep}{rest}{question}{query}"


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be a whole number of at least 1")
    return value


def _drain_lanes(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= MAX_DRAIN_LANES:
        raise ValueError(f"must be a whole number from 1 to {MAX_DRAIN_LANES}")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a number greater than 0")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 < value < 65536:
        raise ValueError("must be a TCP port between 1 and 65535")
    return value


def _ipv6_prefix(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 128):
        raise ValueError(
            "must be an IPv6 prefix length, a whole number from 1 to 128 (128: single addresses)"
        )
    return int(raw)


def _client_ip_header(raw: str) -> str:
    header = raw.lower()
    if header not in {"x-forwarded-for", "forwarded"}:
        raise ValueError("must be x-forwarded-for or forwarded")
    return header


def _retry_waits(raw: str) -> tuple[int, ...]:
    waits = [part.strip() for part in raw.split(",")]
    if not all(wait.isascii() and wait.isdigit() for wait in waits):  # "" too: no empty wait
        raise ValueError("must be comma-separated whole numbers of seconds (0 or more), at least one")
    return tuple(int(wait) for wait in waits)


def _networks(raw: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in _csv(raw))


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _redis_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return raw


def _boolean(raw: str) -> bool:
    value = raw.lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def _rate_clock(raw: str) -> str:
    if raw not in {"redis", "app"}:
        raise ValueError("must be redis or app")
    return raw


def _header_name(raw: str) -> str:
    if not raw.replace("-", "").replace("_", "").isalnum():
        raise ValueError("must be an HTTP header name")
    return raw.lower()


def _file(raw: str) -> Path:
    path = Path(raw)
    if not path.is_file():
        raise ValueError("must name an existing file")
    return path


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
    return level


def _log_format(raw: str) -> str:
    value = raw.lower()
    if value not in {"auto", "json", "console"}:
        raise ValueError("must be auto, json or console")
    return value


def _directory(raw: str) -> Path:
    path = Path(raw)
    if not path.is_dir():
        raise ValueError("must be an existing directory")
    return path


# field name -> parser of the raw environment string
_PARSERS: dict[str, Callable[[str], Any]] = {
    "redis_url": _redis_url,
    "limiter_redis_url": _redis_url,
    "database_url": psycopg2_url,
    "rate_capacity": _positive_int,
    "rate_refill_per_sec": _positive_float,
    "rate_policies": str,
    "rate_policy_file": _file,
    "rate_shadow": _boolean,
    "rate_clock": _rate_clock,
    "rate_legacy_headers": _boolean,
    "trusted_proxies": _networks,
    "client_ip_header": _client_ip_header,
    "rate_ipv6_prefix": _ipv6_prefix,
    "customer_id_header": _header_name,
    "api_key_header": _header_name,
    "limiter_redis_cluster": _boolean,
    "limiter_timeout_ms": _positive_int,
    "limiter_breaker_failures": _positive_int,
    "limiter_breaker_cooldown_ms": _positive_int,
    "limiter_deny_cache": _boolean,
    "admin_token": str,
    "request_timeout_seconds": _positive_float,
    "keep_alive_seconds": _positive_float,
    "cors_origins": _csv,
    "host": str,
    "port": _port,
    "log_level": _log_level,
    "log_format": _log_format,
    "request_log_level": _log_level,
    "job_timeout_seconds": _positive_int,
    "job_retry_backoff_seconds": _retry_waits,
    "worker_maintenance_interval": _positive_int,
    "reconcile_interval_seconds": _positive_int,
    "worker_batch_size": _positive_int,
    "drain_lanes": _drain_lanes,
    "worker_metrics_port": _port,
    "worker_heartbeat_file": Path,
    "lua_dir": _directory,
}


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse every ``FLASHSALE_*`` variable; raise :class:`SettingsError` naming each bad one."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for field, parse in _PARSERS.items():
        name = f"FLASHSALE_{field.upper()}"
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        try:
            values[field] = parse(raw)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    if not problems:
        try:
            values["policies"] = _policies(values)
        except PolicyError as exc:
            source = (
                "FLASHSALE_RATE_POLICY_FILE" if "rate_policy_file" in values else "FLASHSALE_RATE_POLICIES"
            )
            problems.append(f"{source}: {exc}")
    if problems:
        raise SettingsError("invalid configuration: " + "; ".join(problems))
    if "limiter_redis_url" not in values and "redis_url" in values:
        values["limiter_redis_url"] = values["redis_url"]
    return Settings(**values)


def _policies(values: dict[str, Any]) -> Policies:
    prefix = values.get("rate_ipv6_prefix", DEFAULT_IPV6_PREFIX)
    if "rate_policy_file" in values:
        policies = load_policy_file(values["rate_policy_file"], ipv6_prefix=prefix)
    elif "rate_policies" in values:
        policies = parse_policies(values["rate_policies"], ipv6_prefix=prefix)
    else:
        policies = default_policies(values.get("rate_capacity", 5), values.get("rate_refill_per_sec", 1.0))
    return in_shadow(policies) if values.get("rate_shadow") else policies


@cache
def get_settings() -> Settings:
    """The process's settings, parsed on first use."""
    return settings_from_env()
