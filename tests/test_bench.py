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
