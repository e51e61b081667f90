"""Wall time per stage of one batch."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class StageTimer:
    """Wall time per stage in ms; synchronizes CUDA so GPU work is counted in its stage.

    Each stage is also a ``torch.profiler`` range named ``veritas.<stage>``, so a profile
    splits CPU and GPU time by stage (``benchmarks``, the profile workload).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.ms: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            with torch.profiler.record_function(f"veritas.{stage}"):
                yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.ms[stage] = self.ms.get(stage, 0.0) + (time.perf_counter() - start) * 1000
