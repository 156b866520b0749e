"""The critical-path cut of ``bench/lib/spans.py``, on spans made by hand (pure logic; the smoke run of
``bench.overhead --spans`` in ``test_bench_smoke.py`` records real ones)."""

from __future__ import annotations

import pytest

from bench.lib.spans import Span, critical_path


def release(at: float) -> list[Span]:
    """One release of two services, times in ms from ``at``; see the expected segments below."""

    def span(what: str, start: float, end: float, detail: str = "") -> Span:
        return Span(what, (at + start) / 1000, (at + end) / 1000, detail)

    return [
        span("admin", 0.0, 9.0, "create"),
        span("health", 0.2, 1.5),
        span("store", 0.3, 1.0, "insert"),
        span("store", 1.6, 2.0, "compare_and_set"),
        span("publish", 2.5, 4.0, "task.a.initialize"),
        span("publish", 2.6, 4.0, "task.b.initialize"),
        span("publish", 2.7, 4.0, "release.initializing"),
        span("reply", 7.0, 8.0, "reply.a.reply"),
        span("store", 7.2, 7.8, "compare_and_set"),
        span("reply", 7.5, 9.0, "reply.b.reply"),
        span("store", 8.0, 8.6, "compare_and_set"),
        span("publish", 8.8, 9.5, "task.a.start"),
        span("publish", 8.9, 9.5, "release.running"),
        span("reply", 12.0, 13.0, "reply.a.reply"),
        span("reply", 12.4, 13.5, "reply.b.reply"),
        span("store", 12.5, 13.0, "compare_and_set"),
        span("publish", 13.4, 14.0, "release.staged"),
        span("admin", 15.0, 20.0, "publish"),
        span("store", 15.2, 15.6, "compare_and_set"),
        span("publish", 15.9, 17.0, "task.a.publish"),
        span("reply", 20.0, 21.0, "reply.a.reply"),
        span("reply", 20.3, 21.0, "reply.b.reply"),
        span("store", 20.4, 20.9, "compare_and_set"),
        span("publish", 21.2, 22.0, "release.published"),
    ]


def test_each_segment_is_cut_where_the_release_waits_for_the_coordinator() -> None:
    figures = critical_path(release(0.0) + release(100.0))
    assert figures["releases"] == 2
    segments = {(s["step"], s["side"]): s for s in figures["segments"]}
    # create received (0) -> first initialize command (2.5): the insert, the begin and the health check
    assert segments["initialize", "before"]["total"] == pytest.approx(2.5)
    assert segments["initialize", "before"]["store"] == pytest.approx(0.7 + 0.4)
    assert segments["initialize", "before"]["health"] == pytest.approx(1.3)
    # the last reply (7.5) -> release.running (8.9): the rest of the first reply's write, then its own
    assert segments["initialize", "after"]["total"] == pytest.approx(1.4)
    assert segments["initialize", "after"]["store"] == pytest.approx(0.3 + 0.6)
    assert segments["process", "after"]["total"] == pytest.approx(13.4 - 12.4)
    assert segments["process", "after"]["store"] == pytest.approx(0.5)
    assert segments["publish", "before"]["total"] == pytest.approx(0.9)
    assert segments["publish", "after"]["total"] == pytest.approx(0.9)
    assert segments["publish", "after"]["health"] == 0
    assert figures["total_per_step_ms"] == pytest.approx((2.5 + 1.4 + 1.0 + 0.9 + 0.9) / 3, abs=1e-3)
    assert figures["store_per_step_ms"] == pytest.approx((1.1 + 0.9 + 0.5 + 0.4 + 0.5) / 3, abs=1e-3)


def test_the_warm_up_releases_are_left_out() -> None:
    slow_warm_up = [Span(s.what, s.start * 10, s.end * 10, s.detail) for s in release(0.0)]
    figures = critical_path(slow_warm_up + release(1000.0), skip=1)
    assert figures["releases"] == 1
    assert figures["total_per_step_ms"] == pytest.approx((2.5 + 1.4 + 1.0 + 0.9 + 0.9) / 3, abs=1e-3)


def test_a_release_cut_short_is_left_out() -> None:
    whole = release(0.0)
    unfinished = [s for s in release(100.0) if s.detail != "release.published"]
    assert critical_path(whole + unfinished)["releases"] == 1
    assert critical_path(unfinished) == {"releases": 0}
