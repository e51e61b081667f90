"""Frame sources: video files, image folders and single images, decoded to RGB frames.

``open_source(spec, settings)`` opens what the user gave; iterating the source yields
:class:`~engine.frames.Frame` objects, sampled by :class:`FrameSampler`. Decoding
overlaps inference in the frame path (:class:`engine.framepath.FramePath`), which reads
each source in its own thread.
"""

from engine.sources import live  # noqa: F401  (registers the live feed URL schemes)
from engine.sources.base import DecodedFrame, DecodingSource, Source
from engine.sources.images import (
    IMAGE_EXTENSIONS,
    ImageFileSource,
    ImageFolderSource,
    is_image_path,
    natural_key,
)
from engine.sources.registry import (
    Opener,
    list_schemes,
    open_source,
    register_scheme,
    unregister_scheme,
    url_scheme,
)
from engine.sources.sampler import FrameSampler
from engine.sources.settings import SourceSettings
from engine.sources.video import VideoFileSource

__all__ = [
    "IMAGE_EXTENSIONS",
    "DecodedFrame",
    "DecodingSource",
    "FrameSampler",
    "ImageFileSource",
    "ImageFolderSource",
    "Opener",
    "Source",
    "SourceSettings",
    "VideoFileSource",
    "is_image_path",
    "list_schemes",
    "natural_key",
    "open_source",
    "register_scheme",
    "unregister_scheme",
    "url_scheme",
]
