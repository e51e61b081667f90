"""The frame path: streams -> reader threads (decode, detection ahead) -> batches -> analysis
-> sinks, with stream keys apart from displayed names and per-stream failure isolation.

A stand-in pipeline records where and how each stage ran; the real models go through the
same object in ``veritas run`` (tests/engine/test_cli.py), the worker (tests/engine/queue)
and the benchmarks (tests/benchmarks).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import pytest
import torch

from engine.batching import Overflow, SourceEnded
from engine.framepath import Analysed, FramePath, FramePathSettings, Stream
from engine.frames import Frame, FrameBatch
from engine.pipeline import BatchResult
from engine.records import FrameRecord
from engine.sinks import Sink


class Recorder:
    """A pipeline stand-in: boxes found ahead name the thread that found them; records
    carry the job of their stream; frames of ``poison`` jobs make a batch raise."""

    device = torch.device("cpu")
    batched_detector = False

    def __init__(self, poison: str | None = None) -> None:
        self.poison = poison
        self.keep_maps: list[bool] = []
        self.ahead_threads: set[str] = set()
        self.ahead = 0
        """Frames given per-frame work (detection ahead)."""
        self.lock = threading.Lock()

    def stream_ended(self, stream: str) -> None:
        pass  # no per-stream state

    def detect_ahead(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        for frame in frames:
            with self.lock:
                self.ahead_threads.add(threading.current_thread().name)
                self.ahead += 1
            yield dataclasses.replace(frame, boxes=torch.zeros(0, 5))

    def analyze(
        self, batch: FrameBatch, job: str | Mapping[str, str] = "", keep_maps: bool = False
    ) -> BatchResult:
        assert all(b is not None for b in batch.boxes), "a frame reached analysis undetected"
        jobs = [job if isinstance(job, str) else job[k] for k in batch.streams]
        if self.poison in jobs:
            raise RuntimeError("a model failed on these frames")
        self.keep_maps.append(keep_maps)
        records = [
            FrameRecord(j, s, i, p, (), "untrained")
            for j, s, i, p in zip(jobs, batch.sources, batch.indices, batch.pts, strict=True)
        ]
        return BatchResult(records, None, {})  # type: ignore[arg-type]


class Log(Sink):
    """A sink that records what it heard, in order."""

    def __init__(self, keeps_maps: bool = False) -> None:
        self.keeps_maps = keeps_maps
        self.events: list[tuple[str, object]] = []
        self.records: list[FrameRecord] = []

    def stream_started(self, stream: Stream) -> None:
        self.events.append(("start", stream.key))

    def write(self, result: BatchResult, batch: FrameBatch) -> None:
        assert [r.frame for r in result.records] == batch.indices
        self.records += result.records
        self.events.append(("write", tuple(batch.streams)))

    def stream_ended(self, ended: SourceEnded) -> None:
        self.events.append(("end", ended.source))

    def close(self) -> None:
        self.events.append(("close", None))


def frames(source: str, n: int, size: int = 8) -> list[Frame]:
    return [
        Frame(source, i, i / 25, np.full((size, size + i % 2, 3), i, np.uint8)) for i in range(n)
    ]


def settings(batch_size: int = 3) -> FramePathSettings:
    return FramePathSettings(batch_size=batch_size, max_latency_ms=20.0)


def test_streams_keyed_apart_from_their_displayed_source_reach_the_sinks_in_order():
    pipeline, sink = Recorder(), Log()
    path = FramePath(pipeline, settings(), [sink])
    # two streams of the same displayed source (one camera, two jobs): keys tell them apart
    path.add(Stream("cam#1-aa", lambda: frames("rtsp://cam", 5), job="job-1"))
    path.add(Stream("cam#2-bb", lambda: frames("rtsp://cam", 4), job="job-2"))
    steps = list(path.run())
    ended = [s for s in steps if isinstance(s, SourceEnded)]
    assert sorted((e.source, e.frames, e.error) for e in ended) == [
        ("cam#1-aa", 5, None),
        ("cam#2-bb", 4, None),
    ]
    assert sum(s.frames for s in steps if isinstance(s, Analysed)) == 9
    by_job: dict[str, list[int]] = {}
    for r in sink.records:
        assert r.source == "rtsp://cam"  # the displayed name, as the source gave it
        by_job.setdefault(r.job, []).append(r.frame)
    assert by_job == {"job-1": [0, 1, 2, 3, 4], "job-2": [0, 1, 2, 3]}
    kinds = [k for k, _ in sink.events]
    assert kinds[:2] == ["start", "start"] and kinds[-1] == "close"
    for key in ("cam#1-aa", "cam#2-bb"):  # a stream's end comes after its last write
        end = sink.events.index(("end", key))
        writes = [i for i, (k, v) in enumerate(sink.events) if k == "write" and key in v]
        assert writes and max(writes) < end


def test_detection_runs_ahead_in_each_streams_reader_thread():
    pipeline = Recorder()
    path = FramePath(pipeline, settings(), [Log()])
    for k in range(3):
        path.add(Stream(f"s{k}", lambda k=k: frames(f"file{k}", 4)))
    list(path.run())
    # Recorder.analyze refuses undetected frames; detection ran in the readers, not here
    assert len(pipeline.ahead_threads) == 3
    assert threading.current_thread().name not in pipeline.ahead_threads


@pytest.mark.parametrize("keeps", [(False,), (False, True)])
def test_the_pipeline_keeps_maps_only_when_a_sink_needs_them(keeps):
    pipeline = Recorder()
    path = FramePath(pipeline, settings(), [Log(k) for k in keeps])
    path.add(Stream("s", lambda: frames("f", 4)))
    list(path.run())
    assert pipeline.keep_maps and set(pipeline.keep_maps) == {any(keeps)}


def test_a_stream_whose_frames_fail_is_stopped_while_the_others_go_on():
    pipeline, sink = Recorder(poison="bad"), Log()
    failed: list[tuple[str, str]] = []
    path = FramePath(
        pipeline, settings(4), [sink], on_stream_error=lambda k, e: failed.append((k, str(e)))
    )
    path.add(Stream("good", lambda: frames("g", 12), job="ok"))
    path.add(Stream("bad", lambda: frames("b", 12), job="bad"))
    ended = {s.source: s for s in path.run() if isinstance(s, SourceEnded)}
    assert failed and {k for k, _ in failed} == {"bad"} and "a model failed" in failed[0][1]
    assert [r.frame for r in sink.records if r.job == "ok"] == list(range(12))
    assert not [r for r in sink.records if r.job == "bad"]
    assert ended["good"].error is None and not ended["good"].stopped
    assert ended["bad"].stopped


def test_without_an_error_handler_a_failing_batch_raises():
    path = FramePath(Recorder(poison="bad"), settings(), [Log()])
    path.add(Stream("bad", lambda: frames("b", 3), job="bad"))
    with pytest.raises(RuntimeError, match="a model failed"):
        list(path.run())


def test_a_real_time_stream_drops_its_oldest_frames_and_counts_them():
    release = threading.Event()
    pipeline, sink = Recorder(), Log()
    path = FramePath(pipeline, settings(1), [sink])

    def fast() -> Iterator[Frame]:
        yield from frames("live", 30)
        release.set()

    path.add(Stream("live", fast, overflow=Overflow.DROP_OLDEST, depth=2))
    release.wait(10)  # the reader outran a consumer that has not started
    ended = [s for s in path.run() if isinstance(s, SourceEnded)]
    assert ended[0].dropped == 30 - len(sink.records) > 0
    assert [r.frame for r in sink.records][-2:] == [28, 29]  # the freshest frames kept
    # Dropped before the per-frame work: only the frames analysed were detected.
    assert pipeline.ahead == len(sink.records)


def test_a_real_time_stream_drops_frames_over_its_lag_budget_before_detection():
    now = time.time()
    stale = [dataclasses.replace(f, arrived=now - 30) for f in frames("live", 10)]
    fresh = [dataclasses.replace(f, index=10 + f.index) for f in frames("live", 5)]
    pipeline, sink = Recorder(), Log()
    path = FramePath(pipeline, settings(1), [sink])
    path.add(
        Stream("live", lambda: stale + fresh, overflow=Overflow.DROP_OLDEST, depth=64, max_lag_s=5)
    )
    ended = [s for s in path.run() if isinstance(s, SourceEnded)]
    assert [r.frame for r in sink.records] == [10, 11, 12, 13, 14]
    assert ended[0].dropped == 10
    assert pipeline.ahead == 5


def test_a_slow_analysis_keeps_a_real_time_stream_within_its_lag_budget():
    """25 fps into an analysis of 5 frames/s with 32 frames of buffers: without the budget
    the lag would reach about 32 / 5 = 6.4 s; with a 0.5 s budget no frame is analysed
    more than 0.5 s after it arrived (records: the budget plus one batch)."""

    class Slow(Recorder):
        def analyze(self, batch, job="", keep_maps=False):  # type: ignore[no-untyped-def]
            time.sleep(0.2)
            return super().analyze(batch, job, keep_maps)

    def feed() -> Iterator[Frame]:
        for f in frames("live", 100):
            time.sleep(0.04)
            yield dataclasses.replace(f, arrived=time.time())

    pipeline, sink = Slow(), Log()
    path = FramePath(pipeline, settings(1), [sink])
    path.add(Stream("live", feed, overflow=Overflow.DROP_OLDEST, depth=16, max_lag_s=0.5))
    latency = path.latency("live")
    ended = [s for s in path.run() if isinstance(s, SourceEnded)]
    assert latency is not None and latency.count == len(sink.records) > 5
    summary = latency.summary()
    assert summary is not None and summary["max_ms"] < 0.5 * 1000 + 1000  # budget + slack
    assert ended[0].dropped == 100 - len(sink.records) > 50


def test_stages_say_where_detection_runs():
    path = FramePath(Recorder(), settings())
    stages = {s.name: s for s in path.stages()}
    assert stages["detect-ahead"].runs_in.startswith("reader thread")
    batched = Recorder()
    batched.batched_detector = True
    stages = {s.name: s for s in FramePath(batched, settings()).stages()}
    assert "detect-ahead" not in stages and stages["detect"].runs_in.startswith("consumer")
    assert [s.name for s in FramePath(batched, settings()).stages()][-2:] == ["analyse", "sinks"]


def test_a_batch_subset_keeps_each_frames_stream_size_and_pixels():
    batch = FrameBatch.from_frames(
        [*frames("a", 2, size=4), *frames("b", 2, size=6)], streams=["ka", "ka", "kb", "kb"]
    )
    sub = batch.subset(batch.rows_of("ka"))
    assert sub.streams == ["ka", "ka"] and sub.sources == ["a", "a"] and sub.indices == [0, 1]
    assert sub.images.shape[1:3] == (4, 5)  # padded to its own largest frame only
    for k in range(2):
        assert np.array_equal(sub.frame(k), batch.frame(k))
