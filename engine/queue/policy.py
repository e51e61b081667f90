"""What a worker agrees to open: allowed roots for files, allowed URL schemes, limits.

A job's source is checked here before anything is opened. Paths must be absolute and,
once every symbolic link and ``..`` is resolved, lie inside one of ``allowed_roots``
(``file://`` URLs too). URLs must use one of ``allowed_schemes`` that this build can
read. A job's ``max_duration_s`` may not exceed ``max_job_duration_s``. A refusal is a
:class:`~engine.queue.errors.JobRefusedError` whose reason says which setting to change.

The worker opens the source confined to the same roots
(:class:`~engine.sources.confine.Confinement`): every file it opens, each image of a
folder included, is resolved and checked again just before it is opened. A link swapped
between that check and the open could still redirect one read: keep allowed roots
writable only by trusted users.
"""

from __future__ import annotations

import os

from engine.config import QueueConfig
from engine.queue.errors import JobRefusedError
from engine.queue.job import JobSpec
from engine.redaction import redact_url
from engine.sources import list_schemes
from engine.sources.confine import Confinement
from engine.sources.urls import file_url_path, url_scheme


class SourcePolicy:
    """The checks of ``queue.allowed_roots``, ``allowed_schemes`` and ``max_job_duration_s``."""

    def __init__(
        self,
        allowed_roots: tuple[str, ...] | list[str],
        allowed_schemes: tuple[str, ...] | list[str],
        max_job_duration_s: float = 0.0,
    ) -> None:
        self.confinement = Confinement(allowed_roots)
        self.roots = self.confinement.roots
        self.schemes = tuple(s.lower() for s in allowed_schemes)
        self.max_job_duration_s = max_job_duration_s

    @classmethod
    def from_config(cls, config: QueueConfig) -> SourcePolicy:
        return cls(config.allowed_roots, config.allowed_schemes, config.max_job_duration_s)

    def check(self, spec: JobSpec) -> None:
        """Raise JobRefusedError when this worker must not run ``spec``."""
        limit = self.max_job_duration_s
        if limit and spec.max_duration_s is not None and spec.max_duration_s > limit:
            raise JobRefusedError(
                spec.id,
                f"max_duration_s = {spec.max_duration_s:g} is over this worker's limit of "
                f"{limit:g} s (queue.max_job_duration_s)",
            )
        scheme = url_scheme(spec.source)
        if scheme is None:
            self.check_path(spec.id, spec.source)
            return
        if scheme not in self.schemes:
            raise JobRefusedError(
                spec.id,
                f"{scheme}:// sources are not allowed on this worker (queue.allowed_schemes: "
                f"{', '.join(self.schemes) or 'none'})",
            )
        if scheme not in list_schemes():
            raise JobRefusedError(
                spec.id,
                f"{scheme}:// sources cannot be read by this build "
                f"(readable: {', '.join(list_schemes())})",
            )
        if scheme == "file":
            self.check_path(spec.id, file_url_path(spec.source), spec.source)

    def check_path(self, job_id: str, path: str, shown: str | None = None) -> None:
        shown = redact_url(shown or path)
        if not os.path.isabs(path):
            raise JobRefusedError(
                job_id,
                f"{shown}: relative paths are ambiguous on a worker; submit absolute paths "
                "(veritas submit resolves them)",
            )
        if not self.roots:
            raise JobRefusedError(
                job_id,
                f"{shown}: local files are not allowed on this worker (queue.allowed_roots "
                "is empty; start it with --allow-root DIR)",
            )
        if not self.confinement.contains(path):
            raise JobRefusedError(
                job_id,
                f"{shown}: outside the allowed roots ({', '.join(map(str, self.roots))}; "
                "queue.allowed_roots)",
            )

    @staticmethod
    def is_live(source: str) -> bool:
        """Whether ``source`` is a URL read as a live feed (not a path or file:// URL)."""
        scheme = url_scheme(source)
        return scheme is not None and scheme != "file"
