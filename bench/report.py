"""The performance page's benchmark tables, rendered from the published results.

    python -m bench.report           # rewrite the tables in docs/performance.md (make bench ends with it)
    python -m bench.report --check   # exit 1 when they are not what the results render

docs/performance.md marks each table with ``<!-- bench:begin NAME ... -->`` and ``<!-- bench:end -->``:
between them go, for each NAME, what ``docs/benchmarks/<NAME>.json`` holds (written by
``python -m bench.<NAME> --publish``): the command, the machine, and every target with what was
measured, what the servers ran with and the verdict; then the PNGs published beside it. No
figure in those tables is typed by hand: tests/test_bench.py fails when they differ.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from bench.saved import PUBLISHED, shown
from bench.verdict import show, target_text, verdict_word
from service.core.settings import REPO_ROOT

PAGE = REPO_ROOT / "docs" / "performance.md"
NAME = "docs/performance.md"
BLOCK = re.compile(r"(<!-- bench:begin ([a-z_ ]+) -->\n)(.*?)(<!-- bench:end -->)", re.DOTALL)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _link(path: Path) -> str:
    """``path`` as a Markdown link from the page: relative to its folder when inside the repository."""
    return os.path.relpath(path, PAGE.parent) if path.is_relative_to(REPO_ROOT) else str(path)


def render_benchmark(name: str, published: Path = PUBLISHED) -> str:
    path = published / f"{name}.json"
    if not path.exists():
        return f"`python -m bench.{name}`: nothing published yet (`make bench` writes `{shown(path)}`).\n"
    saved = json.loads(path.read_text())
    m = saved["machine"]
    lines = [
        f"`{saved['command']}` on {m['measured_at']}: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB,"
        f" {m['kernel']}, Python {m['python']}, load {m['load_average_1m']} before"
        f" ([{path.name}]({_link(path)}))",
        "",
        "| target (issue) | run with | measured | verdict |",
        "|---|---|---|---|",
    ]
    for check in saved["checks"]:
        detail = f" ({check['detail']})" if check["detail"] else ""
        measured = f"**{show(check['measured'])}**{detail}"
        row = [target_text(check), check["where"], measured, verdict_word(check)]
        lines.append("| " + " | ".join(_cell(cell) for cell in row) + " |")
    for plot in sorted(published.glob(f"{name}-*.png")):
        lines += ["", f"![{name}, {plot.stem.removeprefix(name + '-')}]({_link(plot)})"]
    return "\n".join(lines) + "\n"


def render_page(page: str, published: Path = PUBLISHED) -> str:
    """``page`` with every bench block rendered anew."""

    def block(match: re.Match) -> str:
        tables = "\n".join(render_benchmark(name, published) for name in match[2].split())
        return f"{match[1]}{tables}{match[4]}"

    return BLOCK.sub(block, page)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help=f"change nothing; exit 1 when {NAME} differs")
    args = parser.parse_args(argv)
    page = PAGE.read_text()
    rendered = render_page(page)
    if rendered == page:
        print(f"{NAME}'s benchmark tables are what docs/benchmarks/ renders")
        return 0
    if args.check:
        print(f"{NAME}'s benchmark tables differ from docs/benchmarks/: run python -m bench.report")
        return 1
    PAGE.write_text(rendered)
    print(f"{NAME}: benchmark tables rendered from docs/benchmarks/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
