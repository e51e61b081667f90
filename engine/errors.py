"""Errors of the Veritas engine.

Each error is named after the condition it reports, carries the offending value,
and its message tells the user what to do. The CLI prints ``str(error)`` as one
line, so messages never span lines.
"""

from __future__ import annotations


class VeritasError(Exception):
    """Base class: an error a user can act on (bad input, config, weights)."""


# --- configuration ---------------------------------------------------------------------


class ConfigError(VeritasError):
    """A configuration value is missing, of the wrong type, or out of range."""

    def __init__(self, key: str, value: object, expected: str) -> None:
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"config: {key} = {value!r} is invalid: expected {expected}")


# --- sources ---------------------------------------------------------------------------


class SourceError(VeritasError):
    """A source (file, folder, feed) could not be read."""

    def __init__(self, source: str, problem: str, hint: str) -> None:
        self.source, self.problem, self.hint = source, problem, hint
        super().__init__(f"{source}: {problem}; {hint}")


class InputNotFoundError(SourceError):
    def __init__(self, source: str) -> None:
        super().__init__(source, "no such file or folder", "check the path")


class OutsideAllowedRootsError(SourceError):
    """A file a source was about to open resolves (links, ``..``) outside the allowed
    roots: a link inside an allowed folder that points elsewhere, say."""

    def __init__(self, source: str, path: str, roots: list[str]) -> None:
        self.path = path
        super().__init__(
            source,
            f"{path} leads outside the allowed roots ({', '.join(roots)})",
            "remove the link, or add its target's folder to queue.allowed_roots",
        )


class NotAVideoError(SourceError):
    def __init__(self, source: str, detail: str) -> None:
        super().__init__(
            source,
            f"not a readable video or image ({detail})",
            "give a video file (H.264, HEVC, VP9, ...), an image, or a folder of images",
        )


class EmptySourceError(SourceError):
    def __init__(self, source: str, what: str = "no frames") -> None:
        super().__init__(source, what, "check that the input holds video frames or images")


class CorruptStreamError(SourceError):
    def __init__(self, source: str, frame_index: int, detail: str) -> None:
        self.frame_index = frame_index
        super().__init__(
            source,
            f"stream is corrupt after frame {frame_index} ({detail})",
            "records up to that frame were kept; re-encode or repair the file to process the rest",
        )


class FrameTooLargeError(SourceError):
    """A frame over ``sources.max_frame_pixels``; ``width``/``height`` are None when the
    decoder refused the picture without telling its size (FFmpeg's ``max_pixels``)."""

    def __init__(self, source: str, width: int | None, height: int | None, max_pixels: int) -> None:
        self.width, self.height, self.max_pixels = width, height, max_pixels
        if width is None or height is None:
            what = "the decoder refused a picture"
        else:
            what = f"frame is {width}x{height} ({width * height} pixels),"
        super().__init__(
            source,
            f"{what} over the limit of {max_pixels} pixels",
            "downscale the input or raise sources.max_frame_pixels",
        )


class UnsupportedSourceError(SourceError):
    def __init__(self, source: str, scheme: str, known: list[str]) -> None:
        self.scheme = scheme
        choices = ", ".join(f"{k}://" for k in known) or "none yet"
        super().__init__(
            source,
            f"{scheme}:// sources are not supported",
            f"give a video file, an image or a folder of images (URL schemes: {choices})",
        )


class UnreadableImageError(SourceError):
    def __init__(self, source: str, path: str, frame_index: int, detail: str) -> None:
        self.path, self.frame_index = path, frame_index
        super().__init__(
            source,
            f"image {path} (frame {frame_index}) cannot be read ({detail})",
            "records before it were kept; fix or remove that file to process the rest",
        )


class SourceTooLongError(SourceError):
    def __init__(self, source: str, seconds: float, max_seconds: float) -> None:
        super().__init__(
            source,
            f"stream reached {seconds:.1f} s, over the limit of {max_seconds:.1f} s",
            "split the input or raise sources.max_duration_s",
        )


# --- models and weights ----------------------------------------------------------------


class UnknownModelError(VeritasError):
    def __init__(self, name: str, kind: str, known: list[str]) -> None:
        self.name = name
        super().__init__(f"unknown {kind} {name!r}: choose one of {', '.join(known)}")


class WeightsError(VeritasError):
    """A weights file is missing, malformed, or does not fit the model."""

    def __init__(self, path: str, problem: str, hint: str) -> None:
        self.path = path
        super().__init__(f"{path}: {problem}; {hint}")


class UntrustedPickleError(WeightsError):
    def __init__(self, path: str) -> None:
        super().__init__(
            path,
            "is a pickle file, and unpickling can run arbitrary code",
            "if you trust its origin, convert it once with "
            "'veritas convert-weights SRC DST --format ... --trust-pickle'",
        )
