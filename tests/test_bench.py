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
