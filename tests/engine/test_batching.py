"""The stream muxer: shared batches, per-source order, latency bound, errors, bounded memory."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from engine.batching import SourceEnded, StreamMuxer
from engine.frames import Frame, FrameBatch


def frames(name: str, n: int, size: int = 8, delay: float = 0.0, fail_after: int | None = None):
    def gen():
        for i in range(n):
            if fail_after is not None and i == fail_after:
                raise RuntimeError(f"{name} broke at {i}")
            if delay:
                time.sleep(delay)
            yield Frame(name, i, i / 25, np.full((size, size + i % 3, 3), i, np.uint8))

    return gen


def drain(muxer: StreamMuxer) -> list:
    return list(muxer)


def test_frames_of_several_sources_share_batches_in_order():
    mux = StreamMuxer(batch_size=4, max_latency_ms=1000)
    mux.add("a", frames("a", 7))
    mux.add("b", frames("b", 5))
    items = drain(mux)
    batches = [i for i in items if isinstance(i, FrameBatch)]
    assert all(len(b) <= 4 for b in batches)
    assert sum(len(b) for b in batches) == 12
    seen = {"a": [], "b": []}
    for b in batches:
        for s, idx in zip(b.sources, b.indices, strict=True):
            seen[s].append(idx)
    assert seen == {"a": list(range(7)), "b": list(range(5))}
    ended = [i for i in items if isinstance(i, SourceEnded)]
    assert sorted((e.source, e.frames, e.error) for e in ended) == [("a", 7, None), ("b", 5, None)]
    # Every source's end comes after the batch with its last frame.
    for e in ended:
        last = max(
            k for k, it in enumerate(items) if isinstance(it, FrameBatch) and e.source in it.sources
        )
        assert items.index(e) > last


def test_padded_batches_keep_true_sizes():
    mux = StreamMuxer(batch_size=3, max_latency_ms=1000)
    mux.add("a", frames("a", 3))
    batch = next(i for i in mux if isinstance(i, FrameBatch))
    assert batch.images.shape == (3, 8, 10, 3)
    assert batch.sizes.tolist() == [[8, 8], [8, 9], [8, 10]]
    assert batch.frame(1).shape == (8, 9, 3)


def test_partial_batch_leaves_when_oldest_frame_waited_max_latency():
    mux = StreamMuxer(batch_size=64, max_latency_ms=30)
    mux.add("slow", frames("slow", 6, delay=0.02))
    batches = [i for i in drain(mux) if isinstance(i, FrameBatch)]
    assert len(batches) >= 2, "the muxer waited for a full batch instead of the latency bound"
    assert sum(len(b) for b in batches) == 6


def test_source_error_is_reported_after_its_good_frames():
    mux = StreamMuxer(batch_size=2, max_latency_ms=1000)
    mux.add("bad", frames("bad", 10, fail_after=3))
    mux.add("good", frames("good", 4))
    items = drain(mux)
    bad_frames = [
        i
        for it in items
        if isinstance(it, FrameBatch)
        for s, i in zip(it.sources, it.indices, strict=True)
        if s == "bad"
    ]
    assert bad_frames == [0, 1, 2]
    end = next(i for i in items if isinstance(i, SourceEnded) and i.source == "bad")
    assert isinstance(end.error, RuntimeError) and end.frames == 3
    assert any(isinstance(i, SourceEnded) and i.source == "good" and i.error is None for i in items)


def test_readers_run_at_most_queue_depth_ahead():
    produced = []

    def gen():
        for i in range(200):
            produced.append(i)
            yield Frame("fast", i, 0.0, np.zeros((4, 4, 3), np.uint8))

    mux = StreamMuxer(batch_size=1, max_latency_ms=1000, queue_depth=4)
    mux.add("fast", lambda: gen())
    it = iter(mux)
    next(it)
    time.sleep(0.3)  # the reader would decode all 200 frames if it were unbounded
    assert len(produced) <= 1 + 4 + 2
    mux.close()


def test_closing_early_stops_reader_threads_and_closes_sources():
    closed = threading.Event()

    def gen():
        try:
            for i in range(10_000):
                yield Frame("long", i, 0.0, np.zeros((4, 4, 3), np.uint8))
        finally:
            closed.set()

    before = threading.active_count()
    mux = StreamMuxer(batch_size=2, max_latency_ms=1000, queue_depth=2)
    mux.add("long", lambda: gen())
    for item in mux:
        if isinstance(item, FrameBatch):
            break
    mux.close()
    assert closed.wait(5), "the source generator was not closed"
    assert threading.active_count() <= before


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch_size"):
        StreamMuxer(batch_size=0, max_latency_ms=1)
