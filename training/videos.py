"""The input videos of a dataset build and their train/test split by video.

Two layouts are read (``discover``):

* **FaceForensics++** (Rössler et al., ICCV 2019), as its download script lays it out:
  ``original_sequences/youtube/<c>/videos/000.mp4`` (real) and
  ``manipulated_sequences/<Method>/<c>/videos/000_003.mp4`` (fake: the face of video
  003 put into video 000), for a compression ``<c>`` (``raw``, ``c23``, ``c40``) and
  the methods Deepfakes, Face2Face, FaceShifter, FaceSwap, NeuralTextures. A folder of
  extracted frames (``.../images/000/0001.png``) is read like the video.
* **Plain**: ``real/<name>`` and ``fake/<name>``, each a video file or a folder of
  images (one video per entry).

**Split by video, never by frame.** Videos are grouped so that no face appears on
both sides of the split: in FF++, ``000``, ``003``, ``000_003`` and ``003_000`` form
one group (the pair FF++'s own splits keep together); in the plain layout, entries of
the same name (``real/x.mp4``, ``fake/x.mp4``) form one group. Groups are ordered by a
seeded hash of their name; the first ``groups`` are used and the first
``test_groups`` of those are the test split. The split is deterministic, and a
group's side depends only on its own name and the seed (adding videos moves no other
group).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.sources import is_image_path, natural_key
from training.errors import BadOptionError, LayoutError, NoVideosError

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceShifter", "FaceSwap", "NeuralTextures")
FFPP_COMPRESSIONS = ("raw", "c23", "c40")
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".ts", ".h264", ".hevc"})

REAL, FAKE = 0, 1


@dataclass(frozen=True)
class Video:
    key: str
    """Unique name inside the dataset, e.g. ``fake/Deepfakes/000_003`` or ``real/x``."""
    path: Path
    label: int
    """0 = real, 1 = fake."""
    method: str | None
    """The FF++ manipulation (``Deepfakes``...) of a fake; ``fake`` in the plain layout."""
    group: str
    """Videos of one group always land in the same split."""

    @property
    def slug(self) -> str:
        """``key`` as one safe path component."""
        return self.key.replace("/", "__")


def discover(
    root: str | Path,
    layout: str = "auto",
    compression: str = "c23",
    methods: Sequence[str] | None = None,
) -> list[Video]:
    """Every video under ``root`` in the ``layout`` (``auto``, ``ffpp`` or ``plain``)."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(str(root), "no such folder", "give the folder that holds the videos")
    if layout == "auto":
        if (root / "original_sequences").is_dir() or (root / "manipulated_sequences").is_dir():
            layout = "ffpp"
        elif (root / "real").is_dir() or (root / "fake").is_dir():
            layout = "plain"
        else:
            raise LayoutError(
                str(root),
                "neither an FF++ tree (original_sequences/, manipulated_sequences/) nor a "
                "plain layout (real/, fake/)",
                "point at the FF++ root or at a folder with real/ and fake/",
            )
    if layout == "ffpp":
        videos = _ffpp(root, compression, methods)
    elif layout == "plain":
        videos = _plain(root)
    else:
        raise BadOptionError("--layout", layout, "auto, ffpp or plain")
    if not videos:
        raise NoVideosError(str(root), f"{layout} layout")
    return videos


def _entries(folder: Path) -> list[Path]:
    """Video files and image folders directly in ``folder``, in natural order."""
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            found.append(p)
        elif p.is_dir() and any(is_image_path(q) for q in p.iterdir()):
            found.append(p)
    return sorted(found, key=lambda p: natural_key(p.name))


def _stem(path: Path) -> str:
    return path.stem if path.is_file() else path.name


def _ffpp_folder(base: Path, compression: str) -> Path:
    """``<base>/<c>/videos``, or ``<base>/<c>/images`` when only frames were extracted."""
    videos = base / compression / "videos"
    return videos if videos.is_dir() else base / compression / "images"


def _ffpp(root: Path, compression: str, methods: Sequence[str] | None) -> list[Video]:
    if compression not in FFPP_COMPRESSIONS:
        raise BadOptionError("--compression", compression, " or ".join(FFPP_COMPRESSIONS))
    methods = list(methods) if methods else list(FFPP_METHODS)
    unknown = [m for m in methods if m not in FFPP_METHODS]
    if unknown:
        raise BadOptionError("--methods", ",".join(unknown), ", ".join(FFPP_METHODS))
    real = [
        (p, None) for p in _entries(_ffpp_folder(root / "original_sequences/youtube", compression))
    ]
    fake = [
        (p, m)
        for m in methods
        for p in _entries(_ffpp_folder(root / "manipulated_sequences" / m, compression))
    ]
    groups = _UnionFind()
    for p, _ in real:
        groups.add(_stem(p))
    for p, _ in fake:
        ids = _stem(p).split("_")
        for i in ids:
            groups.add(i)
        for i in ids[1:]:
            groups.union(ids[0], i)
    videos = [
        Video(f"real/youtube/{_stem(p)}", p, REAL, None, groups.find(_stem(p))) for p, _ in real
    ]
    videos += [
        Video(f"fake/{m}/{_stem(p)}", p, FAKE, m, groups.find(_stem(p).split("_")[0]))
        for p, m in fake
    ]
    return videos


def _plain(root: Path) -> list[Video]:
    videos = [Video(f"real/{_stem(p)}", p, REAL, None, _stem(p)) for p in _entries(root / "real")]
    videos += [
        Video(f"fake/{_stem(p)}", p, FAKE, "fake", _stem(p)) for p in _entries(root / "fake")
    ]
    return videos


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def add(self, x: str) -> None:
        self.parent.setdefault(x, x)

    def find(self, x: str) -> str:
        self.add(x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the smaller name is the root, so group names do not depend on order
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


def seeded_order(names: Iterable[str], seed: int, salt: str = "") -> list[str]:
    """``names`` in a pseudo-random order fixed by ``seed`` (each name's place is its hash)."""
    return sorted(
        set(names), key=lambda n: (hashlib.sha256(f"{seed}:{salt}:{n}".encode()).digest(), n)
    )


def split_videos(
    videos: Sequence[Video],
    groups: int | None = None,
    test_groups: int | None = None,
    seed: int = 0,
) -> dict[str, str]:
    """``{video key: "train" | "test"}`` for the videos of the selected groups.

    ``groups``: how many groups to use (None: all). ``test_groups``: how many of them
    form the test split (None: one in six, at least one — the paper's 10 of 60).
    """
    order = seeded_order((v.group for v in videos), seed, "split")
    if groups is not None:
        if groups < 2:
            raise BadOptionError("--groups", groups, "at least 2 (one train, one test)")
        order = order[:groups]
    if test_groups is None:
        test_groups = max(1, round(len(order) / 6))
    if not 1 <= test_groups < len(order):
        raise BadOptionError(
            "--test-groups", test_groups, f"from 1 to {len(order) - 1} ({len(order)} groups)"
        )
    test = set(order[:test_groups])
    chosen = set(order)
    return {v.key: ("test" if v.group in test else "train") for v in videos if v.group in chosen}
