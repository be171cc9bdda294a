"""The Dockerfile, which no machine of ours can build: linted by hadolint, held to what the
chart relies on, and its processes run here as the chart runs them (user 10001, read-only
root filesystem, only /tmp writable)."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from service.cli.dev_servers import free_port, wait_until
from service.core.settings import REPO_ROOT
from tests.support.chart import CHART, values_of
from tests.support.cli import cli_running
from tests.support.orders import wait_all_terminal
from tests.support.system import START_TIMEOUT_SECONDS

DOCKERFILE = REPO_ROOT / "Dockerfile"


def _final_stage() -> list[str]:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines() if line.strip()]
    last_from = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return lines[last_from:]


def test_hadolint_finds_nothing():
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), f"{hadolint} is missing: the dev extra installs it (pip install -e '.[dev]')"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_non_root_multi_stage_with_an_init_and_no_healthcheck():
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines() if line.strip()]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) == 2, "build tools stay in the first stage"
    final = _final_stage()
    assert 'ENTRYPOINT ["dumb-init", "--"]' in final, "PID 1 forwards signals and reaps"
    assert not any(line.startswith("HEALTHCHECK") for line in lines), "Kubernetes probes do that job"
    assert "COPY lua ./lua" in lines, "the Lua scripts ship beside the code"


def test_the_image_runs_as_the_charts_numeric_non_root_user_on_code_it_cannot_change():
    final = _final_stage()
    (user,) = [line for line in final if line.startswith("USER ")]
    # Numeric, so the kubelet can check runAsNonRoot without reading /etc/passwd.
    uid, gid = (int(part) for part in user.removeprefix("USER ").split(":"))
    pod = values_of(CHART / "values.yaml")["podSecurityContext"]
    assert uid > 0 and gid > 0 and (uid, gid) == (pod["runAsUser"], pod["runAsGroup"])
    assert any("PYTHONDONTWRITEBYTECODE=1" in line for line in final), "no .pyc writes on a read-only root"
    copies = [line for line in final if line.startswith("COPY ")]
    assert copies and all("--chown" not in line or "--chown=root:root" in line for line in copies), (
        "the app user owns none of the code"
    )


def test_the_build_context_holds_only_what_the_image_needs():
    ignored = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*" and "!service/" in ignored and "!lua/" in ignored


# The chart's pod, without a container runtime: a private mount namespace whose root is
# remounted read-only with a fresh tmpfs on /tmp (the chart's emptyDir), then the image's
# user with no way to gain privileges. It keeps read access everywhere (DAC_READ_SEARCH),
# as the image's /app and /opt/venv are world-readable while here the interpreter sits
# under root's home; writing is what user 10001 may do on that filesystem: /tmp only.
_UID = str(values_of(CHART / "values.yaml")["podSecurityContext"]["runAsUser"])
_USER = [
    "setpriv",
    f"--reuid={_UID}",
    f"--regid={_UID}",
    "--clear-groups",
    "--no-new-privs",
    "--inh-caps=-all,+dac_read_search",
    "--ambient-caps=+dac_read_search",
    "--",
]


def _sandbox() -> list[str]:
    """The pod's mount namespace. A checkout or virtualenv under /tmp (CI's temporary clone)
    would vanish under the fresh tmpfs: the old /tmp is kept on /mnt and each is laid back at
    its own path as a read-only overlay whose top is an open directory, since a clone made
    by ``mktemp -d`` is mode 700 and ``os.access`` (Alembic's check) ignores capabilities."""
    under_tmp = [p for p in (REPO_ROOT, Path(sys.prefix)) if p.is_relative_to("/tmp")]
    kept = [p for p in under_tmp if not any(p != q and p.is_relative_to(q) for q in under_tmp)]
    script = "mount --rbind / / && mount -o remount,bind,ro / && "
    if kept:
        script += "mount --bind /tmp /mnt && mount -o remount,bind,ro /mnt && "
    script += "mount -t tmpfs -o size=64m,mode=1777 tmpfs /tmp && "
    if kept:
        script += "mkdir -m 755 /tmp/.open && "
    for path in map(str, dict.fromkeys(kept)):
        layers = shlex.quote(f"lowerdir=/tmp/.open:/mnt/{path.removeprefix('/tmp/')}")
        script += (
            f"mkdir -p {shlex.quote(path)} && mount -t overlay overlay -o {layers} {shlex.quote(path)} && "
        )
    return ["unshare", "--mount", "--", "sh", "-c", script + 'exec "$@"', "pod", *_USER]


def _as_root() -> list[str]:
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo"):
        return ["sudo", "-En"]  # CI's runner: root only through sudo, our environment kept
    # A skip would let the suite pass without ever running the image's processes as the chart does.
    pytest.fail("the pod's mount namespace needs root or passwordless sudo; this user has neither")


def _in_pod(env: dict[str, str], log: Path, *args: str):
    return cli_running(env, log, *args, prefix=[*_as_root(), *_sandbox()], stop_timeout=30)


def _uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE).group(1))


def test_the_processes_work_as_user_10001_on_a_read_only_root_writing_only_tmp(
    settings_env, fresh_db, tmp_path
):
    # The chart's heartbeat path; PYTHONDONTWRITEBYTECODE as the image sets it.
    env = {**settings_env, "FLASHSALE_WORKER_HEARTBEAT_FILE": "/tmp/worker-heartbeat"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    migrate = subprocess.run(
        [*_as_root(), *_sandbox(), sys.executable, "-m", "service.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    url = f"http://127.0.0.1:{free_port()}"
    api_args = ["api", "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1]]
    with (
        _in_pod(env, tmp_path / "api.log", *api_args) as api,
        _in_pod(env, tmp_path / "worker.log", "worker") as worker,
    ):

        def ready() -> bool:
            assert api.poll() is None and worker.poll() is None, (tmp_path / "api.log").read_text()
            try:
                return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, START_TIMEOUT_SECONDS, "the API in its pod")
        assert _uid(api.pid) == _uid(worker.pid) == int(_UID)
        bought = httpx.post(f"{url}/buy", json={}, timeout=10)
        assert bought.status_code == 202
        order_id = bought.json()["order_id"]
        assert wait_all_terminal(url, [order_id], timeout=30)[order_id]["status"] == "confirmed"
        # The liveness probe, in the worker's own pod: its heartbeat could only go to /tmp.
        probe = [*_as_root(), "nsenter", f"--target={worker.pid}", "--mount", "--root", "--wd", *_USER]
        check = subprocess.run(
            [*probe, sys.executable, "-m", "service.cli", "check", "worker"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert check.returncode == 0, check.stdout + check.stderr
    assert "Read-only file system" not in (tmp_path / "worker.log").read_text()
