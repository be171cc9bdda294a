"""A benchmark's targets, judged in one place.

Each benchmark names its targets once (its ``TARGETS``), hands every figure it measured to
``Verdict.check``, and ends with ``Verdict.finish``: the table of target, measured value and
met/missed is printed, saved with the figures and the machine (``bench/saved.py``), and the
exit code is 1 when a target was missed. A figure with no target (``bound`` None) is only
reported. ``--target KEY=LIMIT`` holds a run to another limit (a stricter issue's, or an
impossible one to see the benchmark fail).
"""

from __future__ import annotations

import argparse
import dataclasses
import operator
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.saved import machine, save_json

AT_LEAST, AT_MOST, EXACTLY = "≥", "≤", "="
_HOLDS = {AT_LEAST: operator.ge, AT_MOST: operator.le, EXACTLY: operator.eq}


def show(value: float) -> str:
    """A figure as the table shows it; benchmarks round what they measure to what they mean,
    so what is shown is what was judged."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}"


@dataclass(frozen=True)
class Target:
    key: str
    """What ``--target`` and the saved checks call it."""
    what: str
    bound: str | None = None
    """AT_LEAST, AT_MOST or EXACTLY; None: a figure reported, with no target."""
    limit: float = 0
    source: str = ""
    """Where the target was set (an issue, ``#7``)."""

    def wanted(self) -> str:
        return f"{self.bound} {show(self.limit)}" if self.bound else ""


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="KEY=LIMIT",
        help="judge this run against another limit (the keys are the benchmark's TARGETS)",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also write docs/benchmarks/<name>.json, the results docs/performance.md quotes (make bench)",
    )


class Verdict:
    def __init__(self, benchmark: str, targets: Iterable[Target], overrides: Iterable[str] = ()) -> None:
        self.benchmark = benchmark
        self.targets = {target.key: target for target in targets}
        for override in overrides:
            key, _, limit = override.partition("=")
            if key not in self.targets or self.targets[key].bound is None:
                known = ", ".join(k for k, t in self.targets.items() if t.bound)
                raise SystemExit(f"--target {override}: {self.benchmark} has no target {key!r} ({known})")
            self.targets[key] = dataclasses.replace(self.targets[key], limit=float(limit))
        self.machine = machine()  # before the load: the load average says how quiet it was
        self.checks: list[dict] = []
        self.saved: list[Path] = []
        """Where ``finish`` wrote the results (a plot goes beside them)."""

    def check(self, key: str, measured: float, where: str, detail: str = "") -> None:
        """Judge ``measured`` against the target ``key``; ``where`` says what it ran with
        (the durability), ``detail`` the figures behind it."""
        target = self.targets[key]
        met = None if target.bound is None else _HOLDS[target.bound](measured, target.limit)
        self.checks.append(
            {
                "target": key,
                "what": target.what,
                "wanted": target.wanted(),
                "source": target.source,
                "where": where,
                "measured": measured,
                "detail": detail,
                "met": met,
            }
        )

    def missed(self) -> list[dict]:
        return [check for check in self.checks if check["met"] is False]

    def finish(self, figures: dict, publish: bool) -> int:
        """Print the table, save it with ``figures``; 1 when a target was missed."""
        print(f"\n{self.benchmark}: {len(self.checks)} figures, {len(self.missed())} targets missed")
        for check in self.checks:
            print(
                f"  {verdict_word(check):<8} {target_text(check):<72} {show(check['measured']):>10}"
                f"  {check['detail']}  [{check['where']}]"
            )
        command = " ".join(["python", "-m", f"bench.{self.benchmark}", *sys.argv[1:]])
        saved = {"benchmark": self.benchmark, "command": command, "machine": self.machine}
        self.saved = save_json(self.benchmark, {**saved, "checks": self.checks, "figures": figures}, publish)
        return 1 if self.missed() else 0


def verdict_word(check: dict) -> str:
    return {True: "met", False: "MISSED", None: "reported"}[check["met"]]


def target_text(check: dict) -> str:
    source = f" ({check['source']})" if check["source"] else ""
    return f"{check['what']} {check['wanted']}".rstrip() + source
