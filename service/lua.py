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
    "admit": (LIBRARY, "admit.lua"),
}
SCRIPT_NAMES = tuple(SCRIPT_SOURCES)


class Scripts:
    """Named, registered scripts for one Redis client (sync or asyncio)."""

    token_buckets: Script | AsyncScript
    admit: Script | AsyncScript


def load_scripts(client: Any, lua_dir: Path) -> Scripts:
    """Read every script once and bind it to ``client`` (EVALSHA, reloaded on NOSCRIPT)."""
    scripts = Scripts()
    for name, files in SCRIPT_SOURCES.items():
        source = "\n".join((lua_dir / file).read_text(encoding="utf-8") for file in files)
        setattr(scripts, name, client.register_script(source))
    return scripts
