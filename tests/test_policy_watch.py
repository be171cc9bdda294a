"""The policy file, watched: edited in place, swapped as a ConfigMap, broken, removed."""

import asyncio
import json
import logging
import os
import threading

import pytest

from service.core.metrics import POLICY_RELOAD_ERRORS
from service.core.policies import MAX_POLICY_FILE_BYTES, parse_policies
from service.core.settings import settings_from_env
from service.limiter import policy_watch
from service.limiter.policy_watch import REREAD_POLLS, PolicyWatcher, watch_policies
from service.sale.resources import open_resources
from tests.support.configmap import ConfigMapDir


def _policy(capacity, mode="enforce"):
    limit = {"name": "per-ip", "key": "ip", "capacity": capacity, "refill_per_sec": 1, "mode": mode}
    return json.dumps({"buy": {"limits": [limit]}})


def _reload_errors():
    return POLICY_RELOAD_ERRORS._value.get()


@pytest.fixture
def watched(tmp_path, settings_env):
    def make(path, **env):
        settings = settings_from_env({**settings_env, "FLASHSALE_RATE_POLICY_FILE": str(path), **env})
        limiter = open_resources(settings).limiter
        return limiter, PolicyWatcher(path, limiter, settings.rate_shadow)

    return make


def _watching(tmp_path, watched):
    """A watched file with a policy of capacity 5, polled once."""
    path = tmp_path / "policies.json"
    path.write_text(_policy(5))
    limiter, watcher = watched(path)
    watcher.poll()
    return path, limiter, watcher


def _capacity(limiter):
    return limiter.policies["buy"].limits[0].capacity


def test_a_file_edited_in_place_is_applied_and_the_same_one_is_not(tmp_path, watched):
    path = tmp_path / "policies.json"
    path.write_text(_policy(5))
    limiter, watcher = watched(path)
    first = limiter.active
    assert watcher.poll() is False, "the policy read at start"
    path.write_text(json.dumps(json.loads(_policy(5)), indent=4))  # same policy, other spacing
    assert watcher.poll() is False and limiter.active is first
    path.write_text(_policy(9))
    assert watcher.poll() is True
    assert _capacity(limiter) == 9 and limiter.active.digest != first.digest
    assert limiter.active.loaded_at >= first.loaded_at


def test_an_edit_stat_cannot_see_is_read_within_a_few_seconds(tmp_path, watched):
    path = tmp_path / "policies.json"
    path.write_text(_policy(5))
    limiter, watcher = watched(path)
    watcher.poll()
    stat = path.stat()
    path.write_text(_policy(7))  # same size; put the old times back
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    applied = [watcher.poll() for _ in range(REREAD_POLLS)]
    assert applied.count(True) == 1 and _capacity(limiter) == 7


def test_a_configmap_update_is_a_symlink_swap_and_is_applied(tmp_path, watched):
    mount = ConfigMapDir(tmp_path, {"policies.json": _policy(5)})
    limiter, watcher = watched(tmp_path / "policies.json")
    watcher.poll()
    mount.update({"policies.json": _policy(11)})
    assert watcher.poll() is True and _capacity(limiter) == 11


def test_a_broken_or_missing_file_changes_nothing_logs_why_and_counts_once(tmp_path, watched, caplog):
    path, limiter, watcher = _watching(tmp_path, watched)
    before, errors = limiter.active, _reload_errors()
    path.write_text(
        '{"buy": {"limits": [{"name": "per-ip", "key": "ip", "capacity": 0, "refill_per_sec": 1}]}}'
    )
    with caplog.at_level(logging.ERROR):
        assert [watcher.poll() for _ in range(2 * REREAD_POLLS)] == [False] * (2 * REREAD_POLLS)
    assert limiter.active is before
    assert _reload_errors() == errors + 1, "one bad content is counted once"
    assert any("capacity" in getattr(r, "reason", "") for r in caplog.records)
    path.unlink()
    assert watcher.poll() is False and limiter.active is before
    assert _reload_errors() == errors + 2
    path.write_text(_policy(6))
    assert watcher.poll() is True and _capacity(limiter) == 6


def test_with_every_limit_in_shadow_a_reloaded_policy_stays_in_shadow(tmp_path, watched):
    path = tmp_path / "policies.json"
    path.write_text(_policy(5))
    limiter, watcher = watched(path, FLASHSALE_RATE_SHADOW="true")
    assert limiter.policies["buy"].limits[0].mode == "shadow"
    path.write_text(_policy(8))
    assert watcher.poll() is True
    assert limiter.policies["buy"].limits[0].mode == "shadow" and _capacity(limiter) == 8


def test_a_policy_applied_clears_the_deny_cache(tmp_path, watched):
    path = tmp_path / "policies.json"
    path.write_text(_policy(5))
    limiter, _ = watched(path)
    limiter.deny_cache.deny("some-bucket", 60)
    limiter.apply(parse_policies(_policy(50)))
    assert limiter.deny_cache.remaining(["some-bucket"]) is None


def test_a_file_above_the_size_limit_is_refused_by_its_size_unread(tmp_path, watched, monkeypatch):
    path, limiter, watcher = _watching(tmp_path, watched)
    before, errors = limiter.active, _reload_errors()
    with path.open("r+b") as file:
        file.truncate(MAX_POLICY_FILE_BYTES + 1)  # a sparse file: 1 MiB and a byte of nothing

    def never(_path):
        raise AssertionError("a file that large is never read")

    monkeypatch.setattr(policy_watch, "read_policy_file", never)
    assert [watcher.poll() for _ in range(2 * REREAD_POLLS)] == [False] * (2 * REREAD_POLLS)
    assert limiter.active is before and _reload_errors() == errors + 1


def test_a_file_is_read_and_parsed_off_the_event_loop(tmp_path, watched):
    path = tmp_path / "policies.json"
    path.write_text(_policy(5))
    limiter, watcher = watched(path)
    checked_on, check = [], watcher.check

    def recording_check():
        checked_on.append(threading.get_ident())
        return check()

    watcher.check = recording_check

    async def run():
        path.write_text(_policy(12))
        task = asyncio.create_task(watch_policies(watcher, interval=0.01))
        while _capacity(limiter) != 12:
            await asyncio.sleep(0.01)
        task.cancel()
        return threading.get_ident()

    loop_thread = asyncio.run(asyncio.wait_for(run(), 5))
    assert checked_on and loop_thread not in checked_on
