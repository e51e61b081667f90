"""Run the pipeline over sources in this process (``veritas run``), no Redis needed.

Sources are opened first (a missing or unreadable one is reported and skipped), then
read concurrently through the frame path (:class:`~engine.framepath.FramePath`); every
batch is analysed and handed to the sinks at once, so records reach the JSONL file as
frames are processed. A source that fails midway keeps the records of its good frames.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from engine.batching import Overflow, SourceEnded
from engine.config import Config
from engine.errors import SourceError
from engine.events import EventSettings, EventSink
from engine.framepath import FramePath, FramePathSettings, Stream
from engine.frames import Frame
from engine.pipeline import Pipeline
from engine.sinks import AnnotatedVideoSink, JsonlSink, Sink
from engine.sources import Source, open_source
from engine.sources.registry import SCHEMES as OPENERS
from engine.sources.registry import url_scheme
from engine.summary import RunSummary

log = logging.getLogger(__name__)


def new_job_id(prefix: str = "run") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def output_fps(source: Source, config: Config) -> float:
    """Frame rate of the analysed (sampled) frames of ``source``."""
    if config.sources.fps:
        return config.sources.fps
    return (source.nominal_fps or 25.0) / config.sources.every


def _frames(source: Source) -> Iterator[Frame]:
    with source:
        yield from source


def run_local(
    specs: list[str],
    config: Config,
    out: str | Path | None = None,
    annotate: str | Path | None = None,
    job: str | None = None,
    pipeline: Pipeline | None = None,
    on_start: Callable[[int | None], None] | None = None,
    on_frames: Callable[[int], None] | None = None,
    on_source_error: Callable[[str, BaseException], None] | None = None,
    realtime: bool = False,
    events: EventSettings | None = None,
) -> RunSummary:
    """Analyse ``specs`` (files, folders); write records to ``out`` and video to ``annotate``.

    ``realtime``: live feeds drop frames when the analysis falls behind (the worker's
    real-time mode: ``queue.live_buffer_frames``, the ``queue.live_max_lag_s`` budget);
    files are always read whole. ``events``: verdict events (:mod:`engine.events`) go to
    ``out`` too, as lines with ``"type": "event"``.

    ``on_start(estimated_frames)`` is called once the sources are open (None when some
    source's length is unknown), ``on_frames(n)`` after each batch, and
    ``on_source_error(name, error)`` when a source fails (default: log it).
    """
    pipeline = pipeline or Pipeline.from_config(config)
    job = job or new_job_id()
    summary = RunSummary(weights=pipeline.weights_status)

    def failed(name: str, error: BaseException) -> None:
        summary.fail(name, error)
        if on_source_error:
            on_source_error(name, error)
        else:
            log.error("%s", error)

    sources: list[Source] = []
    for spec in specs:
        try:
            sources.append(_open(spec, config))
        except SourceError as e:
            failed(spec, e)
    if not sources:
        return summary.finish()

    if on_start:
        estimates = [s.estimated_frames for s in sources]
        on_start(None if None in estimates else sum(e or 0 for e in estimates))
    sinks: list[Sink] = []
    if out:
        jsonl = JsonlSink(out)
        sinks.append(jsonl)
        if events is not None:
            sinks.append(EventSink(jsonl.write_line, events, maps=events.maps))
    if annotate:
        sinks.append(AnnotatedVideoSink(annotate))
    path = FramePath(pipeline, FramePathSettings.from_config(config), sinks)
    try:
        _run_path(path, sources, summary, failed, job, config, on_frames, realtime)
    except KeyboardInterrupt:
        # Ctrl-C: the frame path has closed (its sinks flushed whole records); the
        # summary covers the frames analysed so far.
        summary.interrupted = True
    return summary.finish()


def _open(spec: str, config: Config) -> Source:
    """A file, folder or URL; live feeds with the ``[queue] live_*`` settings, as in
    workers."""
    scheme = url_scheme(spec)
    if scheme is None or scheme == "file":
        return open_source(spec, config.sources)
    from engine.sources.live import LiveFeedSource, live_settings, open_live  # PyAV

    if OPENERS.find(scheme) is open_live:
        return LiveFeedSource(spec, config.sources, live_settings(config.queue))
    return open_source(spec, config.sources)


def _run_path(
    path: FramePath,
    sources: list[Source],
    summary: RunSummary,
    failed: Callable[[str, BaseException], None],
    job: str,
    config: Config,
    on_frames: Callable[[int], None] | None,
    realtime: bool,
) -> None:
    q = config.queue
    live = {s.name: s for s in sources if _is_live(s)}
    with path:
        for source in sources:
            summary.register(source.name)  # listed even if it yields no frame
            gated = realtime and source.name in live
            path.add(
                Stream(
                    source.name,
                    lambda s=source: _frames(s),
                    job=job,
                    fps=output_fps(source, config),
                    overflow=Overflow.DROP_OLDEST if gated else Overflow.BLOCK,
                    depth=q.live_buffer_frames if source.name in live else None,
                    max_lag_s=(q.live_max_lag_s or None) if gated else None,
                )
            )
            if source.name in live:
                summary.watch(
                    source.name,
                    path.latency(source.name),
                    lambda s=source: {"realtime": path.dropped(s.name), **live[s.name].lost},
                )
        for step in path.run():
            if isinstance(step, SourceEnded):
                feed = live.get(step.source)
                if feed is not None:
                    summary.feed_ended(step.source, step.dropped, feed.lost)
                if step.error is not None:
                    failed(step.source, step.error)
                continue
            for record in step.records:
                summary.add(record)
            if on_frames:
                on_frames(step.frames)


def _is_live(source: Source) -> bool:
    """A live feed (``engine.sources.live``, which needs PyAV: only loaded when opened)."""
    live = sys.modules.get("engine.sources.live")
    return live is not None and isinstance(source, live.LiveFeedSource)
