"""Which implementation runs: the fused Triton kernel or its plain-PyTorch reference.

Every public op in :mod:`kernels` is a small dispatcher::

    impl = op_triton if use_triton(x) else op_reference

``use_triton`` follows the backend in force:

* ``"auto"`` (default): the kernel when every tensor is on a CUDA device and Triton
  imports; the reference otherwise (CPU, or no Triton).
* ``"reference"``: always the reference (e.g. to compare or to rule a kernel out).
* ``"triton"``: always the kernel, whatever the device. On CPU tensors that only works
  under Triton's interpreter (``TRITON_INTERPRET=1``), which is how the tests run the
  kernels on machines without a GPU.

The default comes from the environment variable ``VERITAS_KERNELS`` (``auto``,
``reference`` or ``triton``); :func:`use_backend` overrides it for a block of code, per
thread and per asyncio task.

About ``TRITON_INTERPRET``: triton 3.x reads it whenever ``@triton.jit`` decorates a
function, and ``triton.language`` decorates its own helpers (``tl.zeros``, ``tl.sum``,
...) when it is first imported. So it must be set before ``triton.language`` is
imported; setting it later leaves those helpers compiled-only and the interpreter fails
("Cannot call @triton.jit'd outside of the scope of a kernel"). The test suite therefore
runs the kernel tests in a child process started with the variable set
(``tests/kernels/conftest.py``).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor

from kernels.errors import KernelBackendError

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the CUDA torch wheels ship Triton
    triton = None
    tl = None

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "check_launchable",
    "current_backend",
    "interpreting",
    "jit",
    "tl",
    "triton_available",
    "use_backend",
    "use_triton",
]

BACKENDS = ("auto", "reference", "triton")
"""The backends :func:`use_backend` accepts."""

ENV_VAR = "VERITAS_KERNELS"
"""Environment variable giving the default backend (one of :data:`BACKENDS`)."""

_override: ContextVar[str | None] = ContextVar("veritas_kernels_backend", default=None)


def _unavailable_jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn  # without Triton the kernels are never launched (use_triton is False)


jit: Callable[[Callable[..., Any]], Any] = triton.jit if triton is not None else _unavailable_jit
"""``triton.jit`` (or a no-op when Triton is not installed)."""


def triton_available() -> bool:
    """True when Triton imports."""
    return triton is not None


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return triton is not None and bool(triton.knobs.runtime.interpret)


def current_backend() -> str:
    """The backend in force: the innermost :func:`use_backend`, else ``$VERITAS_KERNELS``."""
    name = _override.get()
    if name is None:
        name = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        raise KernelBackendError(
            f"{ENV_VAR}={name!r} is not a backend",
            f"set it to one of {', '.join(BACKENDS)} (or unset it)",
        )
    return name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the block with backend ``name`` (``auto``, ``reference`` or ``triton``)."""
    if name not in BACKENDS:
        raise KernelBackendError(f"unknown kernel backend {name!r}", f"use one of {BACKENDS}")
    token = _override.set(name)
    try:
        yield
    finally:
        _override.reset(token)


def use_triton(*tensors: Tensor) -> bool:
    """Whether an op on ``tensors`` runs its Triton kernel (see the module docstring)."""
    backend = current_backend()
    if backend == "reference":
        return False
    if backend == "triton":
        return True
    return triton is not None and all(_triton_device(t.device) for t in tensors)


def check_launchable(*tensors: Tensor) -> None:
    """Raise :class:`KernelBackendError` unless a Triton kernel can run on ``tensors``."""
    if triton is None:
        raise KernelBackendError(
            "Triton is not installed", "install the CUDA build of torch, which ships it"
        )
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise KernelBackendError(
            f"tensors are on different devices ({', '.join(map(str, sorted(devices, key=str)))})",
            "move them to one device",
        )
    if interpreting():
        return
    device = devices.pop() if devices else torch.device("cpu")
    if device.type != "cuda":
        raise KernelBackendError(
            f"the Triton kernel got tensors on {device}",
            "give it CUDA tensors, or run with TRITON_INTERPRET=1 set before triton is imported",
        )


@functools.lru_cache(maxsize=16)
def _triton_device(device: torch.device) -> bool:
    """CUDA (or ROCm) device of a generation Triton compiles for."""
    if device.type != "cuda":
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, _ = torch.cuda.get_device_capability(index)
    return torch.version.hip is not None or major >= 7
