"""Run the pipeline over sources in this process (``veritas run``), no Redis needed.

Sources are opened first (a missing or unreadable one is reported and skipped), then
read concurrently through the frame path (:class:`~engine.framepath.FramePath`); every
batch is analysed and handed to the sinks at once, so records reach the JSONL file as
frames are processed. A source that fails midway keeps the records of its good frames.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from engine.batching import SourceEnded
from engine.config import Config
from engine.errors import SourceError
from engine.framepath import FramePath, FramePathSettings, Stream
from engine.frames import Frame
from engine.pipeline import Pipeline
from engine.sinks import AnnotatedVideoSink, JsonlSink, Sink
from engine.sources import Source, open_source
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
) -> RunSummary:
    """Analyse ``specs`` (files, folders); write records to ``out`` and video to ``annotate``.

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
            sources.append(open_source(spec, config.sources))
        except SourceError as e:
            failed(spec, e)
    if not sources:
        return summary.finish()

    if on_start:
        estimates = [s.estimated_frames for s in sources]
        on_start(None if None in estimates else sum(e or 0 for e in estimates))
    sinks: list[Sink] = []
    if out:
        sinks.append(JsonlSink(out))
    if annotate:
        sinks.append(AnnotatedVideoSink(annotate))
    path = FramePath(pipeline, FramePathSettings.from_config(config), sinks)
    try:
        _run_path(path, sources, summary, failed, job, config, on_frames)
    except KeyboardInterrupt:
        # Ctrl-C: the frame path has closed (its sinks flushed whole records); the
        # summary covers the frames analysed so far.
        summary.interrupted = True
    return summary.finish()


def _run_path(
    path: FramePath,
    sources: list[Source],
    summary: RunSummary,
    failed: Callable[[str, BaseException], None],
    job: str,
    config: Config,
    on_frames: Callable[[int], None] | None,
) -> None:
    with path:
        for source in sources:
            summary.register(source.name)  # listed even if it yields no frame
            path.add(
                Stream(
                    source.name,
                    lambda s=source: _frames(s),
                    job=job,
                    fps=output_fps(source, config),
                )
            )
        for step in path.run():
            if isinstance(step, SourceEnded):
                if step.error is not None:
                    failed(step.source, step.error)
                continue
            for record in step.records:
                summary.add(record)
            if on_frames:
                on_frames(step.frames)
