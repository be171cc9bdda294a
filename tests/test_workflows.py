"""What cannot run here (GitHub Actions, the kind run, a release, skaffold) is at least
well-formed, shellcheck-clean and pinned, and points at real files."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from e2e.conftest import KIND_TEST_TIMEOUT
from service.core.settings import REPO_ROOT

WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.yml"))
SCRIPTS = sorted(
    [*(REPO_ROOT / "k8s").glob("*.sh"), REPO_ROOT / ".ci" / "run", REPO_ROOT / ".ci" / "system-packages"]
)
E2E_SCRIPT = REPO_ROOT / "k8s" / "e2e.sh"
VERSIONS = REPO_ROOT / "k8s" / "versions.env"

EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.DOTALL)
"""A GitHub expression: replaced before shellcheck reads a run step (GitHub expands it first)."""
SHA_PIN = re.compile(r"^[0-9a-f]{40}$")
VERSION_TAG = re.compile(r"^v\d+(\.\d+){0,2}$")
EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+$")
NODE_IMAGE = re.compile(r"^kindest/node:v\d+\.\d+\.\d+@sha256:[0-9a-f]{64}$")
HELM_INSTALL = re.compile(r"\bhelm\s+(upgrade|install)\b")
REMOTE_CHART = re.compile(r"--repo[\s=]|oci://")


def workflow(name: str) -> dict:
    return yaml.safe_load((REPO_ROOT / ".github" / "workflows" / name).read_text())


def run_steps(path: Path) -> list[tuple[str, str]]:
    """(job/step, script) of every ``run:`` step, expressions replaced by a placeholder word."""
    steps = []
    for job_id, job in yaml.safe_load(path.read_text())["jobs"].items():
        for number, step in enumerate(job.get("steps", []), 1):
            if "run" in step:
                steps.append((f"{job_id}/{step.get('name', number)}", EXPRESSION.sub("EXPR", step["run"])))
    return steps


def shellcheck(script: str) -> str:
    """shellcheck's findings on a bash script (empty when clean)."""
    assert shutil.which("shellcheck"), "shellcheck is missing: make system-packages (Debian's shellcheck)"
    result = subprocess.run(
        ["shellcheck", "--shell=bash", "--format=gcc", "-"], input=script, capture_output=True, text=True
    )
    return result.stdout + result.stderr


def shellcheck_findings(path: Path) -> list[str]:
    return [f"{name}:\n{found}" for name, script in run_steps(path) if (found := shellcheck(script))]


def logical_lines(text: str) -> list[str]:
    """Shell lines with their backslash continuations joined, blanks squeezed."""
    return [" ".join(line.split()) for line in text.replace("\\\n", " ").splitlines()]


def unpinned_remote_charts(text: str) -> list[str]:
    """Every helm install/upgrade of a chart from a repository or registry without --version."""
    return [
        line
        for line in logical_lines(text)
        if HELM_INSTALL.search(line) and REMOTE_CHART.search(line) and "--version" not in line
    ]


def versions() -> dict[str, str]:
    lines = [line for line in VERSIONS.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_the_workflows_exist():
    assert {path.name for path in WORKFLOWS} >= {"ci.yml", "e2e.yml", "release.yml"}


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


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_every_run_step_passes_shellcheck(workflow):
    # GitHub runs steps with bash on Linux unless told otherwise: what shellcheck is told.
    document = yaml.safe_load(workflow.read_text())
    for level in [document, *document["jobs"].values()]:
        assert level.get("defaults", {}).get("run", {}).get("shell", "bash") == "bash"
    for job in document["jobs"].values():
        assert all(step.get("shell", "bash") == "bash" for step in job.get("steps", []))
    assert run_steps(workflow), "no run step found: the extraction is broken"
    assert shellcheck_findings(workflow) == []


def test_a_run_step_with_a_shellcheck_error_is_caught(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  j:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - name: loops over ls\n"
        '        run: for f in $(ls ${{ github.workspace }}/*.yaml); do echo "$f"; done\n'
    )
    (finding,) = shellcheck_findings(bad)
    assert finding.startswith("j/loops over ls") and "SC2045" in finding


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_scripts_pass_shellcheck(script):
    assert os.access(script, os.X_OK), f"{script} is not executable"
    result = subprocess.run(
        ["shellcheck", "--external-sources", "--format=gcc", str(script.relative_to(REPO_ROOT))],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_action_is_pinned_to_a_release_and_the_same_one_everywhere():
    pins: dict[str, set[str]] = {}
    for path in WORKFLOWS:
        for line in path.read_text().splitlines():
            found = re.match(r"\s*(?:-\s+)?uses:\s*(\S+?)@(\S+)(?:\s+#\s*(\S+))?\s*$", line)
            if found is None:
                assert "uses:" not in line.split("#")[0], f"{path.name}: {line.strip()} names no version"
                continue
            action, ref, comment = found.groups()
            # A commit, with the release it is as a comment (what Dependabot keeps up to date).
            pinned = SHA_PIN.match(ref) and comment and VERSION_TAG.match(comment)
            assert pinned or VERSION_TAG.match(ref), f"{path.name}: {line.strip()}"
            pins.setdefault(action, set()).add(ref)
    assert "actions/checkout" in pins, "no action found: the pattern is broken"
    assert {action: refs for action, refs in pins.items() if len(refs) > 1} == {}


def test_every_pinned_version_is_exact_and_the_node_image_carries_its_digest():
    pinned = versions()
    assert set(pinned) >= {
        "KIND_VERSION",
        "KIND_NODE_IMAGE",
        "KUBECTL_VERSION",
        "HELM_VERSION",
        "CT_VERSION",
        "TRAEFIK_CHART_VERSION",
        "KEDA_CHART_VERSION",
        "COSIGN_VERSION",
    }
    assert NODE_IMAGE.match(pinned.pop("KIND_NODE_IMAGE"))
    assert {key: value for key, value in pinned.items() if not EXACT_VERSION.match(value)} == {}
    e2e = E2E_SCRIPT.read_text()
    assert '--image "$KIND_NODE_IMAGE"' in e2e
    # The node image comes from one place: a node of the kind config naming another would win.
    config = yaml.safe_load((REPO_ROOT / "k8s" / "kind-config.yaml").read_text())
    assert all("image" not in node for node in config["nodes"])


def test_the_workflows_read_versions_instead_of_repeating_them():
    for path in WORKFLOWS:
        # Comments aside (an action's release is one).
        text = "\n".join(re.sub(r"(^|\s)#.*", "", line) for line in path.read_text().splitlines())
        for key, value in versions().items():
            assert not re.search(rf"(?<![\w.]){re.escape(value)}(?![\w.])", text), (
                f"{path.name} repeats {key}"
            )


def test_every_remote_chart_is_installed_at_a_pinned_version():
    sources = {path.name: "\n".join(script for _, script in run_steps(path)) for path in WORKFLOWS}
    sources |= {path.name: path.read_text() for path in SCRIPTS} | {
        "Makefile": (REPO_ROOT / "Makefile").read_text()
    }
    assert {name: lines for name, text in sources.items() if (lines := unpinned_remote_charts(text))} == {}
    # Traefik and KEDA are found, so the check looks where the installs are.
    remote = [
        line for line in logical_lines(sources["e2e.sh"]) if HELM_INSTALL.search(line) and "--repo" in line
    ]
    assert len(remote) == 2, remote


def test_an_unpinned_remote_chart_is_caught():
    script = "helm upgrade --install keda keda \\\n  --repo https://kedacore.github.io/charts --wait\n"
    assert unpinned_remote_charts(script) == [
        "helm upgrade --install keda keda --repo https://kedacore.github.io/charts --wait"
    ]
    assert unpinned_remote_charts("helm install x oci://ghcr.io/a/b --version 1.2.3") == []


def e2e_steps() -> list[dict]:
    return workflow("e2e.yml")["jobs"]["kind"]["steps"]


def test_the_e2e_workflow_runs_the_steps_of_make_e2e_in_order():
    body = re.search(r"^all\(\) \{\n(.*?)^\}", E2E_SCRIPT.read_text(), re.MULTILINE | re.DOTALL).group(1)
    functions = [line.strip() for line in body.splitlines() if not line.strip().startswith("trap")]
    steps = {"install": "install_release", "helm-test": "helm_test", "ct-install": "ct_install"}
    ran = [
        steps.get(found.group(1), found.group(1))
        for step in e2e_steps()
        if (found := re.fullmatch(r"k8s/e2e\.sh (\S+)", step.get("run", "").strip()))
    ]
    assert ran == functions


def test_the_e2e_job_outlasts_the_suite_and_the_suite_outlasts_its_tests():
    job = workflow("e2e.yml")["jobs"]["kind"]
    steps = e2e_steps()
    assert all("timeout-minutes" in step for step in steps[2:]), "a step without its own timeout"
    (suite,) = (n for n, step in enumerate(steps) if step.get("run") == "k8s/e2e.sh suite")
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "e2e"],
        cwd=REPO_ROOT,
        env={**os.environ, "E2E_TARGET": "kind"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    tests = [line for line in collected.stdout.splitlines() if "::" in line]
    assert any("test_network_policy" in test for test in tests), collected.stdout + collected.stderr
    assert steps[suite]["timeout-minutes"] * 60 > len(tests) * KIND_TEST_TIMEOUT
    assert job["timeout-minutes"] > sum(step.get("timeout-minutes", 0) for step in steps[: suite + 1])


def test_the_e2e_job_keeps_diagnostics_on_failure_timeout_and_cancel():
    # A job that timed out is cancelled: cancelled() covers it.
    diagnostics, upload = (step for step in e2e_steps() if step.get("if") == "failure() || cancelled()")
    assert diagnostics["run"] == 'k8s/e2e.sh diagnostics "$RUNNER_TEMP/diagnostics"'
    assert upload["uses"].startswith("actions/upload-artifact@")
    assert upload["with"]["path"] == "${{ runner.temp }}/diagnostics"


def test_ct_install_leaves_out_only_values_files_that_exist():
    skipped = re.search(r"^CT_INSTALL_SKIP=\((.*)\)$", E2E_SCRIPT.read_text(), re.MULTILINE).group(1).split()
    ci = {path.name for path in (REPO_ROOT / "charts" / "flashsale" / "ci").glob("*-values.yaml")}
    assert set(skipped) < ci, f"{skipped} not all in {sorted(ci)}, or nothing left to install"
    assert yaml.safe_load((REPO_ROOT / ".github" / "ct.yaml").read_text())["charts"] == ["charts/flashsale"]


def test_the_release_pushes_the_image_the_chart_runs_with_least_privilege():
    release = workflow("release.yml")
    assert release[True] == {"push": {"tags": ["v*"]}}  # PyYAML reads the key `on` as True
    assert release["permissions"] == {}
    (job,) = release["jobs"].values()
    assert job["permissions"] == {"contents": "read", "packages": "write", "id-token": "write"}
    chart_values = yaml.safe_load((REPO_ROOT / "charts" / "flashsale" / "values.yaml").read_text())
    assert release["env"]["IMAGE"] == chart_values["image"]["repository"]
    (build,) = (step for step in job["steps"] if step.get("uses", "").startswith("docker/build-push-action@"))
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    assert build["with"]["sbom"] is True and build["with"]["provenance"] == "mode=max"
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert runs.count("cosign sign --yes") == 2 and 'helm push "$RUNNER_TEMP/chart/' in runs


def release_version(tag: str) -> subprocess.CompletedProcess:
    return subprocess.run([REPO_ROOT / "k8s" / "release-version.sh", tag], capture_output=True, text=True)


def test_a_release_tag_must_name_the_charts_version_and_app_version():
    chart = yaml.safe_load((REPO_ROOT / "charts" / "flashsale" / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"]
    assert release_version(f"v{chart['version']}").stdout == f"{chart['version']}\n"
    for wrong in ["v99.0.0", chart["version"], f"v{chart['version']}+build.1"]:
        result = release_version(wrong)
        assert result.returncode == 1 and result.stderr, wrong


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
