"""Antialiased bilinear resampling: PyTorch's rule, as a reference and as Triton helpers.

:func:`resize_images` is THE resize of Veritas (face crops, XAI maps): PyTorch's
``F.interpolate(mode="bilinear", antialias=True, align_corners=False)``, which follows
PIL's ``BILINEAR`` resize. Along each axis, with ``scale = in / out`` (float32):

* output pixel ``i`` has its centre at ``scale * (i + 0.5)`` in input pixels;
* the filter is the triangle ``max(0, 1 - |t|)`` stretched by ``max(scale, 1)``: its
  support grows with the downscale factor (antialiasing) and is plain bilinear with
  half-pixel centres when upscaling;
* the taps are the input pixels ``[lo, hi)`` with ``lo = int(centre - support + 0.5)``
  and ``hi = int(centre + support + 0.5)`` (clipped to the image, at most
  ``2 * ceil(support) + 1``), weighted ``tri((j - centre + 0.5) / max(scale, 1))`` and
  normalized to sum to 1 (so edges are renormalized, not clamped);
* the 2-D resize is separable: a horizontal pass, then a vertical one.

:func:`aa_window` and :func:`aa_weight` compute exactly those windows and weights inside
a Triton kernel, with the same mix of float32 and float64 steps as ATen's CPU code
(``_compute_indices_min_size_weights_aa``), so a kernel's weights are bit-identical to
PyTorch's. The sums are taken in the same order (each output row of the horizontal pass,
then the vertical sum); PyTorch's CPU build may contract some of its products and sums
into FMAs, so outputs agree to a few float32 ulps rather than bit for bit.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kernels.backend import jit, tl

__all__ = ["aa_weight", "aa_window", "resize_images"]


def resize_images(images: Tensor, size: int) -> Tensor:
    """Resize float NCHW images to ``size`` x ``size`` (bilinear, antialiased).

    Returns ``images`` itself when it already has that size. Memory traffic: reads the
    N*C*H*W input once per pass and writes N*C*H*size + N*C*size*size.
    """
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(
        images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )


@jit
def aa_window(out_idx, in_size, out_size):
    """PyTorch's antialiased-bilinear window of output indices ``out_idx`` along one axis.

    Args:
        out_idx: int32 block of output indices (any shape).
        in_size: number of input pixels along the axis (int scalar).
        out_size: number of output pixels along the axis (int scalar).

    Returns ``(lo, count, centre, invscale, taps)``: first input tap and number of taps
    per output (int32 blocks), the filter centre (float32 block), the filter's ``1 /
    max(scale, 1)`` (float32 scalar) and the largest tap count (int32 scalar, the loop
    bound).
    """
    scale = tl.math.div_rn(in_size.to(tl.float32), out_size.to(tl.float32))
    down = scale >= 1.0
    support = tl.where(down, scale, 1.0)
    invscale = tl.where(down, (1.0 / scale.to(tl.float64)).to(tl.float32), 1.0)
    taps = tl.math.ceil(support).to(tl.int32) * 2 + 1
    centre = (scale.to(tl.float64) * (out_idx.to(tl.float64) + 0.5)).to(tl.float32)
    lo = ((centre - support).to(tl.float64) + 0.5).to(tl.int32)  # truncation, as in C++
    lo = tl.maximum(lo, 0)
    hi = ((centre + support).to(tl.float64) + 0.5).to(tl.int32)
    hi = tl.minimum(hi, in_size)
    count = tl.minimum(tl.maximum(hi - lo, 0), taps)
    return lo, count, centre, invscale, taps


@jit
def aa_weight(tap, lo, count, centre, invscale):
    """Triangle weight of tap number ``tap`` (int scalar) of each window; 0 past ``count``.

    Not normalized: divide by the sum over ``tap`` in ``[0, taps)``, as PyTorch does.
    """
    d = (tap + lo).to(tl.float32) - centre
    t = ((d.to(tl.float64) + 0.5) * invscale.to(tl.float64)).to(tl.float32)
    t = tl.abs(t)
    w = tl.where(t < 1.0, 1.0 - t, 0.0)
    return tl.where(tap < count, w, 0.0)
