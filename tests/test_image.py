"""The Dockerfile, which no machine of ours can build: linted by hadolint, and held to what
the chart relies on."""

import subprocess
import sys
from pathlib import Path

from service.settings import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"


def test_hadolint_finds_nothing():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_non_root_multi_stage_with_an_init_and_no_healthcheck():
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines() if line.strip()]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) == 2, "build tools stay in the first stage"
    final = lines[lines.index(stages[-1]) :]
    assert any(line.startswith("USER 10001") for line in final), "the chart's runAsUser"
    assert 'ENTRYPOINT ["dumb-init", "--"]' in final, "PID 1 forwards signals and reaps"
    assert not any(line.startswith("HEALTHCHECK") for line in lines), "Kubernetes probes do that job"
    assert "COPY lua ./lua" in lines, "the Lua scripts ship beside the code"


def test_the_build_context_holds_only_what_the_image_needs():
    ignored = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*" and "!service/" in ignored and "!lua/" in ignored
