"""One target for the whole session (E2E_TARGET=local|kind); its diagnostics on failure."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from e2e.targets import Target, open_target

KIND_TEST_TIMEOUT = 900
"""A cluster scales in minutes; pyproject's 300 s per test is for the local suite."""

ON_KIND = os.environ.get("E2E_TARGET", "local") == "kind"

# What only a cluster has (NetworkPolicies and a CNI enforcing them) is tested on kind alone;
# for the local target those modules are not even collected.
collect_ignore = [] if ON_KIND else ["test_network_policy.py"]


def pytest_collection_modifyitems(items) -> None:
    if ON_KIND:
        for item in items:
            item.add_marker(pytest.mark.timeout(KIND_TEST_TIMEOUT))


@pytest.fixture(scope="session")
def target() -> Iterator[Target]:
    opened = open_target()
    try:
        yield opened
    finally:
        opened.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed and "target" in item.funcargs:
        report.sections.append(("target diagnostics", item.funcargs["target"].diagnostics()))
    return report
