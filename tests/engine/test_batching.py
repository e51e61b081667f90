"""The stream muxer: shared batches, per-source order, latency bound, errors, bounded memory."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from engine.batching import Overflow, SourceEnded, StreamMuxer
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


@pytest.mark.parametrize("as_tensor", [False, True], ids=["host arrays", "device tensors"])
def test_a_stacked_batch_is_zero_beyond_each_frame_whatever_was_in_memory(as_tensor):
    """Batches are stacked into uninitialised memory (no memset of the whole batch): the
    padding of each frame must still be zero, for host frames and frames already on the
    batch's device (here the CPU, as NVDEC's or uploaded frames are on a GPU)."""
    import torch

    shapes = [(4, 6), (2, 3), (4, 2), (1, 6)]
    for _ in range(3):  # new batches land in memory the previous ones used
        pictures = [np.full((h, w, 3), 200 + i, np.uint8) for i, (h, w) in enumerate(shapes)]
        images = [torch.from_numpy(p) if as_tensor else p for p in pictures]
        batch = FrameBatch.from_frames([Frame("s", i, 0.0, im) for i, im in enumerate(images)])
        for i, (h, w) in enumerate(shapes):
            row = batch.images[i]
            assert (row[:h, :w] == 200 + i).all()
            assert int(row.sum()) == (200 + i) * h * w * 3  # nothing else but zeros
        del batch


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


def indices_by_source(items: list) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = {}
    for it in items:
        if isinstance(it, FrameBatch):
            for s, i in zip(it.sources, it.indices, strict=True):
                seen.setdefault(s, []).append(i)
    return seen


def test_a_realtime_source_drops_its_oldest_frames_when_behind_and_counts_them():
    finished = threading.Event()

    def live():
        try:
            for i in range(50):
                yield Frame("live", i, i / 25, np.zeros((4, 4, 3), np.uint8))
        finally:
            finished.set()

    mux = StreamMuxer(batch_size=2, max_latency_ms=1000, queue_depth=4)
    mux.add("live", live, overflow=Overflow.DROP_OLDEST)
    mux.add("file", frames("file", 30))  # lossless beside it
    assert finished.wait(5), "a real-time reader must never wait for the consumer"
    assert mux.dropped("live") == 46
    items = drain(mux)
    seen = indices_by_source(items)
    assert seen["live"] == [46, 47, 48, 49]  # the freshest frames are kept, in order
    assert seen["file"] == list(range(30))  # the lossless source lost nothing
    end = next(i for i in items if isinstance(i, SourceEnded) and i.source == "live")
    assert (end.frames, end.dropped, end.error) == (50, 46, None)


def test_stopping_one_source_discards_its_frames_while_the_others_go_on():
    mux = StreamMuxer(batch_size=4, max_latency_ms=1000, queue_depth=4)
    mux.add("stopped", frames("stopped", 10_000))
    mux.add("kept", frames("kept", 12))
    first = mux.poll(5)
    assert isinstance(first, FrameBatch)
    mux.stop("stopped")
    items = [first, *drain(mux)]
    seen = indices_by_source(items)
    assert seen["kept"] == list(range(12))
    assert len(seen.get("stopped", [])) < 10_000
    end = next(i for i in items if isinstance(i, SourceEnded) and i.source == "stopped")
    assert end.stopped and end.error is None


def test_an_open_muxer_waits_for_sources_added_later():
    mux = StreamMuxer(batch_size=2, max_latency_ms=10, keep_open=True)
    assert mux.poll(0.05) is None  # nothing yet, and the muxer does not end
    mux.add("late", frames("late", 3))
    got = []
    while not got or not isinstance(got[-1], SourceEnded):
        item = mux.poll(5)
        assert item is not None, "a frame or the end should have come within 5 s"
        got.append(item)
    assert sum(len(b) for b in got if isinstance(b, FrameBatch)) == 3
    mux.add("late", frames("late", 1))  # the name is free again once it ended
    mux.close()
    assert mux.poll(0.01) is None
