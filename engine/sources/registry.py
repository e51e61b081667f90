"""Opening a source from what the user typed: a path, or a URL with a registered scheme.

:func:`open_source` picks the source type:

* ``scheme://...`` → the opener registered for that scheme (``file://`` built in; live
  feeds register theirs with :func:`register_scheme`), else UnsupportedSourceError;
* an existing folder → :class:`~engine.sources.images.ImageFolderSource`;
* a file with an image extension → :class:`~engine.sources.images.ImageFileSource`;
* any other existing file → a video source: PyAV's, NVDEC's or DALI's, as
  ``settings.decoder`` says (:func:`engine.sources.decoders.open_video_file`);
* a missing path → :class:`~engine.errors.InputNotFoundError`.

    >>> @register_scheme("rtsp", "rtsps")
    ... def open_rtsp(spec: str, settings: SourceSettings) -> Source:
    ...     return LiveFeedSource(spec, settings)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engine.errors import InputNotFoundError, UnsupportedSourceError
from engine.registry import Registry
from engine.sources.base import Source
from engine.sources.confine import Confinement
from engine.sources.images import ImageFileSource, ImageFolderSource, is_image_path
from engine.sources.settings import SourceSettings
from engine.sources.urls import file_url_path, url_scheme

Opener = Callable[[str, SourceSettings], Source]
"""``opener(spec, settings) -> Source`` for one URL scheme; ``spec`` is the whole URL."""

SCHEMES: Registry[str, Opener] = Registry(
    "source scheme", normalize=str.lower, providers=("engine.sources.live",)
)
"""URL scheme (lower case) -> its opener; the live feeds' schemes come with their module."""


def register_scheme(*schemes: str) -> Callable[[Opener], Opener]:
    """Register ``opener`` for URLs ``scheme://...`` (schemes are case-insensitive)."""

    return SCHEMES.register(*schemes)


def unregister_scheme(scheme: str) -> None:
    """Remove the opener of ``scheme`` (for tests and plugins that unload)."""
    SCHEMES.remove(scheme)


def list_schemes() -> list[str]:
    """The URL schemes :func:`open_source` accepts, sorted."""
    return sorted(SCHEMES)


def open_source(
    spec: str, settings: SourceSettings | None = None, confine: Confinement | None = None
) -> Source:
    """Open the input ``spec`` (a path or URL) as a :class:`Source`; see the module doc.

    ``confine`` holds every local file the source opens (a folder's images included) to
    its roots (``engine.sources.confine``); None opens any file.
    """
    settings = settings or SourceSettings()
    scheme = url_scheme(spec)
    if scheme == "file":
        return open_path(spec, settings, Path(file_url_path(spec)), confine)
    if scheme is not None:
        opener = SCHEMES.find(scheme)
        if opener is None:
            raise UnsupportedSourceError(spec, scheme, list_schemes())
        return opener(spec, settings)
    return open_path(spec, settings, confine=confine)


def open_path(
    spec: str,
    settings: SourceSettings,
    path: Path | None = None,
    confine: Confinement | None = None,
) -> Source:
    """Open a local folder or file; ``spec`` names it in frames and errors."""
    path = Path(spec) if path is None else path
    if confine is not None and path.exists():
        confine.check(spec, path)
    if path.is_dir():
        return ImageFolderSource(path, settings, name=spec, confine=confine)
    if not path.exists():
        raise InputNotFoundError(spec)
    if is_image_path(path):
        return ImageFileSource(path, settings, name=spec, confine=confine)
    from engine.sources.decoders import open_video_file  # the decoders load when chosen

    return open_video_file(path, settings, name=spec)


@register_scheme("file")
def _open_file_url(spec: str, settings: SourceSettings) -> Source:
    """``file://`` URLs (``open_source`` opens them itself, to pass its confinement)."""
    return open_path(spec, settings, Path(file_url_path(spec)))
