"""A person at a terminal (`make run`): console log lines, coloured unless NO_COLOR; JSON lines
anywhere else; RQ's maintenance chatter at DEBUG; and `flashsale dev`'s banner once it is up."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from service.cli.dev_servers import free_port, wait_until
from service.core.logs import AtDebug, ConsoleFormatter
from service.core.settings import SettingsError, settings_from_env
from service.sale.order_jobs import order_queue
from tests.support.cli import run_cli
from worker.runner import RQ_MAINTENANCE_LINES

ANSI = re.compile(r"\x1b\[[0-9;]*m")
CONSOLE_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) +\S+ ")


def _closed_database(env: dict[str, str]) -> dict[str, str]:
    """``flashsale migrate --wait 1`` then fails at once with one ERROR line of ``flashsale``."""
    return {**env, "FLASHSALE_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x"}


class Terminal:
    """A pseudo-terminal a process writes to; ``text()`` is everything it wrote so far."""

    def __init__(self) -> None:
        self.leader, self.follower = pty.openpty()
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.leader, 4096)
            except OSError:  # every writer closed its end
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    def start(self) -> None:
        os.close(self.follower)  # only the process holds it now: its exit ends our reads
        self._reader.start()

    def text(self) -> str:
        return b"".join(self._chunks).decode(errors="replace").replace("\r\n", "\n")

    def close(self) -> str:
        self._reader.join(30)
        os.close(self.leader)
        return self.text()


def _on_terminal(env: dict[str, str], *args: str) -> tuple[int, str]:
    """``flashsale <args>`` with stdout and stderr on a terminal: its exit code and output."""
    terminal = Terminal()
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=terminal.follower,
        stderr=terminal.follower,
    )
    terminal.start()
    code = process.wait(60)
    return code, terminal.close()


def _record(**extra: object) -> logging.LogRecord:
    logger = logging.getLogger("flashsale.test")
    return logger.makeRecord(
        logger.name, logging.INFO, __file__, 1, "seeded %s", ("demo",), None, extra=extra
    )


def test_console_line_reads_time_level_logger_message_then_extras():
    record = _record(product_id=1, url="redis://a b", empty="")
    plain = ConsoleFormatter(colour=False).format(record)
    assert re.fullmatch(
        r'\d\d:\d\d:\d\d\.\d{3} INFO    flashsale\.test seeded demo product_id=1 url="redis://a b" empty=""',
        plain,
    ), plain
    coloured = ConsoleFormatter(colour=True).format(record)
    assert "\x1b[32mINFO" in coloured and ANSI.sub("", coloured) == plain


def test_console_line_carries_the_traceback():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("flashsale.test").makeRecord(
            "flashsale.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    first, *rest = ConsoleFormatter(colour=False).format(record).splitlines()
    assert first.endswith("ERROR   flashsale.test failed") and rest[-1] == "ValueError: boom"


def test_logs_are_json_lines_when_stderr_is_not_a_terminal(settings_env):
    result = run_cli(_closed_database(settings_env), "migrate", "--wait", "1")  # stderr: a pipe
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines and {"time", "level", "logger", "message"} <= set(lines[-1])
    assert lines[-1]["level"] == "ERROR" and "did not answer" in lines[-1]["message"]


def test_logs_on_a_terminal_are_coloured_console_lines(settings_env):
    code, output = _on_terminal(_closed_database(settings_env), "migrate", "--wait", "1")
    assert code == 1
    assert "\x1b[31mERROR" in output
    line = ANSI.sub("", output).splitlines()[-1]
    assert CONSOLE_LINE.match(line) and "did not answer" in line, output


def test_no_colour_with_no_color_or_off_a_terminal(settings_env):
    env = _closed_database(settings_env)
    code, output = _on_terminal({**env, "NO_COLOR": "1"}, "migrate", "--wait", "1")
    assert code == 1 and "\x1b" not in output
    assert CONSOLE_LINE.match(output.splitlines()[-1]), output
    # Console lines asked for, into a pipe: still no colour.
    result = run_cli({**env, "FLASHSALE_LOG_FORMAT": "console"}, "migrate", "--wait", "1")
    assert "\x1b" not in result.stderr and CONSOLE_LINE.match(result.stderr.splitlines()[-1])


@pytest.mark.parametrize("no_color", ["", "1"])
def test_worker_lines_on_a_terminal_are_coloured_only_without_no_color(settings_env, redis, no_color):
    env = {**settings_env, "FLASHSALE_LOG_LEVEL": "INFO", "NO_COLOR": no_color}
    code, output = _on_terminal(env, "worker", "--burst")
    assert code == 0 and "Listening on" in output
    assert ("\x1b" in output) == (not no_color), output  # RQ's own colouring of its words too


def test_json_can_be_asked_for_on_a_terminal(settings_env):
    env = {**_closed_database(settings_env), "FLASHSALE_LOG_FORMAT": "JSON"}
    code, output = _on_terminal(env, "migrate", "--wait", "1")
    assert code == 1
    assert json.loads(output.splitlines()[-1])["level"] == "ERROR"


def test_log_format_is_auto_json_or_console():
    assert settings_from_env({}).log_format == "auto"
    assert settings_from_env({"FLASHSALE_LOG_FORMAT": "Console"}).log_format == "console"
    with pytest.raises(SettingsError, match="FLASHSALE_LOG_FORMAT: must be auto, json or console"):
        settings_from_env({"FLASHSALE_LOG_FORMAT": "pretty"})


def test_at_debug_writes_only_the_named_info_lines_at_debug():
    logger = logging.getLogger("flashsale.test.at_debug")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.addFilter(AtDebug("chatter %s"))
    logger.propagate = False
    try:
        logger.setLevel(logging.INFO)
        logger.info("chatter %s", 1)
        logger.info("news %s", 1)
        logger.warning("chatter %s", 2)  # only INFO is lowered
        logger.setLevel(logging.DEBUG)
        logger.info("chatter %s", 3)
    finally:
        logger.removeHandler(handler)
    assert out.getvalue().splitlines() == ["INFO news 1", "WARNING chatter 2", "DEBUG chatter 3"]


def _maintenance_lines(log: Path) -> list[dict]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "rq.worker" and "cleaning" in line["message"]]


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_rq_maintenance_lines_are_debug_lines(system, redis, tmp_path, level):
    system.env.update(FLASHSALE_LOG_LEVEL=level, FLASHSALE_WORKER_MAINTENANCE_INTERVAL="1")
    system.start_workers(1)
    # A registered worker without a key: RQ's registry cleaning (the pass that writes the
    # "cleaning registries" line) takes it out. Twice, so the first pass has written its lines.
    registry = WORKERS_BY_QUEUE_KEY % order_queue(redis).name
    for _ in range(2):
        redis.sadd(registry, "rq:worker:ghost")
        wait_until(lambda: not redis.sismember(registry, "rq:worker:ghost"), 30, "a maintenance pass")
    (log,) = tmp_path.glob("test-worker-*.log")
    if level == "DEBUG":
        wait_until(lambda: len(_maintenance_lines(log)) >= 2, 10, "both maintenance lines")
    lines = _maintenance_lines(log)
    assert {line["level"] for line in lines} == ({"DEBUG"} if level == "DEBUG" else set()), lines
    messages = {line["message"].split(": ", 1)[1].split(":")[0] for line in lines}
    assert messages == ({"cleaning registries for queue", "cleaning group registries"} if lines else set())
    # RQ's other lines keep their level.
    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(r["level"] == "INFO" and "Listening on" in r["message"] for r in records), system.logs()


def test_rq_maintenance_format_strings_are_rqs():
    import rq.worker.base

    source = Path(rq.worker.base.__file__).read_text()
    assert all(f"self.log.info('{message}'" in source for message in RQ_MAINTENANCE_LINES)


@contextmanager
def _dev(env: dict[str, str], stdout, stderr) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "dev"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0


def _dev_env(settings_env: dict[str, str], port: int) -> dict[str, str]:
    """``flashsale dev`` on the test servers (they answer, so it starts none) at INFO."""
    return {**settings_env, "FLASHSALE_PORT": str(port), "FLASHSALE_LOG_LEVEL": "INFO"}


def _banner_at(output: str, port: int, colour: bool) -> None:
    plain = ANSI.sub("", output)
    url = f"http://localhost:{port}"
    for row in (f"API        {url}", f"dashboard  {url}/dashboard", f"OpenAPI    {url}/schema"):
        assert row in plain, output
    assert f"localhost:{port}/buy -H 'content-type: application/json' -d '{{}}'; done" in plain
    assert ("\x1b[1mflashsale is up" in output) == colour and plain.count("flashsale is up") == 1


def test_dev_on_a_terminal_prints_a_coloured_banner_once_up_and_console_lines(settings_env, fresh_db):
    port = free_port()
    terminal = Terminal()
    with _dev(_dev_env(settings_env, port), terminal.follower, terminal.follower):
        terminal.start()
        wait_until(lambda: "flashsale is up" in terminal.text(), 90, "the banner")
        # Printed once everything answered: the API is ready by then.
        assert run_cli(settings_env, "check", "ready", "--url", f"http://127.0.0.1:{port}").returncode == 0
    output = terminal.close()
    _banner_at(output, port, colour=True)
    plain = ANSI.sub("", output)
    assert re.search(r"INFO +service\.cli\.dev seeded demo product product_id=1 stock=\d+", plain), output
    assert re.search(r"INFO +rq\.worker \*\*\* Listening on", plain), output  # the worker's lines too
    assert not any(line.startswith("{") for line in plain.splitlines()), output


def test_dev_off_a_terminal_prints_a_plain_banner_and_json_lines(settings_env, fresh_db, tmp_path):
    port = free_port()
    out = tmp_path / "stdout"
    with out.open("wb") as stdout, _dev(_dev_env(settings_env, port), stdout, subprocess.PIPE) as dev:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(dev.stderr.read().decode().splitlines()))
        reader.start()
        wait_until(lambda: "flashsale is up" in out.read_text(), 90, "the banner")
    reader.join(30)
    _banner_at(out.read_text(), port, colour=False)
    records = [json.loads(line) for line in lines]  # the API's and the worker's lines too
    assert {"service.cli.dev", "rq.worker"} <= {record["logger"] for record in records}
