"""The one loader of ``lua/*.lua``: each file becomes a redis-py Script run with EVALSHA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redis.commands.core import AsyncScript, Script

SCRIPT_NAMES = ("token_buckets", "reserve_stock")


class Scripts:
    """Named, registered scripts for one Redis client (sync or asyncio)."""

    def __init__(self, client: Any, lua_dir: Path) -> None:
        for name in SCRIPT_NAMES:
            source = (lua_dir / f"{name}.lua").read_text(encoding="utf-8")
            # register_script runs EVALSHA and reloads the script on NOSCRIPT.
            setattr(self, name, client.register_script(source))

    token_buckets: Script | AsyncScript
    reserve_stock: Script | AsyncScript


def load_scripts(client: Any, lua_dir: Path) -> Scripts:
    """Read every script once and bind it to ``client``."""
    return Scripts(client, lua_dir)
