"""Still images as sources: a folder of images (one frame each) or a single image file.

Images are decoded with OpenCV (``cv2.imdecode``, colour, EXIF orientation applied) and
converted BGR → RGB; frames of one folder may differ in size.

A folder's images are the files directly in it with an image extension
(:data:`IMAGE_EXTENSIONS`, any case), in natural order (``frame2.png`` before
``frame10.png``); other files, hidden files (``.DS_Store``, ``._frame1.png``) and
subfolders are ignored. Image ``i`` gets ``pts = i / image_folder_fps``.

An image that cannot be decoded stops the folder with
:class:`~engine.errors.UnreadableImageError` naming that file, after the frames
before it were yielded: a silently skipped image would leave a hole the user never
hears about. Images the sampler skips are not decoded (only their header is read).

Sizes are read from the image header (Pillow's format plugins, no pixel decoded) and
refused over ``max_frame_pixels`` before decoding, decompression bombs included (a
small file that declares 15000x15000). An image whose header gives no size is refused
as unreadable, not decoded: only a known size may be handed to the decoder.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import warnings
from collections.abc import Generator
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from engine.errors import (
    EmptySourceError,
    NotAVideoError,
    SourceError,
    UnreadableImageError,
)
from engine.sources.base import DecodedFrame, DecodingSource
from engine.sources.confine import Confinement
from engine.sources.settings import SourceSettings

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
"""File extensions (lower case) read as images; everything else is read as video."""


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has an image extension (the file is not opened)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key ordering digit runs by value: ``img2`` < ``img10``; ties by the name."""
    parts = re.split(r"(\d+)", name)
    return (tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)), name)


class _ImageSequence(DecodingSource):
    """Images read one per frame, in the order of :attr:`paths`."""

    paths: list[Path]
    confine: Confinement | None = None
    """Where every image must resolve (``engine.sources.confine``); None: anywhere."""

    def _declared_extent(self) -> tuple[int | None, float | None]:
        return len(self.paths), len(self.paths) / self.settings.image_folder_fps

    def _decode(self) -> Generator[DecodedFrame, None, None]:
        fps = self.settings.image_folder_fps
        for index, path in enumerate(self.paths):
            if self.confine is not None:  # again when opened: a link may have changed
                self.confine.check(self.name, path)
            try:
                size = _probe_size(path)
            except OSError as error:
                raise self._unreadable(index, path, error.strerror or str(error)) from error
            if size is None:  # refused when kept: its size could not be checked
                read = partial(self._refuse, index, path)
                yield DecodedFrame(index, index / fps, None, None, read)
            else:
                read = partial(self._read, index, path)
                yield DecodedFrame(index, index / fps, size[0], size[1], read)

    def _refuse(self, index: int, path: Path) -> np.ndarray:
        formats = ", ".join(HEADER_FORMATS)
        detail = f"no {formats} header gives its size, so it is not decoded"
        raise self._unreadable(index, path, detail)

    def _read(self, index: int, path: Path) -> np.ndarray:
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as error:
            raise self._unreadable(index, path, error.strerror or str(error)) from error
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if bgr is None:
            raise self._unreadable(index, path, "OpenCV cannot decode it")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _unreadable(self, index: int, path: Path, detail: str) -> SourceError:
        return UnreadableImageError(self.name, str(path), index, detail)


class ImageFolderSource(_ImageSequence):
    """The images directly inside a folder, in natural order, one frame each.

    Raises :class:`EmptySourceError` at construction when the folder holds no image, and
    :class:`OutsideAllowedRootsError` when ``confine`` is given and an image of the folder
    resolves outside it (checked for every image before the first frame, and again as
    each is opened).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        settings: SourceSettings | None = None,
        name: str | None = None,
        confine: Confinement | None = None,
    ) -> None:
        super().__init__(name if name is not None else str(folder), settings or SourceSettings())
        self.confine = confine
        self.folder = Path(folder)
        self.paths = sorted(
            (
                p
                for p in self.folder.iterdir()
                if is_image_path(p) and not p.name.startswith(".") and p.is_file()
            ),
            key=lambda p: natural_key(p.name),
        )
        for path in self.paths if confine is not None else ():
            confine.check(self.name, path)
        if not self.paths:
            raise EmptySourceError(
                self.name, "no image files (" + ", ".join(sorted(IMAGE_EXTENSIONS)) + ")"
            )
        self.nominal_fps = self.settings.image_folder_fps
        log.info("%s: %d images at %g fps", self.name, len(self.paths), self.nominal_fps)


class ImageFileSource(_ImageSequence):
    """A single image: one frame, index 0, pts 0."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        settings: SourceSettings | None = None,
        name: str | None = None,
        confine: Confinement | None = None,
    ) -> None:
        super().__init__(name if name is not None else str(path), settings or SourceSettings())
        self.confine = confine
        self.paths = [Path(path)]

    def _unreadable(self, index: int, path: Path, detail: str) -> SourceError:
        return NotAVideoError(self.name, detail)


HEADER_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "TIFF")
"""Pillow formats whose headers give an image's size; the formats of :data:`IMAGE_EXTENSIONS`,
tried by content (a PNG named ``.jpg`` is still a PNG)."""


def _probe_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from the image header, without decoding any pixel; None if no
    header of :data:`HEADER_FORMATS` is found.

    Pillow's plugins read the header only. ``Image.open`` is not used: it refuses images
    over ~179 M pixels as decompression bombs without saying their size, and this check
    is the one that must see a bomb's size (``max_frame_pixels``) before OpenCV decodes.
    """
    Image.init()
    with open(path, "rb") as fp:
        prefix = fp.read(16)
        for fmt in HEADER_FORMATS:
            factory, accept = Image.OPEN[fmt]
            accepted = accept is None or accept(prefix)
            if not accepted or isinstance(accepted, str):  # False, or why not
                continue
            fp.seek(0)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    width, height = factory(fp, os.fsdecode(path)).size
            except (SyntaxError, IndexError, TypeError, ValueError, struct.error, OSError) as e:
                log.debug("%s: not a %s header (%s)", path, fmt, e)
                continue
            return int(width), int(height)
    return None
