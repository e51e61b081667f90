"""Small Triton helpers shared by the kernels: exact rounding that means the same thing
compiled on a GPU and in Triton's CPU interpreter.

* :func:`cast_rne` — float32 to the output dtype, rounding to nearest even like
  ``Tensor.to``. Compiled Triton rounds bfloat16 that way, but the interpreter truncates,
  so bfloat16 is rounded here with integer arithmetic (finite inputs).
* :func:`rint` — round half to even of non-negative float32 (``torch.round``), from
  ``floor`` and exact comparisons only.
"""

from __future__ import annotations

from kernels.backend import jit, tl

__all__ = ["cast_rne", "rint"]


@jit
def cast_rne(x, dtype: tl.constexpr):
    """``x`` (float32) rounded to ``dtype`` (float32, float16 or bfloat16), nearest even."""
    if dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(dtype)


@jit
def rint(x):
    """Round half to even of non-negative float32 ``x`` (exact)."""
    f = tl.math.floor(x)
    frac = x - f  # exact for |x| < 2**23
    odd = f - 2.0 * tl.math.floor(f * 0.5)
    up = (frac > 0.5) | ((frac == 0.5) & (odd == 1.0))
    return tl.where(up, f + 1.0, f)
