"""The chart hands the apps PostgreSQL's password as PGPASSWORD beside a URL without one (so
no password ever needs encoding into a URL): flashsale's commands must connect that way."""

from __future__ import annotations

import os
import subprocess

from service.cli.dev_servers import restartable_postgres
from tests.support.cli import run_cli

AWKWARD_PASSWORD = "p@ss word/+:%?#"


def _migrate(url: str, wait_seconds: int, **extra_env: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "FLASHSALE_"))}
    return run_cli(env | {"FLASHSALE_DATABASE_URL": url, **extra_env}, "migrate", "--wait", str(wait_seconds))


def test_flashsale_migrate_authenticates_with_pgpassword_beside_a_url_without_one():
    with restartable_postgres(password=AWKWARD_PASSWORD) as server:
        assert ":" not in server.url.split("@")[0].removeprefix("postgresql+psycopg2://")
        # Refused at once (not waited out) and said so: a migration hook's log names the cause.
        refused = _migrate(server.url, 60, PGPASSWORD="wrong")
        assert refused.returncode != 0, "the server checks the password"
        assert "refused the credentials: " in refused.stderr + refused.stdout
        assert "password authentication failed" in refused.stderr + refused.stdout
        assert AWKWARD_PASSWORD not in refused.stdout + refused.stderr
        migrated = _migrate(server.url, 30, PGPASSWORD=AWKWARD_PASSWORD)
        assert migrated.returncode == 0, migrated.stderr[-2000:]
