"""Time per stage of one batch: CUDA events on a GPU, the wall clock elsewhere."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


class StageTimer:
    """Milliseconds per stage (:attr:`ms`), without synchronizing the device.

    On CUDA each stage is bracketed by two events recorded on the current stream, so
    a stage costs no synchronize: its time is the device's, read when :attr:`ms` is
    first asked for, after the batch's results came back to the host (by then the
    events have completed). Elsewhere the marks are ``time.perf_counter()``. A stage
    entered several times adds up.

    Each stage is also a ``torch.profiler`` range named ``veritas.<stage>``, so a profile
    splits CPU and GPU time by stage (``benchmarks``, the profile workload).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._spans: list[tuple[str, object, object]] = []
        self._ms: dict[str, float] | None = None
        self._mark: Callable[[], object]
        self._elapsed: Callable[[object, object], float]
        if device.type == "cuda":
            self._mark, self._elapsed = _cuda_mark(device), _cuda_elapsed_ms
        else:
            self._mark, self._elapsed = time.perf_counter, _wall_elapsed_ms

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = self._mark()
        try:
            with torch.profiler.record_function(f"veritas.{stage}"):
                yield
        finally:
            self._spans.append((stage, start, self._mark()))
            self._ms = None

    @property
    def ms(self) -> dict[str, float]:
        """Stage -> milliseconds (waits for the last stage's end event on CUDA)."""
        if self._ms is None:
            ms: dict[str, float] = {}
            for stage, start, end in self._spans:
                ms[stage] = ms.get(stage, 0.0) + self._elapsed(start, end)
            self._ms = ms
        return self._ms


def _wall_elapsed_ms(start: object, end: object) -> float:
    return (end - start) * 1000  # type: ignore[operator]


def _cuda_mark(device: torch.device) -> Callable[[], object]:
    def mark() -> torch.cuda.Event:
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(device))
        return event

    return mark


def _cuda_elapsed_ms(start: object, end: object) -> float:
    end.synchronize()  # type: ignore[attr-defined]  # done already once results are on the host
    return float(start.elapsed_time(end))  # type: ignore[attr-defined]
