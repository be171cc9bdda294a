"""The benchmark's verdicts: targets missed and regressions against the baseline."""

from bench.paths import regressions, report


def _result(rate: float, ratio: float, p99: float) -> dict:
    floor = {"requests_per_second": rate / ratio, "p99_ms": 1.0}
    return {
        "requests_per_second": rate,
        "p50_ms": 1.0,
        "p99_ms": p99,
        "ratio": ratio,
        "floor": floor,
        "statuses": {},
        "socket_errors": 0,
        "unexpected_statuses": {},
    }


def test_a_ratio_more_than_thirty_percent_below_the_baseline_is_a_regression():
    baseline = {"limited": {"ratio": 0.5}, "admit": {"ratio": 0.1}}
    results = {"limited": _result(1000, 0.36, 5), "admit": _result(1000, 0.071, 5)}
    assert regressions(results, baseline) == []  # 72 % and 71 % of the baseline: within 30 %
    results["limited"] = _result(1000, 0.34, 5)
    assert regressions(results, baseline) == ["limited: ratio 0.34 < 70% of 0.5"]


def test_the_report_names_every_target_missed(capsys):
    results = {
        "limited": _result(9000, 0.85, 25),
        "sold_out": _result(9000, 0.81, 10),
        "admit": _result(7000, 0.3, 40),
    }
    assert report(results) == ["limited: p99 25.0 ms > 20"]
    results["admit"] = _result(1500, 0.06, 190)
    assert report(results)[1:] == ["admit: 1,500 req/s < 6,500", "admit: p99 190.0 ms > 50"]
    assert "admit" in capsys.readouterr().out


def _drop(confirmed=5000, orders=None, admitted=5000, terminal=0.2, p99=30.0) -> dict:
    return {
        "orders": orders or {"confirmed": confirmed},
        "admitted": admitted,
        "terminal_after_seconds": terminal,
        "p99_ms": p99,
    }


def test_the_drop_is_judged_on_exact_stock_every_202_terminal_in_time_and_p99():
    from bench.drop import verdict

    assert verdict(_drop(), stock=5000) == []
    assert verdict(_drop(confirmed=4999, admitted=4999), stock=5000) == ["4999 confirmed, not exactly 5000"]
    missed = verdict(_drop(orders={"confirmed": 5000}, admitted=5010, terminal=6.5, p99=51), stock=5000)
    assert missed == [
        "5000 orders for 5010 202s",
        "last order terminal 6.5 s after the load",
        "p99 51.0 ms > 50",
    ]


def test_api_memory_is_flat_when_the_last_minute_is_within_ten_percent_of_the_first():
    from bench.memory import SAMPLE_EVERY_SECONDS, rss_change

    per_minute = 60 // SAMPLE_EVERY_SECONDS
    steady = [(i * 5, [100, 200]) for i in range(per_minute)]
    grown = [(i * 5, [100, 230]) for i in range(per_minute)]
    assert rss_change({"rss": steady + steady}) == [0.0, 0.0]
    assert rss_change({"rss": steady + grown}) == [0.0, 0.15]


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
