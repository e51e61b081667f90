"""The frame path: sources → decode → detection ahead → cross-stream batching → analysis → sinks.

One object, :class:`FramePath`, owns the whole way a frame travels, for ``veritas run``
(:mod:`engine.runner`), the queue worker and ``veritas bench`` alike. Callers declare
streams (:class:`Stream`) and sinks; they never wire the muxer, the reader-thread face
detection or the sinks by hand, so no caller can leave a stage out.

Its stages, and where each one runs (:meth:`FramePath.stages` says it for a given
pipeline):

============  ======================  =====================================================
stage         runs in                 what it does
============  ======================  =====================================================
decode        a reader thread         the stream's source decodes frames (host memory, or
              per stream (real time:  device tensors where a decoder leaves them on a GPU);
              a gate thread)          real time: into a drop-oldest gate, so frames are
                                      dropped before any per-frame work
                                      (:mod:`engine.realtime`)
detect-ahead  the reader thread       a per-frame (CPU) face detector finds the boxes as
                                      frames are decoded, overlapping the model stages;
                                      a batched detector (RetinaFace) is left to analyse
upload        the reader thread       CUDA only: host frames to the device from pinned
                                      memory on a side stream (``engine.upload``),
                                      overlapping the analysis of the batches before
batch         the muxer               frames of every stream into one ``FrameBatch``:
                                      ``batch_size`` frames or ``max_latency_ms``; on a
                                      GPU stacked on the device (the compute stream waits
                                      for each frame's upload event, no host wait); a
                                      bounded buffer per stream (real time: frames over
                                      the lag budget dropped here)
analyse       the consumer            ``Pipeline.analyze``: detect (batched), crop,
                                      classify + XAI, Detect-ResNet50, on the device
sinks         the consumer            every sink gets each analysed batch, and the start
                                      and end of each stream
============  ======================  =====================================================

Runtime settings (:class:`FramePathSettings`: batch size, latency, buffer depth) are
apart from the graph. A stream is keyed by an opaque :attr:`Stream.key` (unique among
the streams being read; a worker's key names a job's attempt), apart from the name
shown in records (the source's own, with any credentials redacted by the source).

**Failures.** A stream whose source fails ends with the error, after its good frames
were analysed (``SourceEnded.error``). With ``on_stream_error`` set, a batch whose
analysis raises is analysed again one stream at a time: the streams whose frames fail
are reported there and stopped, the others go on. Without it, the error propagates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.batching import DEFAULT_QUEUE_DEPTH, Overflow, SourceEnded, StreamMuxer
from engine.frames import Frame, FrameBatch
from engine.realtime import LatencyWindow, RealTimeGate

if TYPE_CHECKING:
    from engine.config import Config
    from engine.pipeline import BatchResult, Pipeline
    from engine.records import FrameRecord
    from engine.sinks import Sink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FramePathSettings:
    """How the frame path batches: runtime settings, apart from its stages."""

    batch_size: int
    max_latency_ms: float
    """A batch goes out when its oldest frame has waited this long, full or not."""
    queue_depth: int = DEFAULT_QUEUE_DEPTH
    """Frames each stream may decode ahead of the analysis (unless its own ``depth``)."""
    keep_open: bool = False
    """Keep running with no stream (a worker adds jobs' streams as they come)."""

    @classmethod
    def from_config(cls, config: Config, keep_open: bool = False) -> FramePathSettings:
        p = config.pipeline
        return cls(p.batch_size, p.max_batch_latency_ms, keep_open=keep_open)


@dataclass(frozen=True)
class Stage:
    """One stage of the frame path: its name, where it runs and on which device."""

    name: str
    runs_in: str
    device: str


@dataclass(frozen=True)
class Stream:
    """A stream to read: ``open()`` is called in its reader thread and yields its frames."""

    key: str
    """Opaque and unique among the streams being read (``FrameBatch.streams``)."""
    open: Callable[[], Iterable[Frame]]
    job: str = ""
    """The job its records belong to (``FrameRecord.job``)."""
    fps: float | None = None
    """Frame rate of its analysed frames, when known (an annotated video uses it)."""
    overflow: Overflow = Overflow.BLOCK
    """What its full buffer does: wait (lossless) or drop the oldest frame (real time)."""
    depth: int | None = None
    """Frames buffered for it (default ``FramePathSettings.queue_depth``)."""
    max_lag_s: float | None = None
    """Real time only: drop frames that arrived longer ago than this before they are
    batched (the lag budget; None: only the buffer bounds the lag)."""


@dataclass(frozen=True)
class Analysed:
    """One batch through the analysis, already handed to the sinks: one part, or one
    per stream when the batch failed and its streams were analysed apart."""

    parts: tuple[tuple[FrameBatch, BatchResult], ...]

    @property
    def records(self) -> list[FrameRecord]:
        return [r for _, result in self.parts for r in result.records]

    @property
    def frames(self) -> int:
        return sum(len(batch) for batch, _ in self.parts)


Step = Analysed | SourceEnded


class FramePath:
    """Streams through ``pipeline`` into ``sinks`` (see the module doc).

    Use :meth:`run` to read every stream to its end, or :meth:`step` in a loop that does
    other work between batches (a queue worker). ``on_stream_error(key, error)`` turns
    on per-stream failure isolation of the analysis.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        settings: FramePathSettings,
        sinks: Iterable[Sink] = (),
        on_stream_error: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.sinks: list[Sink] = list(sinks)
        self.on_stream_error = on_stream_error
        self.keep_maps = any(s.keeps_maps for s in self.sinks)
        self._jobs: dict[str, str] = {}
        self._gates: dict[str, RealTimeGate] = {}
        self._latency: dict[str, LatencyWindow] = {}
        self._closed = False
        self._muxer = StreamMuxer(
            settings.batch_size,
            settings.max_latency_ms,
            queue_depth=settings.queue_depth,
            pin_memory=getattr(pipeline.device, "type", "cpu") == "cuda",
            keep_open=settings.keep_open,
        )

    # --- the graph ----------------------------------------------------------------------

    def stages(self) -> list[Stage]:
        """The stages in order, with where each runs and its device."""
        device = str(getattr(self.pipeline.device, "type", self.pipeline.device))
        batched = bool(getattr(self.pipeline, "batched_detector", False))
        detect = (
            Stage("detect", "consumer (batched, in analyse)", device)
            if batched
            else Stage("detect-ahead", "reader thread per stream", "cpu")
        )
        stages = [Stage("decode", "reader thread per stream", "the source's decoder"), detect]
        if device == "cuda":
            stages.append(Stage("upload", "reader thread per stream", "pinned host -> cuda"))
        return [
            *stages,
            Stage("batch", "muxer", "cuda" if device == "cuda" else "host"),
            Stage("analyse", "consumer", device),
            Stage("sinks", "consumer", "cpu"),
        ]

    # --- streams ------------------------------------------------------------------------

    def add(self, stream: Stream) -> None:
        """Start reading ``stream``: decode and face detection in its own reader thread
        (real time: decode in a gate's thread of its own, the drop before detection)."""
        self._jobs[stream.key] = stream.job
        self._latency[stream.key] = LatencyWindow()
        for sink in self.sinks:
            sink.stream_started(stream)
        depth = stream.depth or self.settings.queue_depth
        if stream.overflow is Overflow.DROP_OLDEST:
            gate = RealTimeGate(stream.open(), depth, stream.max_lag_s)
            self._gates[stream.key] = gate
            self._muxer.add(
                stream.key,
                lambda: self._ahead(gate),
                Overflow.BLOCK,  # the gate drops, before the per-frame work
                depth=depth,
                max_lag_s=stream.max_lag_s,
            )
        else:
            self._muxer.add(
                stream.key,
                lambda: self._ahead(stream.open()),
                stream.overflow,
                depth=depth,
            )

    def _ahead(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        """A stream's per-frame work in its reader thread: face detection ahead, then (on
        a CUDA pipeline) the upload of host frames to the device (:mod:`engine.upload`)."""
        frames = self.pipeline.detect_ahead(frames)
        device = self.pipeline.device
        if getattr(device, "type", "cpu") == "cuda":
            from engine.upload import FrameUploader

            frames = FrameUploader(device)(frames)
        return iter(frames)

    def stop(self, key: str) -> None:
        """Stop reading stream ``key`` and discard its frames not yet batched; a
        ``SourceEnded`` with ``stopped=True`` follows."""
        self._muxer.stop(key)

    def dropped(self, key: str) -> int:
        """Frames of stream ``key`` dropped so far to stay in real time (its gate's full
        buffer, frames over its lag budget)."""
        gate = self._gates.get(key)
        return self._muxer.dropped(key) + (gate.dropped if gate else 0)

    def latency(self, key: str) -> LatencyWindow | None:
        """Arrival-to-record latency of stream ``key``'s recent records."""
        return self._latency.get(key)

    @property
    def active(self) -> int:
        """Streams whose end has not been delivered yet."""
        return self._muxer.active

    # --- running ------------------------------------------------------------------------

    def step(self, timeout: float | None = None) -> Step | None:
        """Analyse the next batch into the sinks, or deliver the next stream end; None
        when nothing was ready within ``timeout`` seconds (None: wait)."""
        item = self._muxer.poll(timeout)
        if item is None:
            return None
        if isinstance(item, SourceEnded):
            return self._ended(item)
        return self._analyse(item)

    def run(self) -> Iterator[Step]:
        """Every step until every stream has ended (``keep_open``: until :meth:`close`)."""
        try:
            while self.settings.keep_open or self.active:
                step = self.step(0.1)
                if step is not None:
                    yield step
        finally:
            self.close()

    def close(self) -> None:
        """Stop the reader threads, then close the sinks (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._muxer.close()
        finally:
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception:
                    log.exception("frame path: closing sink %s failed", type(sink).__name__)

    def __enter__(self) -> FramePath:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- inside a step ------------------------------------------------------------------

    def _ended(self, ended: SourceEnded) -> SourceEnded:
        self.pipeline.stream_ended(ended.source)
        self._jobs.pop(ended.source, None)
        self._latency.pop(ended.source, None)
        gate = self._gates.pop(ended.source, None)
        if gate is not None:
            ended = replace(ended, dropped=ended.dropped + gate.dropped)
        for sink in self.sinks:
            sink.stream_ended(ended)
        return ended

    def _analyse(self, batch: FrameBatch) -> Analysed:
        try:
            result = self.pipeline.analyze(batch, self._jobs, keep_maps=self.keep_maps)
        except Exception:
            if self.on_stream_error is None:
                raise
            log.exception(
                "frame path: a batch of %d frames failed; analysing its streams apart",
                len(batch),
            )
            return self._analyse_apart(batch)
        self._measure(batch)
        for sink in self.sinks:
            sink.write(result, batch)
        return Analysed(((batch, result),))

    def _measure(self, batch: FrameBatch) -> None:
        now = time.time()
        for key, arrived in zip(batch.streams, batch.arrived, strict=False):
            window = self._latency.get(key)
            if window is not None and arrived is not None:
                window.add(now - arrived)

    def _analyse_apart(self, batch: FrameBatch) -> Analysed:
        """Each stream's frames of ``batch`` alone; the streams whose frames fail are
        stopped and reported to ``on_stream_error``."""
        assert self.on_stream_error is not None
        parts = []
        for key in dict.fromkeys(batch.streams):
            sub = batch.subset(batch.rows_of(key))
            try:
                result = self.pipeline.analyze(sub, self._jobs, keep_maps=self.keep_maps)
            except Exception as error:
                self.stop(key)
                self.on_stream_error(key, error)
                continue
            self._measure(sub)
            for sink in self.sinks:
                sink.write(result, sub)
            parts.append((sub, result))
        return Analysed(tuple(parts))
