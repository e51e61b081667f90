"""Measuring: timing with device synchronization, FLOP counts, peak memory, the machine.

* :func:`time_call` repeats a call for at least ``min_seconds`` (and ``min_repeats``
  times, once for calls longer than ``min_seconds``) after a warm-up call and gives the
  median seconds per call; on CUDA each call is synchronized, so GPU work is inside its
  own measurement.
* :func:`count_flops` counts a call's floating-point operations with PyTorch's
  ``FlopCounterMode`` (convolutions and matrix products, forward and backward).
* :func:`matmul_peak` measures the bf16 matrix-multiply rate of the GPU in the same run,
  the denominator of "achieved FLOP/s as a share of peak".
* Peak host memory is the process's resident high-water mark (psutil when installed,
  else ``VmHWM`` in ``/proc/self/status``); on Linux it is reset between workloads
  through ``/proc/self/clear_refs``. Peak GPU memory is ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], object],
    device: torch.device,
    min_seconds: float = 1.0,
    min_repeats: int = 3,
    warmup: int = 1,
) -> float:
    """Median wall seconds per call of ``fn`` (after ``warmup`` untimed calls).

    Calls repeat until ``min_seconds`` have passed and ``min_repeats`` were made; a call
    that alone takes longer than ``min_seconds`` (a full-size model on a CPU) is timed once.
    """
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    synchronize(device)
    if warmup and time.perf_counter() - start >= warmup * min_seconds:
        min_repeats = 1
    times: list[float] = []
    begin = time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - begin < min_seconds:
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call of ``fn`` (PyTorch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak(device: torch.device, n: int = 8192, seconds: float = 1.0) -> float | None:
    """Measured bf16 matmul FLOP/s on a CUDA ``device`` (None elsewhere)."""
    if device.type != "cuda":
        return None
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    per_call = time_call(lambda: a @ b, device, min_seconds=seconds, min_repeats=10, warmup=3)
    return 2 * n**3 / per_call


# --- memory --------------------------------------------------------------------------------


def peak_host_bytes() -> int | None:
    """The process's peak resident memory since start (or the last reset)."""
    try:
        import psutil  # optional

        info = psutil.Process().memory_full_info()
        peak = getattr(info, "peak_wset", None) or getattr(info, "peak_rss", None)
        if peak:
            return int(peak)
    except Exception:  # not installed, or no peak on this platform: fall back
        pass
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def reset_peak_memory(device: torch.device) -> None:
    """Start new peak measurements (host: Linux only; GPU: the CUDA allocator's)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, float | None]:
    host = peak_host_bytes()
    gpu = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {
        "peak_host_mb": None if host is None else round(host / 2**20, 1),
        "peak_gpu_mb": None if gpu is None else round(gpu / 2**20, 1),
    }


# --- the machine ---------------------------------------------------------------------------


def machine(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "time": dt.datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "load_average": _load_average(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu_memory_gb"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
