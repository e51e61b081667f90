"""Crop, resize and normalize face crops straight from a batch of uint8 frames.

Given frames ``(N, H, W, 3)`` uint8 (a zero-padded batch of frames of any sizes),
integer crop boxes ``(M, 4)`` (x1, y1, x2, y2; half-open, inside their frame) and the
frame of each box ``(M,)``, the output is ``(M, 3, S, S)``::

    out[m, c] = (resize(frames[f_m, y1:y2, x1:x2, c], S) / 255 clamped to [0, 1] - mean[c]) / std[c]

with :func:`kernels.resample.resize_images` (antialiased bilinear). ``mean = 0, std = 1``
(the defaults) give the [0, 1] crop the engine explains in pixel space
(:func:`engine.faces.crop.crop_faces`); a detector's mean/std give its normalized input.

* :func:`crop_resize_normalize_reference` — plain PyTorch, one crop at a time.
* :func:`crop_resize_normalize_vectorized` — plain PyTorch over all crops at once (the
  resize as two batched matrix products with PyTorch's antialiased-bilinear weights): the
  fair baseline the kernel's speed-up is measured against (``kernels.bench``); equal to
  the reference up to float rounding.
* :func:`crop_resize_normalize_triton` — one launch for all faces, whatever their box
  sizes: each program writes a ``BLOCK_Y x BLOCK_X`` tile of one face's three channels,
  reading the uint8 pixels of its window directly from the frame.
* :func:`crop_resize_normalize` — the dispatcher (:func:`kernels.backend.use_triton`).

No gradient: the input is uint8, so nothing upstream is differentiable.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from kernels.backend import check_launchable, jit, tl, triton, use_triton
from kernels.errors import KernelInputError, describe
from kernels.resample import aa_weight, aa_window, resize_images
from kernels.tl_utils import cast_rne

__all__ = [
    "OUTPUT_DTYPES",
    "crop_resize_normalize",
    "crop_resize_normalize_reference",
    "crop_resize_normalize_triton",
    "crop_resize_normalize_vectorized",
]

OUTPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
"""Output dtypes of the crop (computation is float32; the store rounds once)."""

ZERO = (0.0, 0.0, 0.0)
ONE = (1.0, 1.0, 1.0)


def crop_resize_normalize(
    frames: Tensor,
    boxes: Tensor,
    frame_ids: Tensor,
    size: int,
    mean: Sequence[float] = ZERO,
    std: Sequence[float] = ONE,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Normalized ``size`` x ``size`` crops ``(M, 3, size, size)`` of ``frames``.

    Runs the Triton kernel on CUDA tensors, the reference elsewhere (see
    :mod:`kernels.backend`). Arguments as in :func:`crop_resize_normalize_reference`.
    """
    impl = crop_resize_normalize_triton if use_triton(frames) else crop_resize_normalize_reference
    return impl(frames, boxes, frame_ids, size, mean, std, dtype)


# --- reference -------------------------------------------------------------------------


def crop_resize_normalize_reference(
    frames: Tensor,
    boxes: Tensor,
    frame_ids: Tensor,
    size: int,
    mean: Sequence[float] = ZERO,
    std: Sequence[float] = ONE,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Plain-PyTorch crop + resize + normalize, one crop at a time.

    Args:
        frames: uint8 ``(N, H, W, 3)``.
        boxes: integer ``(M, 4)`` x1, y1, x2, y2 with ``0 <= x1 < x2 <= W`` and
            ``0 <= y1 < y2 <= H`` (any device).
        frame_ids: integer ``(M,)`` in ``[0, N)``: the frame of each box.
        size: side S of the output.
        mean, std: per-channel normalization (RGB).
        dtype: float32, float16 or bfloat16.

    Returns:
        ``(M, 3, size, size)`` of ``dtype`` on the frames' device.

    Memory traffic per face with an h x w box (float32 = 4 bytes): slice and convert
    (read 3hw bytes, write 12hw), resize (read 12hw, write 12hS + 12S^2), concatenate
    (read and write 12S^2), /255 and clamp (2 x read and write 12S^2), and, when
    normalizing, subtract and divide (2 x read and write 12S^2), plus a cast for
    half output. About 15hw + 12hS + 84S^2 bytes and 8 launches per face.
    """
    boxes_list, ids_list, mean, std = _check(frames, boxes, frame_ids, size, mean, std, dtype)
    if not boxes_list:
        return torch.zeros(0, 3, size, size, dtype=dtype, device=frames.device)
    crops = []
    for (x1, y1, x2, y2), fid in zip(boxes_list, ids_list, strict=True):
        patch = frames[fid, y1:y2, x1:x2].permute(2, 0, 1).unsqueeze(0).float()
        crops.append(resize_images(patch, size))
    return _to_unit_normalized(torch.cat(crops), mean, std, dtype)


def aa_weights(in_sizes: Tensor, size: int, length: int) -> Tensor:
    """PyTorch's antialiased-bilinear resize weights (``align_corners=False``) from
    ``in_sizes[m]`` input pixels to ``size`` outputs: ``(M, size, length)`` float32, zero
    beyond each input's own length (``length >= in_sizes.max()``)."""
    n = in_sizes.to(torch.float64)[:, None, None]  # (M, 1, 1)
    scale = n / size
    support = torch.where(scale >= 1.0, scale, torch.ones_like(scale))
    invscale = torch.where(scale >= 1.0, 1.0 / scale, torch.ones_like(scale))
    centre = scale * (torch.arange(size, dtype=torch.float64, device=n.device)[None, :, None] + 0.5)
    lo = (centre - support + 0.5).trunc().clamp(min=0)
    hi = torch.minimum((centre + support + 0.5).trunc(), n)
    j = torch.arange(length, dtype=torch.float64, device=n.device)[None, None, :]
    w = (1.0 - ((j - centre + 0.5) * invscale).abs()).clamp(min=0.0)
    w = torch.where((j >= lo) & (j < hi), w, torch.zeros_like(w))
    total = w.sum(-1, keepdim=True)
    return (w / torch.where(total > 0, total, torch.ones_like(total))).float()


def crop_resize_normalize_vectorized(
    frames: Tensor,
    boxes: Tensor,
    frame_ids: Tensor,
    size: int,
    mean: Sequence[float] = ZERO,
    std: Sequence[float] = ONE,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """:func:`crop_resize_normalize_reference` for every crop at once: one gather of the
    crops (padded to the largest), then ``Wy @ crop @ Wx^T`` per crop as two batched
    matrix products. Arguments and result as the reference's; memory ``M * 3 * h * w``
    floats for the largest ``h x w`` box."""
    boxes_list, ids_list, mean, std = _check(frames, boxes, frame_ids, size, mean, std, dtype)
    if not boxes_list:
        return torch.zeros(0, 3, size, size, dtype=dtype, device=frames.device)
    device = frames.device
    b = torch.tensor(boxes_list, device=device)
    ids = torch.tensor(ids_list, device=device)
    heights, widths = b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]
    lh, lw = int(heights.max()), int(widths.max())
    rows = (b[:, 1:2] + torch.arange(lh, device=device)).clamp(max=frames.shape[1] - 1)
    cols = (b[:, 0:1] + torch.arange(lw, device=device)).clamp(max=frames.shape[2] - 1)
    patch = frames[ids[:, None, None], rows[:, :, None], cols[:, None, :]]  # (M, lh, lw, 3)
    patch = patch.permute(0, 3, 1, 2).float()
    wy = aa_weights(heights, size, lh)[:, None]  # (M, 1, S, lh)
    wx = aa_weights(widths, size, lw)[:, None]  # (M, 1, S, lw)
    out = wy @ (patch @ wx.transpose(-1, -2))  # (M, 3, S, S)
    return _to_unit_normalized(out, mean, std, dtype)


def _to_unit_normalized(
    pixels: Tensor, mean: tuple[float, ...], std: tuple[float, ...], dtype: torch.dtype
) -> Tensor:
    """Resized float pixels (0-255) to [0, 1], then ``(x - mean) / std``, as ``dtype``."""
    out = (pixels / 255.0).clamp_(0.0, 1.0)
    if mean != ZERO or std != ONE:
        m = torch.tensor(mean, dtype=torch.float32, device=out.device).view(1, 3, 1, 1)
        s = torch.tensor(std, dtype=torch.float32, device=out.device).view(1, 3, 1, 1)
        out = (out - m) / s
    return out.to(dtype)


# --- Triton ----------------------------------------------------------------------------


def crop_resize_normalize_triton(
    frames: Tensor,
    boxes: Tensor,
    frame_ids: Tensor,
    size: int,
    mean: Sequence[float] = ZERO,
    std: Sequence[float] = ONE,
    dtype: torch.dtype = torch.float32,
    *,
    block_y: int = 16,
    block_x: int = 32,
) -> Tensor:
    """The fused kernel: same arguments and result as the reference, one launch.

    Memory traffic per face: reads the box's pixels (3hw bytes, each from DRAM about
    once; neighbouring outputs share them through the cache) and writes 3S^2 outputs
    (12S^2 bytes in float32, 6S^2 in half). Grid: ``(M, ceil(S/BLOCK_Y) *
    ceil(S/BLOCK_X))``.
    """
    boxes_list, _, mean, std = _check(frames, boxes, frame_ids, size, mean, std, dtype)
    m = len(boxes_list)
    out = torch.empty(m, 3, size, size, dtype=dtype, device=frames.device)
    if m == 0:
        return out
    check_launchable(frames)
    boxes_d = boxes.to(device=frames.device, dtype=torch.int32).contiguous()
    ids_d = frame_ids.to(device=frames.device, dtype=torch.int32).contiguous()
    tiles_x = triton.cdiv(size, block_x)
    grid = (m, triton.cdiv(size, block_y) * tiles_x)
    _crop_resize_normalize_kernel[grid](
        out,
        frames,
        boxes_d,
        ids_d,
        *frames.stride(),
        size,
        *mean,
        *std,
        tiles_x,
        BLOCK_Y=block_y,
        BLOCK_X=block_x,
        enable_fp_fusion=False,
    )
    return out


@jit
def _crop_resize_normalize_kernel(
    out_ptr,  # *f32|f16|bf16 (M, 3, S, S) contiguous: the normalized crops
    frames_ptr,  # *u8 (N, H, W, 3): the frames
    boxes_ptr,  # *i32 (M, 4) contiguous: x1, y1, x2, y2 of each crop
    ids_ptr,  # *i32 (M,): frame index of each crop
    stride_n,  # frames strides, in elements
    stride_h,
    stride_w,
    stride_c,
    size,  # S: side of the output
    mean0,  # per-channel mean and std (float32)
    mean1,
    mean2,
    std0,
    std1,
    std2,
    tiles_x,  # number of tiles along x: ceil(S / BLOCK_X)
    BLOCK_Y: tl.constexpr,  # tile height (output rows per program)
    BLOCK_X: tl.constexpr,  # tile width (output columns per program)
):
    face = tl.program_id(0)
    tile = tl.program_id(1)
    oy = (tile // tiles_x) * BLOCK_Y + tl.arange(0, BLOCK_Y)
    ox = (tile % tiles_x) * BLOCK_X + tl.arange(0, BLOCK_X)
    x1 = tl.load(boxes_ptr + face * 4 + 0)
    y1 = tl.load(boxes_ptr + face * 4 + 1)
    x2 = tl.load(boxes_ptr + face * 4 + 2)
    y2 = tl.load(boxes_ptr + face * 4 + 3)
    fid = tl.load(ids_ptr + face)
    src = frames_ptr + fid.to(tl.int64) * stride_n + y1 * stride_h + x1 * stride_w

    ylo, ycount, ycentre, yinv, ytaps = aa_window(oy, y2 - y1, size)
    xlo, xcount, xcentre, xinv, xtaps = aa_window(ox, x2 - x1, size)
    ytotal = tl.zeros([BLOCK_Y], tl.float32)
    for ty in range(0, ytaps):
        ytotal += aa_weight(ty, ylo, ycount, ycentre, yinv)
    xtotal = tl.zeros([BLOCK_X], tl.float32)
    for tx in range(0, xtaps):
        xtotal += aa_weight(tx, xlo, xcount, xcentre, xinv)
    # PyTorch divides the weights by their sum unless it is 0 (then all weights are 0).
    ytotal = tl.where(ytotal != 0.0, ytotal, 1.0)
    xtotal = tl.where(xtotal != 0.0, xtotal, 1.0)

    # Separable sum in PyTorch's order: for each tap row, the horizontal sum over the
    # row's taps; then the vertical sum of those rows.
    acc0 = tl.zeros([BLOCK_Y, BLOCK_X], tl.float32)
    acc1 = tl.zeros([BLOCK_Y, BLOCK_X], tl.float32)
    acc2 = tl.zeros([BLOCK_Y, BLOCK_X], tl.float32)
    for ty in range(0, ytaps):
        wy = aa_weight(ty, ylo, ycount, ycentre, yinv)
        wy = tl.math.div_rn(wy, ytotal)
        row = src + (ylo + ty)[:, None] * stride_h
        row_ok = (ty < ycount)[:, None]
        h0 = tl.zeros([BLOCK_Y, BLOCK_X], tl.float32)
        h1 = tl.zeros([BLOCK_Y, BLOCK_X], tl.float32)
        h2 = tl.zeros([BLOCK_Y, BLOCK_X], tl.float32)
        for tx in range(0, xtaps):
            wx = aa_weight(tx, xlo, xcount, xcentre, xinv)
            wx = tl.math.div_rn(wx, xtotal)[None, :]
            ptr = row + (xlo + tx)[None, :] * stride_w
            ok = row_ok & (tx < xcount)[None, :]
            h0 += tl.load(ptr, mask=ok, other=0).to(tl.float32) * wx
            h1 += tl.load(ptr + stride_c, mask=ok, other=0).to(tl.float32) * wx
            h2 += tl.load(ptr + 2 * stride_c, mask=ok, other=0).to(tl.float32) * wx
        acc0 += h0 * wy[:, None]
        acc1 += h1 * wy[:, None]
        acc2 += h2 * wy[:, None]

    plane = size * size
    dst = out_ptr + face.to(tl.int64) * 3 * plane + oy[:, None] * size + ox[None, :]
    inside = (oy < size)[:, None] & (ox < size)[None, :]
    out_ty = out_ptr.dtype.element_ty
    v0 = tl.minimum(tl.maximum(tl.math.div_rn(acc0, 255.0), 0.0), 1.0)
    v1 = tl.minimum(tl.maximum(tl.math.div_rn(acc1, 255.0), 0.0), 1.0)
    v2 = tl.minimum(tl.maximum(tl.math.div_rn(acc2, 255.0), 0.0), 1.0)
    tl.store(dst, cast_rne(tl.math.div_rn(v0 - mean0, std0), out_ty), mask=inside)
    tl.store(dst + plane, cast_rne(tl.math.div_rn(v1 - mean1, std1), out_ty), mask=inside)
    tl.store(dst + 2 * plane, cast_rne(tl.math.div_rn(v2 - mean2, std2), out_ty), mask=inside)


# --- arguments -------------------------------------------------------------------------


def _check(
    frames: Tensor,
    boxes: Tensor,
    frame_ids: Tensor,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    dtype: torch.dtype,
) -> tuple[list[list[int]], list[int], tuple[float, ...], tuple[float, ...]]:
    """Validate the arguments; return boxes and ids as lists and mean/std as tuples."""
    if not (isinstance(frames, Tensor) and frames.dim() == 4 and frames.shape[-1] == 3):
        raise KernelInputError("frames", describe(frames), "a uint8 tensor (N, H, W, 3)")
    if frames.dtype != torch.uint8:
        raise KernelInputError("frames", describe(frames), "dtype uint8 (decoded RGB frames)")
    if not (
        isinstance(boxes, Tensor)
        and boxes.dim() == 2
        and boxes.shape[1] == 4
        and not boxes.is_floating_point()
    ):
        raise KernelInputError("boxes", describe(boxes), "an integer tensor (M, 4)")
    if not (isinstance(frame_ids, Tensor) and frame_ids.shape == (boxes.shape[0],)):
        raise KernelInputError("frame_ids", describe(frame_ids), f"shape ({boxes.shape[0]},)")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise KernelInputError("size", repr(size), "a positive int")
    if dtype not in OUTPUT_DTYPES:
        raise KernelInputError("dtype", dtype, f"one of {OUTPUT_DTYPES}")
    mean_t, std_t = _channels("mean", mean), _channels("std", std)
    if any(s == 0.0 for s in std_t):
        raise KernelInputError("std", std_t, "non-zero values")
    boxes_list = boxes.tolist()
    ids_list = frame_ids.tolist()
    n, h, w = frames.shape[:3]
    for (x1, y1, x2, y2), fid in zip(boxes_list, ids_list, strict=True):
        if not (0 <= fid < n and 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
            raise KernelInputError(
                "crop box",
                f"{[x1, y1, x2, y2]} in frame {fid}",
                f"a non-empty box inside a frame of the ({n}, {h}, {w}, 3) batch "
                "(make boxes with engine.faces.enlarge_boxes)",
            )
    return boxes_list, ids_list, mean_t, std_t


def _channels(what: str, values: Sequence[float]) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3:
        raise KernelInputError(what, repr(values), "three numbers (R, G, B)")
    return out
