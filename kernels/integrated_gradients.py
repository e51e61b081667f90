"""Integrated Gradients' interpolation batch and weighted accumulation, fused.

Integrated gradients (Sundararajan et al. 2017) with quadrature nodes ``alpha_k`` and
weights ``w_k`` (k < n_steps) over a batch of N inputs ``x`` with baselines ``x'``::

    IG(x) = (x - x') * sum_k w_k * grad f(x' + alpha_k (x - x'))

``engine.xai.attribute`` runs it as ONE batch of ``n_steps * N`` rows, row
``r = k * N + i`` being step ``k`` of sample ``i`` (Captum's order), cut into chunks of
rows ``[start, stop)``. Per chunk:

* :func:`ig_interpolate` builds the chunk's inputs ``x'_i + alpha_k * (x_i - x'_i)``;
* :func:`ig_accumulate` adds ``w_k * grad_r`` into each sample's running sum, in step
  order, and on the last chunk (``diff`` given) multiplies the sums by ``x - x'``.

Each has a ``*_reference`` (the engine's original code path) and a ``*_triton`` kernel:

* interpolation: grid ``(stop - start, ceil(D / BLOCK))``, D = C*H*W; each program reads
  one sample's baseline and difference block and writes one row block.
* accumulation: grid ``(N, ceil(D / BLOCK))``; each program keeps a sample's running sum
  of one block in registers while it walks the chunk's steps, and writes it once.

Both compute in float32 (float64 inputs stay on the reference) and store in the inputs'
dtype; kernels are compiled without FMA contraction, so for float32 they perform the same
roundings, in the same order, as the reference. No gradient flows through either: the
interpolated rows are leaves that ``attribute`` differentiates with respect to, and the
sums are built from detached gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kernels.backend import check_launchable, jit, tl, triton, use_triton
from kernels.errors import KernelInputError, describe
from kernels.tl_utils import cast_rne

__all__ = [
    "KERNEL_DTYPES",
    "ig_accumulate",
    "ig_accumulate_reference",
    "ig_accumulate_triton",
    "ig_interpolate",
    "ig_interpolate_reference",
    "ig_interpolate_triton",
]

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
"""Dtypes the kernels take; others (float64) always run the reference."""


# --- dispatchers -----------------------------------------------------------------------


def ig_interpolate(
    baselines: Tensor, diff: Tensor, alphas: Tensor, start: int, stop: int
) -> Tensor:
    """Rows ``[start, stop)`` of the interpolation batch (see :func:`ig_interpolate_reference`)."""
    kernel = use_triton(diff) and diff.dtype in KERNEL_DTYPES
    impl = ig_interpolate_triton if kernel else ig_interpolate_reference
    return impl(baselines, diff, alphas, start, stop)


def ig_accumulate(
    total: Tensor,
    grads: Tensor,
    weights: Tensor,
    start: int,
    diff: Tensor | None = None,
) -> Tensor:
    """Add a chunk's weighted gradients into ``total`` (see :func:`ig_accumulate_reference`)."""
    kernel = use_triton(total) and total.dtype in KERNEL_DTYPES
    impl = ig_accumulate_triton if kernel else ig_accumulate_reference
    return impl(total, grads, weights, start, diff)


# --- reference -------------------------------------------------------------------------


def ig_interpolate_reference(
    baselines: Tensor, diff: Tensor, alphas: Tensor, start: int, stop: int
) -> Tensor:
    """Rows ``[start, stop)``: row r is ``baselines[r % N] + alphas[r // N] * diff[r % N]``.

    Args:
        baselines: ``(N, ...)`` baselines x', same shape and dtype as ``diff``.
        diff: ``(N, ...)`` ``x - x'``.
        alphas: ``(n_steps,)`` nodes, in ``diff``'s dtype and device.
        start, stop: the chunk's rows, ``0 <= start < stop <= n_steps * N``.

    Returns:
        ``(stop - start, ...)`` in ``diff``'s dtype.

    Memory traffic (R = stop - start rows of D elements): gathers of the baselines and
    differences (read and write RD each), the product (read and write RD) and the sum
    (read 2RD, write RD): 5 reads and 4 writes of RD.
    """
    n = _check_interpolate(baselines, diff, alphas, start, stop)
    row = torch.arange(start, stop, device=diff.device)
    step, sample = row // n, row % n
    alpha = alphas[step].view(-1, *([1] * (diff.dim() - 1)))
    return baselines[sample] + alpha * diff[sample]


def ig_accumulate_reference(
    total: Tensor,
    grads: Tensor,
    weights: Tensor,
    start: int,
    diff: Tensor | None = None,
) -> Tensor:
    """``total[r % N] += weights[r // N] * grads[r - start]`` for the chunk's rows, in order.

    Args:
        total: ``(N, ...)`` running sums, updated in place.
        grads: ``(R, ...)`` gradients of rows ``[start, start + R)``.
        weights: ``(n_steps,)`` quadrature weights, in ``total``'s dtype and device.
        start: first row of the chunk.
        diff: ``x - x'`` ``(N, ...)`` on the last chunk: then ``total`` is also
            multiplied by it (in place), giving the attributions.

    Returns:
        ``total``.

    Memory traffic: the weighting (read and write RD), then per step a read-modify-write
    of the sums (read 2RD, write RD), and ``* diff`` (read 2ND, write ND).
    """
    n = _check_accumulate(total, grads, weights, start, diff)
    stop = start + grads.shape[0]
    step = torch.arange(start, stop, device=total.device) // n
    grads = grads * weights[step].view(-1, *([1] * (total.dim() - 1)))
    # Sum each step's run of rows into its samples: slices, no atomics, deterministic.
    for s in range(start // n, (stop - 1) // n + 1):
        lo, hi = max(start, s * n), min(stop, (s + 1) * n)
        total[lo - s * n : hi - s * n] += grads[lo - start : hi - start]
    if diff is not None:
        total.mul_(diff)
    return total


# --- Triton ----------------------------------------------------------------------------


def ig_interpolate_triton(
    baselines: Tensor,
    diff: Tensor,
    alphas: Tensor,
    start: int,
    stop: int,
    *,
    block: int = 1024,
) -> Tensor:
    """The fused interpolation: same arguments and result as the reference.

    Memory traffic: reads a baseline and a difference element per output element
    (2RD, served from cache after the first of the chunk's steps for a sample: DRAM
    reads ~2ND per chunk) and writes RD once. Grid: ``(R, ceil(D / block))``.
    """
    n = _check_interpolate(baselines, diff, alphas, start, stop)
    _check_kernel_dtype(diff)
    check_launchable(baselines, diff, alphas)
    b, d = baselines.contiguous(), diff.contiguous()
    numel = d[0].numel()
    out = torch.empty(stop - start, *d.shape[1:], dtype=d.dtype, device=d.device)
    grid = (stop - start, triton.cdiv(numel, block))
    _ig_interpolate_kernel[grid](
        out, b, d, alphas.contiguous(), n, numel, start, BLOCK=block, enable_fp_fusion=False
    )
    return out


def ig_accumulate_triton(
    total: Tensor,
    grads: Tensor,
    weights: Tensor,
    start: int,
    diff: Tensor | None = None,
    *,
    block: int = 1024,
) -> Tensor:
    """The fused accumulation: same arguments and result as the reference.

    Memory traffic: reads each gradient once (RD) and the sums once (ND), plus ``diff``
    on the last chunk (ND), and writes the sums once (ND). Grid: ``(N, ceil(D / block))``.
    """
    n = _check_accumulate(total, grads, weights, start, diff)
    _check_kernel_dtype(total)
    check_launchable(total, grads, weights, *(() if diff is None else (diff,)))
    if not total.is_contiguous():
        raise KernelInputError("total", "a non-contiguous tensor", "a contiguous tensor")
    g = grads.contiguous()
    numel = total[0].numel()
    d = total if diff is None else diff.contiguous()  # not read without HAS_DIFF
    grid = (n, triton.cdiv(numel, block))
    _ig_accumulate_kernel[grid](
        total,
        g,
        weights.contiguous(),
        d,
        n,
        numel,
        start,
        start + g.shape[0],
        HAS_DIFF=diff is not None,
        BLOCK=block,
        enable_fp_fusion=False,
    )
    return total


@jit
def _ig_interpolate_kernel(
    out_ptr,  # *T (R, D): the chunk's interpolated rows
    base_ptr,  # *T (N, D): baselines x'
    diff_ptr,  # *T (N, D): x - x'
    alpha_ptr,  # *T (n_steps,): quadrature nodes
    n,  # N: samples
    numel,  # D: elements per sample
    start,  # first row of the chunk (row r = step r // N of sample r % N)
    BLOCK: tl.constexpr,  # elements per program
):
    r = tl.program_id(0)
    row = start + r
    sample = row % n
    step = row // n
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    src = sample.to(tl.int64) * numel + offs
    b = tl.load(base_ptr + src, mask=mask, other=0.0).to(tl.float32)
    d = tl.load(diff_ptr + src, mask=mask, other=0.0).to(tl.float32)
    alpha = tl.load(alpha_ptr + step).to(tl.float32)
    value = b + alpha * d
    tl.store(
        out_ptr + r.to(tl.int64) * numel + offs,
        cast_rne(value, out_ptr.dtype.element_ty),
        mask=mask,
    )


@jit
def _ig_accumulate_kernel(
    total_ptr,  # *T (N, D): running sums, read and written in place
    grads_ptr,  # *T (R, D): the chunk's gradients
    weight_ptr,  # *T (n_steps,): quadrature weights
    diff_ptr,  # *T (N, D): x - x', read only when HAS_DIFF
    n,  # N: samples
    numel,  # D: elements per sample
    start,  # the chunk's rows are [start, stop)
    stop,
    HAS_DIFF: tl.constexpr,  # last chunk: multiply the sums by diff
    BLOCK: tl.constexpr,  # elements per program
):
    sample = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    here = sample.to(tl.int64) * numel + offs
    acc = tl.load(total_ptr + here, mask=mask, other=0.0).to(tl.float32)
    # Steps k with start <= k * N + sample < stop, in increasing order.
    first = (start + n - 1 - sample) // n
    last = (stop + n - 1 - sample) // n
    for k in range(first, last):
        r = k * n + sample - start
        g = tl.load(grads_ptr + r.to(tl.int64) * numel + offs, mask=mask, other=0.0)
        w = tl.load(weight_ptr + k)
        acc += g.to(tl.float32) * w.to(tl.float32)
    if HAS_DIFF:
        acc = acc * tl.load(diff_ptr + here, mask=mask, other=0.0).to(tl.float32)
    tl.store(total_ptr + here, cast_rne(acc, total_ptr.dtype.element_ty), mask=mask)


# --- arguments -------------------------------------------------------------------------


def _check_interpolate(
    baselines: Tensor, diff: Tensor, alphas: Tensor, start: int, stop: int
) -> int:
    if not (isinstance(diff, Tensor) and diff.dim() >= 1 and diff.is_floating_point()):
        raise KernelInputError("diff", describe(diff), "a float tensor (N, ...)")
    if not (isinstance(baselines, Tensor) and baselines.shape == diff.shape):
        raise KernelInputError("baselines", describe(baselines), f"shape {tuple(diff.shape)}")
    if not (isinstance(alphas, Tensor) and alphas.dim() == 1):
        raise KernelInputError("alphas", describe(alphas), "a 1-D tensor (n_steps,)")
    n = diff.shape[0]
    if not 0 <= start < stop <= alphas.shape[0] * n:
        raise KernelInputError(
            "rows", f"[{start}, {stop})", f"0 <= start < stop <= {alphas.shape[0] * n}"
        )
    return n


def _check_accumulate(
    total: Tensor, grads: Tensor, weights: Tensor, start: int, diff: Tensor | None
) -> int:
    if not (isinstance(total, Tensor) and total.dim() >= 1 and total.is_floating_point()):
        raise KernelInputError("total", describe(total), "a float tensor (N, ...)")
    if not (isinstance(grads, Tensor) and grads.dim() == total.dim() and grads.shape[0] >= 1):
        raise KernelInputError("grads", describe(grads), f"rows shaped like {tuple(total.shape)}")
    if grads.shape[1:] != total.shape[1:]:
        raise KernelInputError("grads", describe(grads), f"rows of shape {tuple(total.shape[1:])}")
    if not (isinstance(weights, Tensor) and weights.dim() == 1):
        raise KernelInputError("weights", describe(weights), "a 1-D tensor (n_steps,)")
    n = total.shape[0]
    if not (0 <= start and start + grads.shape[0] <= weights.shape[0] * n):
        raise KernelInputError(
            "rows",
            f"[{start}, {start + grads.shape[0]})",
            f"inside [0, {weights.shape[0] * n})",
        )
    if diff is not None and not (isinstance(diff, Tensor) and diff.shape == total.shape):
        raise KernelInputError("diff", describe(diff), f"shape {tuple(total.shape)}")
    return n


def _check_kernel_dtype(t: Tensor) -> None:
    if t.dtype not in KERNEL_DTYPES:
        raise KernelInputError("dtype", t.dtype, f"one of {KERNEL_DTYPES} for the Triton kernel")
