"""The end-of-run summary: counts, per-video majority verdicts, throughput.

Per-video verdict (the paper's "Vid" metric, a majority vote over frames): among a
source's frames that hold at least one face, the most common frame verdict; a tie
goes to the more severe verdict. A source with no face in any frame is ``no_face``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.realtime import LatencyWindow
from engine.records import FrameRecord, Verdict


@dataclass
class SourceTally:
    frames: int = 0
    faces: int = 0
    verdicts: Counter[Verdict] = field(default_factory=Counter)
    error: str | None = None
    lost: dict[str, int] | None = None
    """Live feeds: frames not analysed, by cause (``realtime`` drops and the feed's own)."""
    latency: LatencyWindow | None = field(default=None, repr=False)
    """Live feeds: arrival-to-record latency of the recent records."""
    count_lost: Callable[[], dict[str, int]] | None = field(default=None, repr=False)
    """Live feeds: the lost frames so far (for a run interrupted before the feed ended)."""

    @property
    def majority(self) -> Verdict:
        with_faces = {v: n for v, n in self.verdicts.items() if v is not Verdict.NO_FACE}
        if not with_faces:
            return Verdict.NO_FACE
        return max(with_faces, key=lambda v: (with_faces[v], v.severity))


@dataclass
class RunSummary:
    sources: dict[str, SourceTally] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    weights: str = "trained"
    interrupted: bool = False
    """The run was stopped (Ctrl-C) before its sources ended: the counts cover the frames
    analysed until then."""

    def register(self, source: str) -> None:
        self.sources.setdefault(source, SourceTally())

    def add(self, record: FrameRecord) -> None:
        tally = self.sources.setdefault(record.source, SourceTally())
        tally.frames += 1
        tally.faces += len(record.faces)
        tally.verdicts[record.verdict] += 1

    def watch(
        self, source: str, latency: LatencyWindow | None, lost: Callable[[], dict[str, int]]
    ) -> None:
        """Report ``source`` as a live feed: its latency window and lost-frame counts."""
        tally = self.sources.setdefault(source, SourceTally())
        tally.latency, tally.count_lost = latency, lost

    def feed_ended(self, source: str, dropped: int, lost: dict[str, int]) -> None:
        self.sources.setdefault(source, SourceTally()).lost = {"realtime": dropped, **lost}

    def fail(self, source: str, error: BaseException | str) -> None:
        self.sources.setdefault(source, SourceTally()).error = str(error)

    def finish(self) -> RunSummary:
        self.finished = time.monotonic()
        return self

    @property
    def frames(self) -> int:
        return sum(t.frames for t in self.sources.values())

    @property
    def faces(self) -> int:
        return sum(t.faces for t in self.sources.values())

    @property
    def verdicts(self) -> Counter[Verdict]:
        total: Counter[Verdict] = Counter()
        for t in self.sources.values():
            total.update(t.verdicts)
        return total

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def failed(self) -> list[str]:
        return [name for name, t in self.sources.items() if t.error]

    def to_dict(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "faces": self.faces,
            "verdicts": {v.value: self.verdicts.get(v, 0) for v in Verdict},
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 3),
            "weights": self.weights,
            "interrupted": self.interrupted,
            "sources": {
                name: {
                    "frames": t.frames,
                    "faces": t.faces,
                    "verdict": t.majority.value,
                    "error": t.error,
                    **_live(t),
                }
                for name, t in self.sources.items()
            },
        }

    def format(self) -> str:
        counts = self.verdicts
        lines = [
            f"frames {self.frames}   faces {self.faces}   "
            f"{self.seconds:.1f} s   {self.fps:.2f} frames/s",
            "frame verdicts: " + "   ".join(f"{v.value} {counts.get(v, 0)}" for v in Verdict),
            "per video (majority of frames with faces):",
        ]
        width = max((len(n) for n in self.sources), default=0)
        for name, t in self.sources.items():
            status = f"FAILED: {t.error}" if t.error else t.majority.value
            lines.append(f"  {name:<{width}}  {t.frames:>6} frames  {status}")
            live = _live(t)
            if live:
                lat = live["latency_ms"] or {}
                lost = ", ".join(f"{k} {v}" for k, v in (live["lost"] or {}).items() if v)
                lines.append(
                    f"  {'':<{width}}  latency p50 {lat.get('p50_ms', '-')} ms, "
                    f"p99 {lat.get('p99_ms', '-')} ms; lost: {lost or 'none'}"
                )
        if self.interrupted:
            lines.append("INTERRUPTED: the counts cover the frames analysed before Ctrl-C")
        if self.weights != "trained":
            lines.append("weights: UNTRAINED — verdicts are random, see README 'Weights'")
        return "\n".join(lines)


def _live(t: SourceTally) -> dict[str, object]:
    """The live-feed part of a source's summary (empty for files)."""
    if t.latency is None and t.lost is None and t.count_lost is None:
        return {}
    lost = t.lost if t.lost is not None or t.count_lost is None else t.count_lost()
    return {"lost": lost, "latency_ms": t.latency.summary() if t.latency else None}
