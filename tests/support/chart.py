"""The Helm chart, rendered by Helm's own engine (helm-python-sdk embeds Helm's Go SDK).

helm-python-sdk is young: everything we use of it goes through this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

from service.core.settings import REPO_ROOT

CHART = REPO_ROOT / "charts" / "flashsale"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
RELEASE, NAMESPACE = "flashsale", "flashsale"


def values_of(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def render(values: dict[str, Any] | None = None, *, upgrade: bool = False) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would print it (NOTES.txt included)."""
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(
            values or {}, name=RELEASE, namespace=NAMESPACE, is_install=not upgrade, is_upgrade=upgrade
        )


def objects(values: dict[str, Any] | None = None, *, upgrade: bool = False) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders with these values."""
    found = []
    for path, text in render(values, upgrade=upgrade).items():
        if path.endswith(".yaml"):
            found += [doc for doc in yaml.safe_load_all(text) if doc]
    return found


def validate_values(values: dict[str, Any]) -> None:
    """Raise if ``values.schema.json`` rejects these values (merged over the defaults)."""
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)


def lint(values: dict[str, Any] | None = None) -> dict[str, Any]:
    return helm.lint(str(CHART), values or {}, strict=True, namespace=NAMESPACE)
