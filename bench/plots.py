"""PNG plots of benchmark results (matplotlib, the ``bench`` extra)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt

from bench.system import run_with

OUTCOME_COLOURS = {
    "admitted": "#2e7d32",
    "replayed": "#66bb6a",
    "limited": "#f9a825",
    "sold_out": "#1565c0",
    "refused": "#8e24aa",
    "failed": "#c62828",
}


def plot_drop(result: dict, path: Path) -> None:
    """Throughput by outcome per second (the API's own counts) above the probe's latency."""
    figure, (answers, latency) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    seconds = [row["second"] for row in result["per_second"]]
    for outcome, colour in OUTCOME_COLOURS.items():
        counts = [row[outcome] for row in result["per_second"]]
        if any(counts):
            answers.plot(seconds, counts, label=outcome, color=colour)
    answers.set_ylabel("answers / s")
    answers.set_title(
        f"{result['requests']:,} requests, {result['requests_per_second']:,.0f}/s; "
        f"{result['orders'].get('confirmed', 0):,} confirmed; p99 {result['p99_ms']:.1f} ms (wrk); "
        f"{run_with(result['durability'])}"
    )
    answers.legend(loc="upper right")
    answers.grid(alpha=0.3)
    at = [t for t, _, _ in result["probe"]]
    latency.scatter(at, [ms for _, ms, _ in result["probe"]], s=6, color="#455a64", label="probe request")
    latency.axhline(result["p99_ms"], color="#c62828", linestyle="--", label="p99 of all requests (wrk)")
    latency.set_xlabel("seconds since the sale opened")
    latency.set_ylabel("latency ms")
    latency.legend(loc="upper right")
    latency.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
