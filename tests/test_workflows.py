"""What cannot run here (GitHub Actions, skaffold) is at least well-formed and points at real files."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.settings import REPO_ROOT

WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.yml"))


def test_the_ci_and_e2e_workflows_exist():
    assert {path.name for path in WORKFLOWS} >= {"ci.yml", "e2e.yml"}


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_workflow_matches_githubs_schema(workflow):
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [checker, "--builtin-schema", "vendor.github-workflows", str(workflow)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_skaffold_builds_our_image_and_deploys_our_chart_with_existing_values():
    config = yaml.safe_load((REPO_ROOT / "skaffold.yaml").read_text())
    assert config["apiVersion"] == "skaffold/v4beta14"
    (artifact,) = config["build"]["artifacts"]
    assert (REPO_ROOT / artifact["docker"]["dockerfile"]).exists()
    (release,) = config["deploy"]["helm"]["releases"]
    assert (REPO_ROOT / release["chartPath"] / "Chart.yaml").exists()
    # The built image reaches the chart through the artifact's name (skaffold's template keys).
    assert release["setValueTemplates"]["image.repository"] == f"{{{{.IMAGE_REPO_{artifact['image']}}}}}"
    for profile in config["profiles"]:
        for patch in profile["patches"]:
            if patch["path"].endswith("valuesFiles"):
                assert all((REPO_ROOT / path).exists() for path in patch["value"])
