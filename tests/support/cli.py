"""Running the ``flashsale`` command as its users do: a process of its own."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path


def run_cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``flashsale <args>`` with this environment; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@contextlib.contextmanager
def cli_running(
    env: dict[str, str], log: Path, *args: str, prefix: Sequence[str] = (), stop_timeout: float = 60
) -> Iterator[subprocess.Popen]:
    """``flashsale <args>`` in the background (after ``prefix``, e.g. a sandbox), its output
    appended to ``log``; its process group SIGTERMed and awaited at the end."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "service.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(stop_timeout)
