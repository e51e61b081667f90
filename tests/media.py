"""Test media: synthetic frames, small encoded videos, image folders and damaged files.

Everything is generated on the fly (no downloads) and kept small (64 to 256 pixels, a
few dozen frames) so that encoding takes milliseconds:

    frames = moving_pattern(30, 64, 96)
    encode_video(tmp_path / "clip.mp4", frames)                  # H.264, by extension
    encode_video(tmp_path / "clip.webm", face_frames(10, 128))   # VP9, a real face
    damage_packets(tmp_path / "clip.mp4", start=0.5)             # second half → garbage
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

CODEC_BY_EXTENSION = {
    ".mp4": "libx264",
    ".mov": "libx264",
    ".mkv": "libx264",
    ".ts": "libx264",
    ".h264": "libx264",
    ".hevc": "libx265",
    ".webm": "libvpx-vp9",
    ".avi": "mpeg4",
}
"""Default encoder for each container extension."""

ENCODER_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"crf": "16"},
    "libx265": {"crf": "16", "x265-params": "log-level=error"},
    "libvpx-vp9": {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"},
}
"""Near-transparent quality, quiet logs, fast settings."""

_IN_BAND_HEADERS = {".ts", ".h264", ".hevc"}  # formats where the size may change mid-stream

ASTRONAUT_FACE = (177, 66, 272, 161)
"""Face box (x1, y1, x2, y2) in ``skimage.data.astronaut()`` (512 x 512)."""


# --- frames ----------------------------------------------------------------------------


def moving_pattern(n: int, height: int = 64, width: int = 64) -> list[np.ndarray]:
    """``n`` distinct uint8 RGB frames: a drifting smooth gradient and a moving square.

    Smooth content survives yuv420p and lossy coding with a small error, and the square
    makes every frame distinguishable from its neighbours (to check order).
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for i in range(n):
        red = 128 + 100 * np.sin(2 * np.pi * (x / width + i / max(n, 1)))
        green = 128 + 100 * np.cos(2 * np.pi * (y / height - i / (2 * max(n, 1))))
        blue = np.full_like(x, 40 + (150 * i) / max(n - 1, 1))
        image = np.stack([red, green, blue], axis=-1)
        side = max(4, min(height, width) // 4)
        top = (2 * i) % max(height - side, 1)
        left = (3 * i) % max(width - side, 1)
        image[top : top + side, left : left + side] = (250, 250, 250)
        frames.append(np.clip(image, 0, 255).astype(np.uint8))
    return frames


def face_shift(index: int, max_shift: int = 6) -> tuple[int, int]:
    """The ``(dx, dy)`` translation :func:`face_frames` gives frame ``index``."""
    angle = 2 * np.pi * index / 12
    return round(max_shift * np.cos(angle)), round(max_shift * np.sin(angle))


def face_frames(n: int, size: int = 256, max_shift: int = 6) -> list[np.ndarray]:
    """``n`` frames (uint8 RGB, ``size`` x ``size``) of a real face photo, gently moving.

    The photo is ``skimage.data.astronaut()`` resized to ``size``; frame ``i`` is shifted
    by :func:`face_shift` (``i``); :func:`face_box` gives where the face is.
    """
    from skimage import data  # imported here: slow to import, only some tests need it

    base = cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(n):
        dx, dy = face_shift(i, max_shift)
        matrix = np.float32([[1, 0, dx], [0, 1, dy]])
        frames.append(cv2.warpAffine(base, matrix, (size, size), borderMode=cv2.BORDER_REFLECT_101))
    return frames


def face_box(index: int, size: int = 256, max_shift: int = 6) -> tuple[int, int, int, int]:
    """The face's box (x1, y1, x2, y2) in frame ``index`` of :func:`face_frames`."""
    scale = size / 512
    dx, dy = face_shift(index, max_shift)
    x1, y1, x2, y2 = ASTRONAUT_FACE
    return (
        round(x1 * scale) + dx,
        round(y1 * scale) + dy,
        round(x2 * scale) + dx,
        round(y2 * scale) + dy,
    )


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 images of the same shape."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# --- files -----------------------------------------------------------------------------


def encode_video(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    fps: int = 25,
    codec: str | None = None,
    *,
    pix_fmt: str = "yuv420p",
    pts: Sequence[float] | None = None,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    audio_seconds: float | None = None,
) -> Path:
    """Encode uint8 RGB ``frames`` to ``path``; the container follows the extension.

    ``codec`` defaults to :data:`CODEC_BY_EXTENSION`; ``pts`` (seconds, one per frame)
    makes a variable-frame-rate file; ``container_options`` go to the muxer (e.g.
    ``{"movflags": "faststart"}``); ``audio_seconds`` adds a silent audio track that
    long. Frames may change size mid-stream in MPEG-TS and raw streams (a new encoder
    starts at each change, as a broadcast does).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    codec = codec or CODEC_BY_EXTENSION[suffix]
    encoder_options = {**ENCODER_OPTIONS.get(codec, {}), **(options or {})}
    time_base = Fraction(1, 1000) if pts is not None else Fraction(1, fps)
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = audio = None
        encoder = None
        size: tuple[int, int] | None = None
        for i, image in enumerate(frames):
            if size != image.shape[:2]:
                if stream is None:
                    stream = container.add_stream(codec, rate=fps)
                    encoder = stream.codec_context
                    audio = _audio_stream(container, suffix) if audio_seconds else None
                else:
                    if suffix not in _IN_BAND_HEADERS:
                        raise ValueError(f"frame size changes need one of {_IN_BAND_HEADERS}")
                    _mux(container, stream, encoder.encode(None))
                    encoder = av.CodecContext.create(codec, "w")
                    encoder.framerate = Fraction(fps)
                size = image.shape[:2]
                encoder.width, encoder.height = size[1], size[0]
                encoder.pix_fmt = pix_fmt
                encoder.time_base = time_base
                encoder.options = dict(encoder_options)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = round(pts[i] / time_base) if pts is not None else i
            frame.time_base = time_base
            _mux(container, stream, encoder.encode(frame))
        if stream is None:
            raise ValueError("encode_video needs at least one frame")
        _mux(container, stream, encoder.encode(None))
        if audio is not None and audio_seconds:
            _encode_silence(container, audio, audio_seconds)
    return path


def _mux(container: av.container.OutputContainer, stream: object, packets: list) -> None:
    for packet in packets:
        packet.stream = stream
        container.mux(packet)


def _audio_stream(container: av.container.OutputContainer, suffix: str) -> av.AudioStream:
    codec, rate = ("libopus", 48000) if suffix in (".webm", ".mka") else ("aac", 16000)
    return container.add_stream(codec, rate=rate)


def _encode_silence(
    container: av.container.OutputContainer, stream: av.AudioStream, seconds: float
) -> None:
    rate = stream.codec_context.sample_rate
    samples = stream.codec_context.frame_size or 1024
    for k in range(int(np.ceil(seconds * rate / samples))):
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, samples), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts = rate, k * samples
        _mux(container, stream, stream.encode(frame))
    _mux(container, stream, stream.encode(None))


def encode_audio(
    path: str | os.PathLike[str], seconds: float = 0.5, cover_art: bool = False
) -> Path:
    """A file with a silent audio stream and no video stream (``.m4a``, ``.mka``, ...).

    ``cover_art`` adds an album cover (a JPEG "attached picture", which FFmpeg lists as
    a video stream) as music files have; it needs ``.mp4`` or ``.mov``.
    """
    path = Path(path)
    with av.open(str(path), "w") as container:
        audio = _audio_stream(container, path.suffix.lower())
        if cover_art:
            cover = container.add_stream("mjpeg", rate=1)
            cover.width, cover.height, cover.pix_fmt = 32, 32, "yuvj420p"
            cover.disposition = av.stream.Disposition.attached_pic
            picture = av.VideoFrame.from_ndarray(moving_pattern(1, 32, 32)[0], format="rgb24")
            picture = picture.reformat(format="yuvj420p")
            picture.pts = 0
            _mux(container, cover, cover.encode(picture) + cover.encode(None))
        _encode_silence(container, audio, seconds)
    return path


def write_image_folder(
    folder: str | os.PathLike[str],
    images: Sequence[np.ndarray],
    names: Sequence[str] | None = None,
) -> list[Path]:
    """Write uint8 RGB ``images`` into ``folder`` (created) as ``names`` (default
    ``0000.png``, ...); the format follows each name's extension."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"{i:04d}.png" for i in range(len(images))]
    paths = []
    for name, image in zip(names, images, strict=True):
        path = folder / name
        if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise ValueError(f"OpenCV could not write {path}")
        paths.append(path)
    return paths


# --- damage ----------------------------------------------------------------------------


def video_packets(path: str | os.PathLike[str]) -> list[tuple[int, int]]:
    """``(byte offset, size)`` of every video packet of ``path``, in file order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        found = [(p.pos, p.size) for p in container.demux(stream) if p.size and p.pos >= 0]
    return sorted(found)


def damage_packets(
    path: str | os.PathLike[str], start: float = 0.5, fill: str = "random", seed: int = 0
) -> int:
    """Overwrite, in place, the bytes from the video packet at fraction ``start`` (in file
    order) to the end of the last video packet with random bytes (or ``fill="zeros"``).

    Headers before the media and an index after it (MP4's ``moov``) survive. Returns the
    number of intact packets before the damage.
    """
    packets = video_packets(path)
    first = int(len(packets) * start)
    begin = packets[first][0]
    end = packets[-1][0] + packets[-1][1]
    if fill == "zeros":
        garbage = bytes(end - begin)
    else:
        garbage = np.random.default_rng(seed).integers(0, 256, end - begin, np.uint8).tobytes()
    with open(path, "r+b") as f:
        f.seek(begin)
        f.write(garbage)
    return first


def truncate_mid_packet(path: str | os.PathLike[str], at: float = 0.5) -> int:
    """Cut ``path`` in the middle of the video packet at fraction ``at`` (in file order).

    Returns the number of whole packets before the cut. (An MP4 needs its index in
    front to survive this: encode it with ``container_options={"movflags": "faststart"}``.)
    """
    packets = video_packets(path)
    cut = int(len(packets) * at)
    offset, size = packets[cut]
    with open(path, "r+b") as f:
        f.truncate(offset + size // 2)
    return cut


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def black_png(width: int, height: int) -> bytes:
    """A complete, valid black RGB PNG, compressed without ever holding its pixels: at
    12000 x 12000 a 0.4 MB file that decodes to 432 MB (a real decompression bomb)."""
    row = b"\0" * (width * 3 + 1)  # filter byte + pixels
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds a few bytes of its pixels: the
    shape of a decompression bomb (a small file whose decoded image is huge)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


_READ_AND_MEASURE = """
import json, resource, sys
from engine.sources import open_source

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

before, indices, error = peak(), [], None
try:
    with open_source(sys.argv[1]) as source:
        for frame in source:
            indices.append(frame.index)
except Exception as e:
    error = type(e).__name__
print(json.dumps({"indices": indices, "error": error, "growth": peak() - before}))
"""


def read_measuring_memory(spec: str) -> tuple[list[int], str | None, int]:
    """Open and read ``spec`` in a fresh Python: the frame indices read, the name of the
    error that stopped it (None if none), and how far its peak memory grew (bytes) from
    just before the open (imports done)."""
    done = subprocess.run(
        [sys.executable, "-c", _READ_AND_MEASURE, spec],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["indices"], result["error"], result["growth"]
