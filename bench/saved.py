"""Where the benchmarks keep their figures: ``bench/results/<kind>-<time>.json`` (not in git)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from service.settings import REPO_ROOT

RESULTS = REPO_ROOT / "bench" / "results"


def save_json(kind: str, figures: dict) -> Path:
    """Write ``figures`` as ``bench/results/<kind>-<local time>.json``, say where, return the path."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{kind}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(figures, indent=2))
    print(f"written: {out.relative_to(REPO_ROOT)}")
    return out
