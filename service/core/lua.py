"""The one loader of ``lua/``: each script becomes a redis-py Script run with EVALSHA.

Redis scripts cannot import, so a script that uses the shared bucket functions is sent with
``buckets.lib.lua`` prepended; the pair is one script with one SHA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redis.commands.core import AsyncScript, Script

LIBRARY = "buckets.lib.lua"
SCRIPT_SOURCES = {
    "token_buckets": (LIBRARY, "token_buckets.lua"),
    "refund_buckets": (LIBRARY, "refund_buckets.lua"),
    "admit": (LIBRARY, "admit.lua"),
    "settle": ("settle.lua",),
}
SCRIPT_NAMES = tuple(SCRIPT_SOURCES)


class Scripts:
    """Named, registered scripts for one Redis client (sync or asyncio)."""

    token_buckets: Script | AsyncScript
    refund_buckets: Script | AsyncScript
    admit: Script | AsyncScript
    settle: Script | AsyncScript


def script_source(name: str, lua_dir: Path) -> str:
    """The full text Redis runs for ``name``: its library first, then the script."""
    return "\n".join((lua_dir / file).read_text(encoding="utf-8") for file in SCRIPT_SOURCES[name])


def load_scripts(client: Any, lua_dir: Path) -> Scripts:
    """Read every script once and bind it to ``client`` (EVALSHA, reloaded on NOSCRIPT)."""
    scripts = Scripts()
    for name in SCRIPT_SOURCES:
        setattr(scripts, name, client.register_script(script_source(name, lua_dir)))
    return scripts
