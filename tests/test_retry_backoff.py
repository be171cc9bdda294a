"""FLASHSALE_JOB_RETRY_BACKOFF_SECONDS: the retry waits every draining job is written with."""

import json

import pytest
from rq.job import Job

from service.core.keys import drain_flag_key
from service.core.settings import DEFAULT_JOB_RETRY_BACKOFF_SECONDS, SettingsError, settings_from_env
from service.sale.order_jobs import order_queue
from service.sale.stock_gate import set_gate
from tests.support.admitting import admit_orders
from tests.support.cli import run_cli

pytestmark = pytest.mark.drain_lanes(1)  # each test follows one drain

NAME = "FLASHSALE_JOB_RETRY_BACKOFF_SECONDS"


def test_the_default_is_the_designed_schedule():
    assert settings_from_env({}).job_retry_backoff_seconds == (0, 1, 2, 5, 10, 30, 60)
    assert DEFAULT_JOB_RETRY_BACKOFF_SECONDS == (0, 1, 2, 5, 10, 30, 60)


@pytest.mark.parametrize(("raw", "waits"), [("0,0,1", (0, 0, 1)), (" 3 , 7 ", (3, 7)), ("0", (0,))])
def test_waits_are_parsed(raw, waits):
    assert settings_from_env({NAME: raw}).job_retry_backoff_seconds == waits


@pytest.mark.parametrize("raw", ["-1", "1,x", ",", "1,,2", "1.5", "5,-3", "²"])
def test_a_bad_schedule_names_the_variable(raw):
    with pytest.raises(SettingsError, match=f"{NAME}: must be comma-separated whole numbers"):
        settings_from_env({NAME: raw})


def test_a_bad_schedule_stops_the_worker_at_start():
    result = run_cli({NAME: "1,soon", "PATH": "/usr/bin:/bin"}, "worker")
    assert result.returncode == 2
    assert NAME in result.stderr and "Traceback" not in result.stderr


def test_draining_jobs_carry_the_configured_schedule_jittered(settings_env, redis):
    settings = settings_from_env({**settings_env, NAME: "0,0,10"})
    set_gate(redis, 1, 100)
    schedules = set()
    for n in range(40):
        admit_orders(settings, 1, first_client=n)
        job_id = redis.getdel(drain_flag_key(1)).decode()  # the next admission queues a new drain
        job = Job.fetch(job_id, connection=redis, serializer=order_queue(redis).serializer)
        assert job.retries_left == 3
        first, second, third = job.retry_intervals
        assert first == second == 0 and 5 <= third <= 15
        schedules.add(json.dumps(job.retry_intervals))
    assert len(schedules) > 1, "each job draws its own jitter"
