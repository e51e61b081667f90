"""Frame sources: video files, image folders and single images, decoded to RGB frames.

``open_source(spec, settings)`` opens what the user gave; iterating the source yields
:class:`~engine.frames.Frame` objects, sampled by :class:`FrameSampler`. Decoding
overlaps inference in the frame path (:class:`engine.framepath.FramePath`), which reads
each source in its own thread.

The names below are imported on first use (``engine.exports``): the config reads
``engine.sources.settings`` without NumPy or PyAV; the live feeds register their URL
schemes when the scheme table is first read.
"""

from engine.exports import lazy_exports

_IMAGES = "engine.sources.images"
_REGISTRY = "engine.sources.registry"
_BASE = "engine.sources.base"
_EXPORTS = {
    "IMAGE_EXTENSIONS": _IMAGES,
    "DecodedFrame": _BASE,
    "DecodingSource": _BASE,
    "FrameSampler": "engine.sources.sampler",
    "ImageFileSource": _IMAGES,
    "ImageFolderSource": _IMAGES,
    "Opener": _REGISTRY,
    "Source": _BASE,
    "SourceSettings": "engine.sources.settings",
    "VideoFileSource": "engine.sources.video",
    "is_image_path": _IMAGES,
    "list_schemes": _REGISTRY,
    "natural_key": _IMAGES,
    "open_source": _REGISTRY,
    "register_scheme": _REGISTRY,
    "unregister_scheme": _REGISTRY,
    "url_scheme": "engine.sources.urls",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
