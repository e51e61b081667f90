"""Errors of :mod:`kernels`, named after the condition they report.

``kernels`` is the bottom layer of Veritas (it imports only torch and triton), so these
do not derive from ``engine.errors.VeritasError``; the engine validates its own public
arguments before it calls a kernel, and these catch what reaches a kernel directly.
"""

from __future__ import annotations


class KernelError(Exception):
    """Base class: a fused kernel (or its reference) could not run on these arguments."""


class KernelInputError(KernelError, ValueError):
    """An argument has the wrong shape, dtype, device or value."""

    def __init__(self, what: str, got: object, expected: str) -> None:
        self.what, self.got, self.expected = what, got, expected
        super().__init__(f"{what}: got {got}, expected {expected}")


class KernelBackendError(KernelError, RuntimeError):
    """The Triton path was asked for where it cannot run."""

    def __init__(self, problem: str, hint: str) -> None:
        self.problem, self.hint = problem, hint
        super().__init__(f"{problem}; {hint}")


def describe(value: object) -> str:
    """A short description of a tensor (dtype, shape, device) or any other value."""
    if hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "device"):
        return f"{value.dtype} tensor of shape {tuple(value.shape)} on {value.device}"
    return repr(value)
