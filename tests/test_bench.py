"""The benchmarks' verdicts: each target judged on made-up figures, the exit code, and the
performance page's tables (docs/performance.md) rendered from the published results."""

import json

import pytest

from bench import report, saved
from bench.verdict import AT_LEAST, AT_MOST, EXACTLY, Target, Verdict

WHERE = "Redis AOF everysec, PostgreSQL fsync on"


@pytest.fixture
def results_dirs(tmp_path, monkeypatch):
    """Saved results go to a temporary folder, never to bench/results or docs/benchmarks."""
    monkeypatch.setattr(saved, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(saved, "PUBLISHED", tmp_path / "published")
    return tmp_path


def _verdict(*overrides: str) -> Verdict:
    targets = (
        Target("rate", "req/s", AT_LEAST, 6_500, "#7"),
        Target("p99", "p99 ms", AT_MOST, 50, "#7"),
        Target("other", "other answers", EXACTLY, 0, "#15"),
        Target("bytes", "bytes per key"),
    )
    return Verdict("example", targets, overrides)


def test_a_missed_target_sets_the_exit_code_and_everything_is_saved(results_dirs, capsys):
    verdict = _verdict()
    verdict.check("rate", 6_500, WHERE, "0.36 x floor 18,000")
    verdict.check("p99", 50.1, WHERE)
    verdict.check("other", 0, WHERE)
    verdict.check("bytes", 136, WHERE)
    assert [check["met"] for check in verdict.checks] == [True, False, True, None]
    assert verdict.finish({"figure": 1}, publish=False) == 1
    out = capsys.readouterr().out
    assert "MISSED   p99 ms ≤ 50 (#7)" in out
    assert "reported bytes per key (#7)" not in out  # no source given: none shown
    [results] = (results_dirs / "results").glob("example-*.json")
    saved_run = json.loads(results.read_text())
    assert saved_run["checks"] == verdict.checks
    assert saved_run["figures"] == {"figure": 1}
    assert {"cpu", "cores", "ram_gib", "kernel", "python"} <= saved_run["machine"].keys()
    assert not (results_dirs / "published").exists()  # only --publish writes docs/benchmarks


def test_every_target_met_exits_0_and_publish_writes_the_published_copy(results_dirs):
    verdict = _verdict()
    verdict.check("rate", 8_660, WHERE)
    verdict.check("bytes", 10**6, WHERE)  # a reported figure is never missed
    assert verdict.finish({}, publish=True) == 0
    assert json.loads((results_dirs / "published" / "example.json").read_text())["checks"] == verdict.checks


def test_a_target_can_be_overridden_and_an_unknown_one_is_refused():
    verdict = _verdict("rate=1e9")
    verdict.check("rate", 8_660, WHERE)
    assert verdict.checks[0]["wanted"] == "≥ 1,000,000,000"
    assert verdict.missed() == verdict.checks
    with pytest.raises(SystemExit, match="no target 'latency'"):
        _verdict("latency=5")
    with pytest.raises(SystemExit, match="no target 'bytes'"):
        _verdict("bytes=5")  # a reported figure has no target to override


def _scenario(name, rate, ratio, p99, statuses, appendfsync="everysec", socket_errors=0) -> dict:
    return {
        "scenario": name,
        "requests_per_second": rate,
        "p50_ms": 1.0,
        "p99_ms": p99,
        "statuses": statuses,
        "socket_errors": socket_errors,
        "ratio": ratio,
        "expected_status": {"limited": 429, "sold_out": 409, "not_open": 409, "admit": 202}[name],
        "floor": {"requests_per_second": round(rate / ratio)},
        "round_ratios": [ratio, ratio, ratio],
        "durability": {"redis": {"appendonly": "yes", "appendfsync": appendfsync}},
        "per_request": {
            "api_cpu_us": 200.0,
            "redis_cpu_us": 40.0,
            "client_cpu_us": 60.0,
            "redis_scripts": 1.0,
            "redis_commands": 4.0,
        },
        "model_requests_per_second": round(rate * 1.1),
    }


def _missed(verdict: Verdict) -> list[tuple[str, float, str]]:
    return [(check["target"], check["measured"], check["where"]) for check in verdict.missed()]


def test_the_paths_count_only_their_own_status_and_hold_ratio_rate_and_p99():
    from bench.paths import TARGETS, judge

    verdict = Verdict("paths", TARGETS)
    judge(
        [
            _scenario("limited", 20_000, 0.85, 7.0, {429: 60_000, 202: 3}),
            _scenario("sold_out", 18_000, 0.79, 21.0, {409: 50_000}),
            _scenario("not_open", 6_000, 0.4, 45.0, {409: 20_000}),
            _scenario("admit", 8_000, 0.5, 15.0, {202: 24_000}, socket_errors=2),
            _scenario("admit", 6_499, 0.3, 21.0, {202: 19_000}, appendfsync="always"),
        ],
        verdict,
    )
    assert _missed(verdict) == [
        ("limited.other", 3, "Redis AOF everysec"),
        ("sold_out.ratio", 0.79, "Redis AOF everysec"),
        ("sold_out.p99", 21.0, "Redis AOF everysec"),
        ("admit.other", 2, "Redis AOF everysec"),
        ("admit.rate", 6_499, "Redis AOF always"),
        ("admit.ratio", 0.3, "Redis AOF always"),
        ("admit.p99", 21.0, "Redis AOF always"),
    ]
    # three targets and the model's row per scenario, the admit path's rate besides
    assert len(verdict.checks) == 5 * 4 + 2
    model = next(c for c in verdict.checks if c["target"] == "not_open.model")
    assert model["measured"] == 1.1 and model["met"] is None
    assert "1.0 Redis script calls running 4.0 commands" in model["detail"]


def test_a_request_s_costs_are_the_counters_differences_over_the_requests():
    from bench.paths import model_rate, per_request

    before = {"api_cpu": 1.0, "redis_cpu": 2.0, "client_cpu": 0.5, "redis_scripts": 10, "redis_commands": 40}
    after = {
        "api_cpu": 3.0,
        "redis_cpu": 2.4,
        "client_cpu": 1.1,
        "redis_scripts": 10_010,
        "redis_commands": 40_040,
    }
    costs = per_request(before, after, 10_000)
    assert costs == {
        "api_cpu_us": 200.0,
        "redis_cpu_us": 40.0,
        "client_cpu_us": 60.0,
        "redis_scripts": 1.0,
        "redis_commands": 4.0,
    }
    assert model_rate(costs, cores=2) == 6_667  # two cores over 300 µs a request


def test_with_the_limiter_apart_its_redis_counts_in_the_costs_and_the_model():
    from bench.paths import model_rate, per_request

    before = {"api_cpu": 1.0, "redis_cpu": 2.0, "client_cpu": 0.5, "redis_scripts": 0, "redis_commands": 0}
    before |= {"limiter_cpu": 5.0, "limiter_scripts": 0, "limiter_commands": 0}
    after = {"api_cpu": 3.0, "redis_cpu": 2.3, "client_cpu": 1.1, "redis_scripts": 10_000}
    after |= {"redis_commands": 80_000, "limiter_cpu": 5.2}
    after |= {"limiter_scripts": 10_000, "limiter_commands": 30_000}
    costs = per_request(before, after, 10_000)
    assert (costs["redis_cpu_us"], costs["limiter_cpu_us"]) == (30.0, 20.0)
    assert (costs["limiter_scripts"], costs["limiter_commands"], costs["redis_commands"]) == (1.0, 3.0, 8.0)
    assert model_rate(costs, cores=2) == 6_452  # two cores over 200 + 30 + 20 + 60 µs


def _drop(confirmed=5000, orders=None, statuses=None, terminal=0.2, p99=30.0, socket_errors=0) -> dict:
    return {
        "durability": {"redis": {"appendonly": "yes", "appendfsync": "always"}},
        "requests": 200_000,
        "seconds": 18.0,
        "requests_per_second": 11_111,
        "p99_ms": p99,
        "statuses": statuses or {202: 5000, 409: 195_000},
        "socket_errors": socket_errors,
        "orders": orders or {"confirmed": confirmed},
        "terminal_after_seconds": terminal,
    }


def test_the_drop_is_judged_on_exact_stock_every_202_decided_in_time_p99_and_no_errors():
    from bench.drop import TARGETS, judge

    verdict = Verdict("drop", TARGETS)
    judge(_drop(), 5000, verdict)
    assert verdict.missed() == []
    verdict = Verdict("drop", TARGETS)
    judge(_drop(confirmed=4999, statuses={202: 4999, 409: 195_000, 500: 1}), 5000, verdict)
    assert [(target, measured) for target, measured, _ in _missed(verdict)] == [
        ("confirmed", -1),
        ("errors", 1),
    ]
    verdict = Verdict("drop", TARGETS)
    late = _drop(orders={"confirmed": 5000}, statuses={202: 5010}, terminal=120.4, p99=51, socket_errors=3)
    judge(late, 5000, verdict)
    assert [(target, measured) for target, measured, _ in _missed(verdict)] == [
        ("undecided", 10),
        ("terminal", 120.4),
        ("p99", 51),
        ("errors", 3),
    ]


def _workers(*runs: tuple[int, int, int]) -> list[dict]:
    return [
        {n: {"confirmed_per_second": rate} for n, rate in zip((1, 2, 4), run, strict=True)} for run in runs
    ]


def test_workers_hold_a_floor_with_four_and_more_workers_are_never_slower_in_any_run():
    from bench.workers import TARGETS, judge

    verdict = Verdict("workers", TARGETS)
    judge(_workers((20_010, 21_565, 22_253), (20_749, 21_271, 21_283)), WHERE, verdict)
    assert verdict.missed() == []
    assert verdict.checks[0]["measured"] == 21_283  # the slowest run's four workers
    assert verdict.checks[1]["detail"] == "run 2 of 2: 2 → 4 workers, 21,271 → 21,283"
    verdict = Verdict("workers", TARGETS)
    judge(_workers((24_035, 25_193, 24_670), (23_000, 22_999, 23_100)), WHERE, verdict)
    assert [(target, measured) for target, measured, _ in _missed(verdict)] == [
        ("more_never_slower", -523),  # the worst step of all runs: 25,193 → 24,670
    ]
    verdict = Verdict("workers", TARGETS)
    judge(_workers((10_000, 15_000, 19_999)), WHERE, verdict)
    assert [target for target, _, _ in _missed(verdict)] == ["four"]


def test_api_memory_is_flat_when_the_last_minute_is_within_ten_percent_of_the_first():
    from bench.memory import SAMPLE_EVERY_SECONDS, rss_change

    per_minute = 60 // SAMPLE_EVERY_SECONDS
    steady = [(i * 5, [100, 200]) for i in range(per_minute)]
    grown = [(i * 5, [100, 230]) for i in range(per_minute)]
    assert rss_change({"rss": steady + steady}) == [0.0, 0.0]
    assert rss_change({"rss": steady + grown}) == [0.0, 0.15]


def _memory(queued_bytes=180, decided_bytes=2, jobs_left=0, without_ttl=0, left=0, grown=0) -> dict:
    from bench.memory import SAMPLE_EVERY_SECONDS

    per_minute = 60 // SAMPLE_EVERY_SECONDS
    first = [(i * 5, [100, 200]) for i in range(per_minute)]
    last = [(60 + i * 5, [100, 200 + grown]) for i in range(per_minute)]
    return {
        "durability": {"redis": {"appendonly": "yes", "appendfsync": "always"}},
        "minutes": 2,
        "queue": {
            "orders": 20_000,
            "queued_bytes": queued_bytes,
            "decided_bytes": decided_bytes,
            "jobs_left": jobs_left,
            "drained_seconds": 2.5,
        },
        "statuses": {202: 10_000, 409: 100_000},
        "rss": first + last,
        "buckets": {"keys": 50, "mean_bytes": 136, "ttl_ms_max": 900, "without_ttl": without_ttl},
        "buckets_left_after_idle_seconds": [1.9, left],
        "pending_left": 0,
        "records": {"orders": 10_000, "kept_bytes": 380},
    }


def test_memory_reports_bytes_and_holds_expiry_and_flat_api_memory():
    from bench.memory import TARGETS, judge

    verdict = Verdict("memory", TARGETS)
    judge(_memory(), verdict)
    assert verdict.missed() == []
    assert [(c["target"], c["measured"], c["met"]) for c in verdict.checks[:6]] == [
        ("bucket_bytes", 136, None),
        ("queued_bytes", 180, True),
        ("decided_bytes", 2, True),
        ("jobs_left", 0, True),
        ("kept_bytes", 380, None),
        ("peak_bytes", 560, None),  # queued + kept: what the chart's bytesPerOrder must cover
    ]
    verdict = Verdict("memory", TARGETS)
    judge(
        _memory(queued_bytes=2_300, decided_bytes=6_600, jobs_left=5, without_ttl=2, left=3, grown=30),
        verdict,
    )
    assert [(target, measured) for target, measured, _ in _missed(verdict)] == [
        ("queued_bytes", 2_300),
        ("decided_bytes", 6_600),
        ("jobs_left", 5),
        ("without_ttl", 2),
        ("buckets_left", 3),
        ("rss", 15.0),
    ]
    replaced = _memory(grown=30)
    replaced["rss"][-1][1][0] = None  # the first API process was gone at the last sample
    verdict = Verdict("memory", TARGETS)
    judge(replaced, verdict)
    assert [target for target, _, _ in _missed(verdict)] == ["replaced", "rss"]


def test_the_limiter_reports_its_rates_and_holds_the_deny_cache_s_gain_and_the_statuses():
    from bench.limiter import TARGETS, judge

    def path(ratio, statuses, other=0):
        return {"requests_per_second": 1000, "floor_requests_per_second": 2000, "ratio": ratio,
                "statuses": statuses, "other": other}  # fmt: skip

    decisions = {"plain": 7_616, "pipelined_16": 13_889, "pipelined_500": 22_589, "redis_benchmark": 31_358}
    redis = {"redis": {"appendonly": "yes", "appendfsync": "always"}}
    figures = {
        "decisions": [{"durability": redis, **decisions}],
        "http": {
            "durability": redis,
            "cached": path(0.9, {429: 1000}),
            "uncached": path(0.34, {429: 900, 202: 1}, other=1),
            "sold_out": path(0.7, {409: 1000}),
        },
    }
    verdict = Verdict("limiter", TARGETS)
    judge(figures, verdict)
    assert _missed(verdict) == [("other", 1, "Redis AOF always")]
    figures["http"]["cached"]["ratio"] = 0.3
    verdict = Verdict("limiter", TARGETS)
    judge(figures, verdict)
    assert [target for target, _, _ in _missed(verdict)] == ["deny_cache_gain", "other"]


def _published(folder, name: str, met: bool) -> None:
    folder.mkdir(exist_ok=True)
    verdict = Verdict(name, (Target("rate", "req/s | all", AT_LEAST, 6_500, "#7"), Target("bytes", "bytes")))
    verdict.check("rate", 8_660 if met else 6_000, WHERE, "0.36 x floor 24,279")
    verdict.check("bytes", 136, "Redis AOF always")
    run = {"benchmark": name, "command": f"python -m bench.{name} --publish", "machine": verdict.machine}
    (folder / f"{name}.json").write_text(json.dumps({**run, "checks": verdict.checks, "figures": {}}))


def test_the_page_s_blocks_are_rendered_from_the_published_results(tmp_path):
    _published(tmp_path, "paths", met=True)
    _published(tmp_path, "drop", met=False)
    (tmp_path / "drop-always.png").write_bytes(b"")
    page = "# x\n\n<!-- bench:begin paths drop workers -->\nhand-typed figures\n<!-- bench:end -->\nafter\n"
    rendered = report.render_page(page, tmp_path)
    assert rendered.startswith(
        "# x\n\n<!-- bench:begin paths drop workers -->\n`python -m bench.paths --publish` on "
    )
    assert rendered.endswith("<!-- bench:end -->\nafter\n")
    assert "hand-typed" not in rendered
    assert f"| req/s \\| all ≥ 6,500 (#7) | {WHERE} | **8,660** (0.36 x floor 24,279) | met |" in rendered
    assert (
        "| req/s \\| all ≥ 6,500 (#7) | " + WHERE + " | **6,000** (0.36 x floor 24,279) | MISSED |"
        in rendered
    )
    assert "| bytes | Redis AOF always | **136** | reported |" in rendered
    assert f"![drop, always]({tmp_path}/drop-always.png)" in rendered
    assert (
        f"`python -m bench.workers`: nothing published yet (`make bench` writes `{tmp_path}/workers.json`)"
        in rendered
    )
    assert report.render_page(rendered, tmp_path) == rendered


def test_the_performance_page_s_benchmark_tables_are_what_docs_benchmarks_renders():
    page = report.PAGE.read_text()
    assert report.BLOCK.search(page), "docs/performance.md has lost its <!-- bench:begin … --> markers"
    assert report.render_page(page) == page, (
        "docs/performance.md's benchmark tables differ from docs/benchmarks/*.json: never edit them by hand;"
        " `python -m bench.report` renders them (make bench runs it)"
    )


def _soak(**changes) -> dict:
    result = {
        "rounds": [
            {
                "minute": 1,
                "fault": "redis_restarted",
                "statuses": {202: 5000, 409: 1000, 503: 3},
                "socket_errors": 0,
                "server_errors_at": {1_000_021: 3},
            },
            {
                "minute": 2,
                "fault": "api_killed",
                "statuses": {202: 5000, 409: 1000},
                "socket_errors": 7,
                "server_errors_at": {},
            },
        ],
        "windows": [
            {"fault": "redis_restarted", "started": 1_000_020.5, "ended": 1_000_021.2},
            {"fault": "api_killed", "started": 1_000_080.5, "ended": 1_000_082.0},
        ],
        "order_rows": 10_000,
        "undecided_rows": 0,
        "dead_letters": 0,
        "confirmed_units": 9_000,
        "stock_left": 1_000,
        "restocked": 10_000,
        "gate_agrees": True,
        "rss_change": {"api 101": 0.02, "worker 102": -0.04},
        "redis_back": True,
        "redis_before": {"keys": 10, "used_memory": 1 << 20, "peak": 1 << 20},
        "redis_after": {"keys": 12, "used_memory": 2 << 20, "peak": 100 << 20},
    }
    result.update(changes)
    return result


def test_the_soak_allows_errors_only_inside_a_fault_window_and_checks_every_promise():
    from bench.soak import RECOVERY_GRACE_SECONDS, verdict

    assert verdict(_soak()) == []
    late = _soak()
    late["rounds"][0]["server_errors_at"] = {1_000_021 + RECOVERY_GRACE_SECONDS + 1: 2}
    assert verdict(late) == [f"minute 1: 5xx outside the fault window: {{{1_000_027}: 2}}"]
    reset = _soak()
    reset["rounds"][0]["socket_errors"] = 1
    assert verdict(reset) == ["minute 1: 1 socket errors, no API died"]
    assert verdict(_soak(order_rows=9_999)) == ["10000 answers 202 but only 9999 orders"]
    assert verdict(_soak(confirmed_units=9_001)) == [
        "units not conserved: 9001 confirmed + 1000 left != 10000 restocked"
    ]
    assert verdict(_soak(dead_letters=1))[0] == "0 undecided orders, 1 dead letters"
    missing = _soak()
    missing["windows"].pop()
    assert verdict(missing) == ["1 faults were not injected"]
    assert verdict(_soak(rss_change={"api 101": 0.11}, gate_agrees=False, redis_back=False)) == [
        "the stock gate disagrees with PostgreSQL",
        "RSS of api 101 changed +11.0%",
        "Redis not back: {'keys': 12, 'used_memory': 2097152, 'peak': 104857600} after,"
        " {'keys': 10, 'used_memory': 1048576, 'peak': 1048576} before",
    ]
