"""Opening a job's source in its reader thread: files and folders through the source
registry, live feeds with the worker's live settings, resumed where the job left off."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

from engine.config import Config
from engine.frames import Frame
from engine.queue.running import RunningJob
from engine.sources import Source, SourceSettings, open_source
from engine.sources.confine import Confinement
from engine.sources.live import LiveFeedSource, LiveSettings


def source_settings(config: Config, job: RunningJob) -> SourceSettings:
    """``[sources]`` with the job's own sampling and its duration limit applied."""
    s, spec, q = config.sources, job.spec, config.queue
    fps, every = s.fps, s.every
    if spec.fps is not None:
        fps, every = spec.fps, 1
    elif spec.every is not None:
        fps, every = None, spec.every
    limit = spec.max_duration_s or q.max_job_duration_s or None
    if job.live:
        duration = limit or math.inf
    else:
        duration = min(s.max_duration_s, limit) if limit else s.max_duration_s
    return dataclasses.replace(s, fps=fps, every=every, max_duration_s=duration)


def open_job_source(config: Config, live: LiveSettings, job: RunningJob) -> Source:
    """The job's source, open; a live feed starts at the job's next frame number."""
    settings = source_settings(config, job)
    if job.live:
        return LiveFeedSource(
            job.spec.source,
            settings,
            live,
            start_index=job.resume_from,
            epoch=job.epoch,
            stop=job.stop,
        )
    # Every file the source opens is held to the allowed roots, a folder's images too.
    return open_source(job.spec.source, settings, Confinement(config.queue.allowed_roots))


def job_frames(config: Config, live: LiveSettings, job: RunningJob) -> Iterator[Frame]:
    """The job's frames from where it resumes (runs in the job's reader thread)."""
    source = open_job_source(config, live, job)
    source.name = job.display  # what records and logs show: never a credential
    job.total = source.estimated_frames
    job.source = source
    with source:
        for frame in source:
            if frame.index < job.resume_from:
                continue  # recorded by an earlier attempt
            yield frame
