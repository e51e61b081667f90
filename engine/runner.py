"""Run the pipeline over sources in this process (``veritas run``), no Redis needed.

Sources are opened first (a missing or unreadable one is reported and skipped), then
read concurrently by the :class:`~engine.batching.StreamMuxer`; every batch is
analysed and handed to the sinks at once, so records reach the JSONL file as frames
are processed. A source that fails midway keeps the records of its good frames.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from engine.batching import SourceEnded, StreamMuxer
from engine.config import Config
from engine.errors import SourceError
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
    muxer = StreamMuxer(
        config.pipeline.batch_size,
        config.pipeline.max_batch_latency_ms,
        pin_memory=pipeline.device.type == "cuda",
    )
    try:
        if out:
            sinks.append(JsonlSink(out))
        if annotate:
            sinks.append(
                AnnotatedVideoSink(
                    annotate,
                    [s.name for s in sources],
                    {s.name: output_fps(s, config) for s in sources},
                    config.pipeline.fake_threshold,
                    config.pipeline.attacked_threshold,
                    signed_maps=config.pipeline.xai_method != "saliency",
                )
            )
        for source in sources:
            summary.register(source.name)  # listed even if it yields no frame
            # Per-frame (CPU) face detection runs in the reader thread, ahead of the models.
            muxer.add(source.name, lambda s=source: pipeline.detect_ahead(_frames(s)))
        for item in muxer:
            if isinstance(item, SourceEnded):
                if item.error is not None:
                    failed(item.source, item.error)
                continue
            result = pipeline.analyze(item, job, keep_maps=annotate is not None)
            for sink in sinks:
                sink.write(result, item)
            for record in result.records:
                summary.add(record)
            if on_frames:
                on_frames(len(item))
    finally:
        muxer.close()
        for sink in sinks:
            sink.close()
    return summary.finish()
