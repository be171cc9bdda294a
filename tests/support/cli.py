"""Running the ``flashsale`` command as its users do: a process of its own."""

from __future__ import annotations

import subprocess
import sys


def run_cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``flashsale <args>`` with this environment; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
