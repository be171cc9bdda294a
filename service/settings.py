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

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/flashsale"

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
    trusted_proxies: tuple[IPNetwork, ...] = ()
    """Peers whose ``X-Forwarded-For`` is believed."""
    admin_token: str | None = None
    cors_origins: tuple[str, ...] = ()
    host: str = "0.0.0.0"
    port: int = 8000
    log_level: str = "INFO"
    job_timeout_seconds: int = 10
    """Longest one order job may run; a worker silent for longer is presumed dead."""
    worker_maintenance_interval: int = 5
    """Seconds between a worker's sweeps for jobs abandoned by dead workers."""
    lua_dir: Path = REPO_ROOT / "lua"

    def __repr__(self) -> str:  # never print the admin token or URL passwords
        return f"Settings(redis={redact_url(self.redis_url)}, database={redact_url(self.database_url)})"


def redact_url(url: str) -> str:
    """The URL with any password replaced, fit for logs."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be a whole number of at least 1")
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


def _networks(raw: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in _csv(raw))


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _redis_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return raw


def _database_url(raw: str) -> str:
    if raw.startswith("postgres://"):
        raw = "postgresql://" + raw.removeprefix("postgres://")
    if raw.startswith("postgresql://"):
        raw = "postgresql+psycopg2://" + raw.removeprefix("postgresql://")
    if not raw.startswith("postgresql+psycopg2://"):
        raise ValueError("must be a postgresql:// URL")
    return raw


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
    return level


def _directory(raw: str) -> Path:
    path = Path(raw)
    if not path.is_dir():
        raise ValueError("must be an existing directory")
    return path


# field name -> parser of the raw environment string
_PARSERS: dict[str, Callable[[str], Any]] = {
    "redis_url": _redis_url,
    "limiter_redis_url": _redis_url,
    "database_url": _database_url,
    "rate_capacity": _positive_int,
    "rate_refill_per_sec": _positive_float,
    "trusted_proxies": _networks,
    "admin_token": str,
    "cors_origins": _csv,
    "host": str,
    "port": _port,
    "log_level": _log_level,
    "job_timeout_seconds": _positive_int,
    "worker_maintenance_interval": _positive_int,
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
    if problems:
        raise SettingsError("invalid configuration: " + "; ".join(problems))
    if "limiter_redis_url" not in values and "redis_url" in values:
        values["limiter_redis_url"] = values["redis_url"]
    return Settings(**values)


@cache
def get_settings() -> Settings:
    """The process's settings, parsed on first use."""
    return settings_from_env()
