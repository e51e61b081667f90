"""The fused Triton kernels (``kernels/``) timed against their PyTorch references.

The hook: ``kernels.bench_cases(device)`` (``kernels/bench.py``) returns the cases,
each a mapping or an object with

* ``name`` (str), ``kernel`` and ``reference``: callables running the fused Triton kernel
  and its plain-PyTorch reference once;
* ``make_inputs`` (optional): a callable giving the inputs, made once and passed as
  ``kernel(*inputs)`` / ``reference(*inputs)`` (without it both are called bare);
* ``shapes`` (optional, for the report) and ``fused_bytes`` or ``bytes`` (optional: the
  least memory traffic of one call, for the kernel's GB/s).

Each is timed like the stages (median of repeats, CUDA synchronized) and reported with
``speedup = reference time / kernel time`` (the target is >= 2 on a GPU). Compiled
Triton kernels need a GPU: on a CPU the workload reports why it was skipped (the
kernels' numerics are tested under ``TRITON_INTERPRET=1`` in the test suite instead).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from benchmarks.measure import time_call

HOOK = "bench_cases"
"""Name of the function in the ``kernels`` package that lists the cases."""


def load_cases(device: Any) -> tuple[list[dict[str, Any]] | None, str | None]:
    """``(cases, None)``, or ``(None, why not)`` when the hook is missing."""
    try:
        package = importlib.import_module("kernels")
    except ImportError as error:
        return None, f"the kernels package does not import ({error})"
    hook: Callable[..., Iterable[Any]] | None = getattr(package, HOOK, None)
    if hook is None:
        return None, f"kernels.{HOOK}(device) is not provided yet"
    return [_as_case(c) for c in hook(device)], None


def _as_case(case: Any) -> dict[str, Any]:
    get = case.get if isinstance(case, Mapping) else lambda k, d=None: getattr(case, k, d)
    name, kernel, reference = get("name"), get("kernel"), get("reference")
    if not (isinstance(name, str) and callable(kernel) and callable(reference)):
        raise TypeError(f"kernels.{HOOK}: a case needs name, kernel and reference: {case!r}")
    make_inputs = get("make_inputs")
    return {
        "name": name,
        "shapes": get("shapes"),
        "kernel": kernel,
        "reference": reference,
        "make_inputs": make_inputs if callable(make_inputs) else tuple,
        "bytes": get("fused_bytes") or get("bytes"),
    }


def run(bench: Any) -> dict[str, Any]:
    device = bench.device
    if device.type != "cuda":
        return {"skipped": "compiled Triton kernels need a CUDA GPU; none in this run"}
    cases, why = load_cases(device)
    if cases is None:
        return {"skipped": why}
    rows = []
    seconds = bench.settings.stage_seconds
    for case in cases:
        kernel, reference = case["kernel"], case["reference"]
        ref_inputs, kernel_inputs = case["make_inputs"](), case["make_inputs"]()
        t_ref = time_call(lambda r=reference, i=ref_inputs: r(*i), device, seconds)
        t_kernel = time_call(lambda k=kernel, i=kernel_inputs: k(*i), device, seconds)
        row = {
            "name": case["name"],
            "shapes": case["shapes"],
            "kernel_ms": 1000 * t_kernel,
            "reference_ms": 1000 * t_ref,
            "speedup": t_ref / t_kernel,
        }
        if case["bytes"]:
            row["kernel_gb_per_s"] = case["bytes"] / t_kernel / 1e9
        rows.append(row)
    return {"cases": rows}
