"""Where the benchmarks keep their figures.

Every run writes ``bench/results/<kind>-<time>.json`` (not in git: this machine's history). A
run with ``--publish`` (``make bench``) also writes ``docs/benchmarks/<kind>.json``, in git:
the results docs/performance.md's tables are rendered from (``python -m bench.report``).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from service.core.settings import REPO_ROOT

RESULTS = REPO_ROOT / "bench" / "results"
PUBLISHED = REPO_ROOT / "docs" / "benchmarks"


def machine() -> dict:
    """What the figures were measured on."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    ram_kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    return {
        "measured_at": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": models[0] if models else platform.processor(),
        "cores": os.cpu_count(),
        "ram_gib": round(ram_kib / 2**20, 1),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def save_json(kind: str, figures: dict, publish: bool = False) -> list[Path]:
    """Write ``figures`` to ``bench/results/<kind>-<local time>.json`` and, when ``publish``,
    to ``docs/benchmarks/<kind>.json``; say where, return the paths."""
    RESULTS.mkdir(exist_ok=True)
    paths = [RESULTS / f"{kind}-{time.strftime('%Y%m%dT%H%M%S')}.json"]
    if publish:
        PUBLISHED.mkdir(parents=True, exist_ok=True)
        paths.append(PUBLISHED / f"{kind}.json")
    for path in paths:
        path.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
        print(f"written: {shown(path)}")
    return paths


def shown(path: Path) -> str:
    """``path`` from the repository's root when it is inside it (links, messages)."""
    return path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else str(path)
