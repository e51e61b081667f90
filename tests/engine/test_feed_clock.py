"""The live feed clock: monotonic, true times across wraps and restarts; lost frames by cause."""

from __future__ import annotations

import itertools

import pytest

from engine.sources.live import FeedClock

FPS = 25
P = 1 / FPS


def run(clock: FeedClock, frames: list[tuple[float | None, float]]) -> list[float]:
    """pts for (feed time, wall time) pairs."""
    return [clock.pts(t, wall) for t, wall in frames]


def steady(t0: float, wall0: float, n: int) -> list[tuple[float, float]]:
    return [(t0 + i * P, wall0 + i * P) for i in range(n)]


def assert_monotonic(pts: list[float]) -> None:
    assert all(b > a for a, b in itertools.pairwise(pts)), pts


def test_a_steady_feed_follows_its_timestamps_from_the_first_arrival() -> None:
    clock = FeedClock(P, 30.0)
    pts = run(clock, steady(1000.0, 2.0, 50))
    assert pts[0] == pytest.approx(2.0)  # the first frame at the wall time
    assert pts[-1] - pts[0] == pytest.approx(49 * P)
    assert clock.lost == {"feed_gap": 0, "stall": 0, "reconnect": 0}
    assert clock.discontinuities == 0


def test_an_rtmp_32_bit_millisecond_wrap_is_a_discontinuity_not_49_days() -> None:
    # The publisher restarted after 2 s; FFmpeg read its timestamps as 2**32 ms later.
    clock = FeedClock(P, 30.0)
    before = run(clock, steady(100.0, 0.0, 50))
    after = run(clock, steady(100.0 + 2**32 / 1000, 2.0 + 50 * P, 50))
    pts = before + after
    assert_monotonic(pts)
    assert max(pts) < 10.0  # true time, not 4,294,967 s
    assert after[0] == pytest.approx(2.0 + 50 * P)  # resumed at the wall time
    assert after[-1] - after[0] == pytest.approx(49 * P)  # and follows the feed again
    assert clock.discontinuities == 1
    assert clock.lost["stall"] == 50  # the 2 s outage (plus one period), in frames


def test_an_mpeg_ts_33_bit_wrap_keeps_time_going_forward_without_a_loss() -> None:
    wrap = 2**33 / 90_000  # 95,443.7 s
    clock = FeedClock(P, 30.0)
    before = run(clock, steady(wrap - 25 * P, 0.0, 25))
    after = run(clock, steady(0.0, 25 * P, 25))
    pts = before + after
    assert_monotonic(pts)
    assert pts[-1] == pytest.approx(49 * P)
    assert clock.lost == {"feed_gap": 0, "stall": 0, "reconnect": 0}


def test_a_publisher_restarted_from_zero_is_placed_at_the_wall_time() -> None:
    clock = FeedClock(P, 30.0)
    before = run(clock, steady(500.0, 0.0, 25))
    after = run(clock, steady(0.0, 11.0, 25))  # 10 s without frames, then t from 0
    assert_monotonic(before + after)
    assert after[0] == pytest.approx(11.0)
    assert clock.lost["stall"] == round((11.0 - 24 * P) / P) - 1


def test_frames_skipped_by_the_timestamps_are_counted_as_a_feed_gap() -> None:
    # A live HLS segment of 2 s left the playlist before it was read.
    clock = FeedClock(P, 30.0)
    run(clock, steady(0.0, 0.0, 50))
    run(clock, steady(50 * P + 2.0, 50 * P + 2.0, 50))
    assert clock.lost["feed_gap"] == 50
    assert clock.discontinuities == 0


def test_a_reconnection_counts_the_frames_between_connections() -> None:
    clock = FeedClock(P, 30.0)
    run(clock, steady(0.0, 0.0, 25))
    clock.connect(P)
    after = run(clock, steady(7.0, 5.0, 25))  # the new connection's own timestamps
    assert after[0] == pytest.approx(5.0)
    assert clock.lost["reconnect"] == round((5.0 - 24 * P) / P) - 1


def test_a_reader_bursting_ahead_of_real_time_is_not_a_discontinuity() -> None:
    # Live HLS: the first three 2 s segments are read within a second.
    clock = FeedClock(P, 30.0)
    burst = [(i * P, i * P / 6) for i in range(150)]
    pts = run(clock, burst)
    assert clock.discontinuities == 0
    assert pts[-1] == pytest.approx(149 * P)


def test_frames_without_timestamps_advance_by_one_period() -> None:
    clock = FeedClock(P, 30.0)
    pts = run(clock, [(None, 0.0), (None, 0.5), (None, 0.6)])
    assert pts == pytest.approx([0.0, P, 2 * P])


def test_a_silence_with_contiguous_timestamps_is_a_stall_re_anchored_at_the_wait() -> None:
    """nginx-rtmp keeps its players connected while the publisher is away, then stamps
    the publisher's next frames right after the last ones: the feed's clock paused."""
    clock = FeedClock(P, 30.0, stall_s=1.5)
    before = run(clock, steady(0.0, 0.0, 50))
    resumed = clock.pts(50 * P, 50 * P + 3.0, waited=3.0)  # 3 s waited, one period on
    assert resumed == pytest.approx(before[-1] + 3.0)  # true time: the silence shows
    assert clock.lost["stall"] == round(3.0 / P) - 1
    assert clock.discontinuities == 1
    after = clock.pts(51 * P, 50 * P + 3.0 + P, waited=P)
    assert after == pytest.approx(resumed + P)  # the feed's timestamps again, from there


@pytest.mark.parametrize(
    ("waited", "stalls", "why"),
    [
        (1.0, True, "a frame late by less than stall_s: jitter"),
        (0.0, True, "the consumer held the reader (lossless back-pressure), no wait"),
        (3.0, False, "live HLS: the reader waits for each segment"),
    ],
)
def test_no_stall_without_a_long_wait_of_the_feed_itself(
    waited: float, stalls: bool, why: str
) -> None:
    clock = FeedClock(P, 30.0, stall_s=1.5)
    clock.connect(P, stalls=stalls)
    before = run(clock, steady(0.0, 0.0, 50))
    pts = clock.pts(50 * P, 50 * P + 3.0, waited=waited)  # the wall moved 3 s regardless
    assert pts == pytest.approx(before[-1] + P), why
    assert clock.lost == {"feed_gap": 0, "stall": 0, "reconnect": 0}, why


def test_timestamps_that_skip_over_a_wait_are_a_feed_gap_not_a_stall() -> None:
    clock = FeedClock(P, 30.0, stall_s=1.5)
    before = run(clock, steady(0.0, 0.0, 50))
    pts = clock.pts(50 * P + 3.0, 50 * P + 3.0, waited=3.0)  # the timeline moved on too
    assert pts == pytest.approx(before[-1] + P + 3.0)
    assert clock.lost == {"feed_gap": round(3.0 / P), "stall": 0, "reconnect": 0}
    assert clock.discontinuities == 0


def test_a_stall_then_timestamps_that_skip_the_silence_count_it_once() -> None:
    """GStreamer's RTSP server: one stale frame after the silence, then frames stamped
    with its running clock, which skipped the silence."""
    clock = FeedClock(P, 30.0, stall_s=1.5)
    before = run(clock, steady(0.0, 0.0, 50))
    stale = clock.pts(49 * P + 0.004, 49 * P + 3.0, waited=3.0)
    fresh = clock.pts(49 * P + 3.0 + P, 49 * P + 3.0 + P, waited=P)
    assert stale == pytest.approx(before[-1] + 3.0)
    assert fresh == pytest.approx(stale + P)  # not another 3 s on
    assert clock.lost["stall"] == round(3.0 / P) - 1 and clock.lost["feed_gap"] == 0
    later = clock.pts(49 * P + 3.0 + 2 * P, 49 * P + 3.0 + 2 * P, waited=P)
    assert later == pytest.approx(fresh + P)
