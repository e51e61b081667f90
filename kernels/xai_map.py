"""XAI maps and Detect-ResNet50's input, fused: scale, clamp, resize, quantize, normalize.

The rule (:func:`engine.xai.prepare_map` documents it; this module is its one
implementation), per sample ``a`` of shape ``(C, H, W)``, C = 1 or 3:

1. ``s`` = the ``quantile`` of ``|a|`` (linear interpolation between order statistics),
   at least :data:`SCALE_EPS`; NaN counts as 0 and ±inf as ±float32 max.
2. ``m = 0.5 + 0.5 * clamp(a / s, -1, 1)`` (signed) or ``clamp(a / s, 0, 1)`` (unsigned).
3. ``m`` resized to ``size`` x ``size`` (:func:`kernels.resample.resize_images`), clamped
   to [0, 1], repeated to 3 channels when C = 1.
4. Quantized: ``round(255 m) / 255`` (round half to even).

Detect-ResNet50 embeds a face crop and its map with ONE backbone pass over
``cat([crops, maps])`` after ImageNet normalization. :func:`detect_resnet_inputs` writes
that ``(2M, 3, S, S)`` input directly: rows ``[0, M)`` are ``(resize(crop) - mean) / std``
and rows ``[M, 2M)`` are ``(map - mean) / std``, ready for
``DetectResNet50.forward_stacked``.

* ``*_reference`` — plain PyTorch (``xai_maps_reference`` is the rule above).
* ``*_triton`` — ``s`` by the same :func:`map_scale` (``torch.kthvalue``: an exact
  selection, kept as a separate reduction), then ONE kernel launch that reads each
  attribution and crop pixel of a window, applies steps 2-4 and the normalization in
  registers, and writes the output once. Grid: ``(rows, tiles)`` where rows = M maps
  (+ M crops) and tiles = ``ceil(S/BLOCK_Y) * ceil(S/BLOCK_X)``.
* :func:`xai_maps`, :func:`detect_resnet_inputs` — dispatchers
  (:func:`kernels.backend.use_triton`).

The per-method step before this (saliency ``|g|``, input x gradient ``x * g``) stays in
``engine.xai.attribute``: ``s`` needs ``|a|`` materialized for ``kthvalue`` anyway, so
fusing that product into this kernel would not save a pass.

Exactness: the kernel uses PyTorch's resize weights bit for bit and sums in the same
order; the reference's own float32 rounding (FMA contraction differs between CPU builds
and CUDA) can move a resized value by an ulp, which flips a quantization level only when
``255 m`` lies within ~1e-5 of a half-integer. So maps agree exactly almost everywhere
and within one level (1/255) everywhere. No gradient: maps are built from detached
attributions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from kernels.backend import check_launchable, jit, tl, triton, use_triton
from kernels.errors import KernelInputError, describe
from kernels.resample import aa_weight, aa_window, resize_images
from kernels.tl_utils import cast_rne, rint

__all__ = [
    "OUTPUT_DTYPES",
    "SCALE_EPS",
    "abs_quantile",
    "detect_resnet_inputs",
    "detect_resnet_inputs_reference",
    "detect_resnet_inputs_triton",
    "finite_float32",
    "map_levels",
    "map_scale",
    "xai_maps",
    "xai_maps_reference",
    "xai_maps_triton",
]

SCALE_EPS = 1e-12
"""Floor of the per-sample scale, so an all-zero attribution maps to 0 (or 0.5)."""

OUTPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
"""Output dtypes of :func:`detect_resnet_inputs` (computation is float32)."""

_FLOAT32_MAX = torch.finfo(torch.float32).max


# --- dispatchers -----------------------------------------------------------------------


def xai_maps(attributions: Tensor, signed: bool, size: int, quantile: float) -> Tensor:
    """Maps ``(N, 3, size, size)`` float32 in [0, 1], multiples of 1/255 (see module doc)."""
    impl = xai_maps_triton if use_triton(attributions) else xai_maps_reference
    return impl(attributions, signed, size, quantile)


def detect_resnet_inputs(
    crops: Tensor,
    attributions: Tensor,
    signed: bool,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    quantile: float,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Detect-ResNet50's stacked input ``(2M, 3, size, size)`` (see module doc)."""
    impl = (
        detect_resnet_inputs_triton
        if use_triton(crops, attributions)
        else detect_resnet_inputs_reference
    )
    return impl(crops, attributions, signed, size, mean, std, quantile, dtype)


# --- reference -------------------------------------------------------------------------


def xai_maps_reference(attributions: Tensor, signed: bool, size: int, quantile: float) -> Tensor:
    """Plain-PyTorch maps: the rule in the module docstring, batched.

    Args:
        attributions: float ``(N, C, H, W)``, C = 1 or 3 (any float dtype; computed in
            float32).
        signed: map 0 to mid-grey (True) or to black (False).
        size: side of the output.
        quantile: quantile of ``|a|`` that maps to full scale, in (0, 1].

    Memory traffic (D = C*H*W float32 elements per sample, 4 bytes each): nan_to_num,
    abs (2 x read and write D), kthvalue (read D, twice when interpolating), divide,
    clamp, and for signed maps x0.5 and +0.5 (2-4 x read and write D), resize (read D,
    write C*H*S + C*S^2), clamp, x255, round, clamp, to uint8, to float32, /255 (7 x
    read and write C*S^2), expand for C = 1. About 40D + 60*C*S^2 bytes, 17 launches.
    """
    a = _check_attributions(attributions, size, quantile)
    n = a.shape[0]
    if n == 0 or a[0].numel() == 0:
        return torch.zeros(n, 3, size, size, device=a.device)
    a = finite_float32(a)
    m = map_values(a, map_scale(a, quantile), signed, size)
    return map_levels(m).to(torch.float32) / 255


def map_values(a: Tensor, scale: Tensor, signed: bool, size: int) -> Tensor:
    """Steps 2-4 of the rule, before quantization: ``a / s``, clamp and shift, resize.

    ``a``: finite float32 ``(N, C, H, W)``, C = 1 or 3; ``scale``: ``(N,)``. Returns
    ``(N, 3, size, size)`` in [0, 1]. Differentiable in ``a`` (the adaptive attack in
    ``training.attacks.adaptive`` backpropagates through it).
    """
    ratio = a / scale.view(-1, 1, 1, 1)
    m = 0.5 + 0.5 * ratio.clamp(-1.0, 1.0) if signed else ratio.clamp(0.0, 1.0)
    m = resize_images(m, size).clamp(0.0, 1.0)
    return m.expand(-1, 3, -1, -1) if m.shape[1] == 1 else m


def detect_resnet_inputs_reference(
    crops: Tensor,
    attributions: Tensor,
    signed: bool,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    quantile: float,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``cat([resize(crops), xai_maps(attributions)])`` normalized with ``mean``/``std``.

    Args:
        crops: float ``(M, 3, H, W)`` in [0, 1] (the detector's input).
        attributions: float ``(M, C, H', W')`` for those crops.
        signed, size, quantile: as :func:`xai_maps_reference`.
        mean, std: Detect-ResNet50's per-channel normalization.
        dtype: float32, float16 or bfloat16.

    Memory traffic: the maps' (above), plus resize of the crops (read 3HW, write 3HS +
    3S^2), concatenation (read and write 6MS^2), subtract and divide (2 x read and write
    6MS^2) and a cast for half output.
    """
    _check_crops(crops, attributions, mean, std, dtype)
    m = torch.tensor(tuple(mean), dtype=torch.float32, device=crops.device).view(1, 3, 1, 1)
    s = torch.tensor(tuple(std), dtype=torch.float32, device=crops.device).view(1, 3, 1, 1)
    maps = xai_maps_reference(attributions, signed, size, quantile)
    stacked = torch.cat([resize_images(crops.to(torch.float32), size), maps])
    return ((stacked - m) / s).to(dtype)


def finite_float32(attributions: Tensor) -> Tensor:
    """Attributions as float32 with NaN -> 0 and ±inf -> ±float32 max."""
    return torch.nan_to_num(
        attributions.detach().to(torch.float32),
        nan=0.0,
        posinf=_FLOAT32_MAX,
        neginf=-_FLOAT32_MAX,
    )


def map_scale(finite: Tensor, quantile: float) -> Tensor:
    """Per-sample scale ``s`` (``(N,)``) of :func:`finite_float32` attributions: step 1."""
    return abs_quantile(finite, float(quantile)).clamp_min(SCALE_EPS)


def abs_quantile(a: Tensor, q: float) -> Tensor:
    """Per-sample ``q``-quantile of ``|a|`` (linear interpolation), shape ``(N,)``.

    ``torch.quantile`` refuses inputs over 16M elements, so this takes the two order
    statistics around rank ``q * (M - 1)`` with ``kthvalue`` (batched along dim 1).
    """
    flat = a.abs().flatten(1)
    m = flat.shape[1]
    rank = q * (m - 1)
    below = math.floor(rank)
    low = flat.kthvalue(below + 1, dim=1).values
    frac = rank - below
    if frac == 0.0 or below + 1 >= m:
        return low
    high = flat.kthvalue(below + 2, dim=1).values
    return torch.lerp(low, high, frac)


def map_levels(maps: Tensor) -> Tensor:
    """Maps in [0, 1] -> uint8 levels ``round(255 m)`` (half to even), clamped to [0, 255]."""
    return torch.round(maps * 255).clamp(0, 255).to(torch.uint8)


# --- Triton ----------------------------------------------------------------------------


def xai_maps_triton(
    attributions: Tensor,
    signed: bool,
    size: int,
    quantile: float,
    *,
    block_y: int = 16,
    block_x: int = 32,
) -> Tensor:
    """The fused maps: same arguments and result as :func:`xai_maps_reference`.

    Memory traffic: ``s`` as the reference (nan_to_num, abs, kthvalue: ~17D bytes), then
    the kernel reads D (each element from DRAM about once) and writes 3*S^2 float32.
    """
    a = _check_attributions(attributions, size, quantile)
    n = a.shape[0]
    if n == 0 or a[0].numel() == 0:
        return xai_maps_reference(a, signed, size, quantile)
    check_launchable(a)
    out = torch.empty(n, 3, size, size, dtype=torch.float32, device=a.device)
    _launch(out, None, a, signed, size, (0.0,) * 3, (1.0,) * 3, quantile, block_y, block_x)
    return out


def detect_resnet_inputs_triton(
    crops: Tensor,
    attributions: Tensor,
    signed: bool,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    quantile: float,
    dtype: torch.dtype = torch.float32,
    *,
    block_y: int = 16,
    block_x: int = 32,
) -> Tensor:
    """The fused stacked input: same arguments and result as the reference, one launch.

    Memory traffic: ``s`` (~17D bytes per map), then the kernel reads each crop (3HW
    float32) and attribution (D) element about once from DRAM and writes 6MS^2 outputs
    once (4 bytes each in float32, 2 in half).
    """
    mean_t, std_t = _check_crops(crops, attributions, mean, std, dtype)
    a = _check_attributions(attributions, size, quantile)
    n = a.shape[0]
    if n == 0 or a[0].numel() == 0 or crops[0].numel() == 0:
        return detect_resnet_inputs_reference(crops, a, signed, size, mean, std, quantile, dtype)
    check_launchable(crops, a)
    out = torch.empty(2 * n, 3, size, size, dtype=dtype, device=a.device)
    _launch(out, crops, a, signed, size, mean_t, std_t, quantile, block_y, block_x)
    return out


def _launch(
    out: Tensor,
    crops: Tensor | None,
    attributions: Tensor,
    signed: bool,
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    quantile: float,
    block_y: int,
    block_x: int,
) -> None:
    a = attributions if attributions.dtype == torch.float32 else attributions.float()
    scale = map_scale(finite_float32(a), quantile)
    if crops is None:
        c, n_crops = a, 0  # never read: every row is a map
    else:
        c = crops if crops.dtype == torch.float32 else crops.float()
        n_crops = c.shape[0]
    attr_strides = list(a.stride())
    if a.shape[1] == 1:
        attr_strides[1] = 0  # one channel, read three times
    tiles_x = triton.cdiv(size, block_x)
    grid = (out.shape[0], triton.cdiv(size, block_y) * tiles_x)
    _detect_resnet_inputs_kernel[grid](
        out,
        c,
        a,
        scale,
        *c.stride(),
        c.shape[2],
        c.shape[3],
        *attr_strides,
        a.shape[2],
        a.shape[3],
        n_crops,
        size,
        *mean,
        *std,
        tiles_x,
        SIGNED=bool(signed),
        BLOCK_Y=block_y,
        BLOCK_X=block_x,
        enable_fp_fusion=False,
    )


@jit
def _detect_resnet_inputs_kernel(
    out_ptr,  # *f32|f16|bf16 (n_crops + n_maps, 3, S, S) contiguous
    crops_ptr,  # *f32 (n_crops, 3, Hc, Wc): rows [0, n_crops) of the output
    attr_ptr,  # *f32 (n_maps, C, Ha, Wa): rows [n_crops, n_crops + n_maps)
    scale_ptr,  # *f32 (n_maps,): per-sample scale s
    crop_sn,  # crops strides, in elements
    crop_sc,
    crop_sh,
    crop_sw,
    crop_h,  # crops height and width
    crop_w,
    attr_sn,  # attributions strides (attr_sc = 0 for one channel)
    attr_sc,
    attr_sh,
    attr_sw,
    attr_h,  # attributions height and width
    attr_w,
    n_crops,  # number of crop rows before the map rows (0: maps only)
    size,  # S: output side
    mean0,  # per-channel normalization of the output (float32)
    mean1,
    mean2,
    std0,
    std1,
    std2,
    tiles_x,  # ceil(S / BLOCK_X)
    SIGNED: tl.constexpr,  # maps: 0.5 + 0.5 * clamp(a / s, -1, 1), else clamp(a / s, 0, 1)
    BLOCK_Y: tl.constexpr,  # tile height
    BLOCK_X: tl.constexpr,  # tile width
):
    row = tl.program_id(0)
    tile = tl.program_id(1)
    oy = (tile // tiles_x) * BLOCK_Y + tl.arange(0, BLOCK_Y)
    ox = (tile % tiles_x) * BLOCK_X + tl.arange(0, BLOCK_X)
    is_map = row >= n_crops
    sample = tl.where(is_map, row - n_crops, row)
    if is_map:
        src = attr_ptr + sample.to(tl.int64) * attr_sn
    else:
        src = crops_ptr + sample.to(tl.int64) * crop_sn
    s_c = tl.where(is_map, attr_sc, crop_sc)
    s_h = tl.where(is_map, attr_sh, crop_sh)
    s_w = tl.where(is_map, attr_sw, crop_sw)
    in_h = tl.where(is_map, attr_h, crop_h)
    in_w = tl.where(is_map, attr_w, crop_w)
    scale = tl.load(scale_ptr + tl.where(is_map, sample, 0), mask=is_map, other=1.0)

    ylo, ycount, ycentre, yinv, ytaps = aa_window(oy, in_h, size)
    xlo, xcount, xcentre, xinv, xtaps = aa_window(ox, in_w, size)
    ytotal = tl.zeros([BLOCK_Y], tl.float32)
    for ty in range(0, ytaps):
        ytotal += aa_weight(ty, ylo, ycount, ycentre, yinv)
    xtotal = tl.zeros([BLOCK_X], tl.float32)
    for tx in range(0, xtaps):
        xtotal += aa_weight(tx, xlo, xcount, xcentre, xinv)
    ytotal = tl.where(ytotal != 0.0, ytotal, 1.0)  # all weights 0: PyTorch keeps them
    xtotal = tl.where(xtotal != 0.0, xtotal, 1.0)

    acc0 = tl.zeros([BLOCK_Y, BLOCK_X], tl.float32)
    acc1 = tl.zeros([BLOCK_Y, BLOCK_X], tl.float32)
    acc2 = tl.zeros([BLOCK_Y, BLOCK_X], tl.float32)
    for ty in range(0, ytaps):
        wy = tl.math.div_rn(aa_weight(ty, ylo, ycount, ycentre, yinv), ytotal)[:, None]
        line = src + (ylo + ty)[:, None] * s_h
        line_ok = (ty < ycount)[:, None]
        h0 = tl.zeros([BLOCK_Y, BLOCK_X], tl.float32)
        h1 = tl.zeros([BLOCK_Y, BLOCK_X], tl.float32)
        h2 = tl.zeros([BLOCK_Y, BLOCK_X], tl.float32)
        for tx in range(0, xtaps):
            wx = tl.math.div_rn(aa_weight(tx, xlo, xcount, xcentre, xinv), xtotal)[None, :]
            ptr = line + (xlo + tx)[None, :] * s_w
            ok = line_ok & (tx < xcount)[None, :]
            v0 = tl.load(ptr, mask=ok, other=0.0)
            v1 = tl.load(ptr + s_c, mask=ok, other=0.0)
            v2 = tl.load(ptr + 2 * s_c, mask=ok, other=0.0)
            h0 += tl.where(is_map, _map_value(v0, scale, SIGNED), v0) * wx
            h1 += tl.where(is_map, _map_value(v1, scale, SIGNED), v1) * wx
            h2 += tl.where(is_map, _map_value(v2, scale, SIGNED), v2) * wx
        acc0 += h0 * wy
        acc1 += h1 * wy
        acc2 += h2 * wy

    plane = size * size
    dst = out_ptr + row.to(tl.int64) * 3 * plane + oy[:, None] * size + ox[None, :]
    inside = (oy < size)[:, None] & (ox < size)[None, :]
    out_ty = out_ptr.dtype.element_ty
    v0 = tl.where(is_map, _quantize(acc0), acc0)
    v1 = tl.where(is_map, _quantize(acc1), acc1)
    v2 = tl.where(is_map, _quantize(acc2), acc2)
    tl.store(dst, cast_rne(tl.math.div_rn(v0 - mean0, std0), out_ty), mask=inside)
    tl.store(dst + plane, cast_rne(tl.math.div_rn(v1 - mean1, std1), out_ty), mask=inside)
    tl.store(dst + 2 * plane, cast_rne(tl.math.div_rn(v2 - mean2, std2), out_ty), mask=inside)


@jit
def _map_value(a, scale, SIGNED: tl.constexpr):
    """Step 2 of the rule for attribution values ``a``: NaN -> 0, ±inf -> ±max, scaled."""
    a = tl.where(a != a, 0.0, a)
    a = tl.minimum(tl.maximum(a, -3.4028234663852886e38), 3.4028234663852886e38)
    ratio = tl.math.div_rn(a, scale)
    if SIGNED:
        return 0.5 + 0.5 * tl.minimum(tl.maximum(ratio, -1.0), 1.0)
    else:
        return tl.minimum(tl.maximum(ratio, 0.0), 1.0)


@jit
def _quantize(m):
    """Steps 3-4 after the resize: clamp to [0, 1], then ``round(255 m) / 255``."""
    m = tl.minimum(tl.maximum(m, 0.0), 1.0)
    return tl.math.div_rn(rint(m * 255.0), 255.0)


# --- arguments -------------------------------------------------------------------------


def _check_attributions(attributions: Tensor, size: int, quantile: float) -> Tensor:
    if not (
        isinstance(attributions, Tensor)
        and attributions.dim() == 4
        and attributions.is_floating_point()
        and attributions.shape[1] in (1, 3)
    ):
        raise KernelInputError(
            "attributions", describe(attributions), "a float tensor (N, C, H, W) with C = 1 or 3"
        )
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise KernelInputError("size", repr(size), "a positive int")
    if isinstance(quantile, bool) or not isinstance(quantile, float | int) or not 0 < quantile <= 1:
        raise KernelInputError("quantile", repr(quantile), "a number in (0, 1]")
    return attributions.detach()


def _check_crops(
    crops: Tensor,
    attributions: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    dtype: torch.dtype,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if not (
        isinstance(crops, Tensor)
        and crops.dim() == 4
        and crops.is_floating_point()
        and crops.shape[1] == 3
    ):
        raise KernelInputError("crops", describe(crops), "a float tensor (M, 3, H, W)")
    if not (isinstance(attributions, Tensor) and attributions.shape[:1] == crops.shape[:1]):
        raise KernelInputError(
            "attributions", describe(attributions), f"one per crop ({crops.shape[0]})"
        )
    if dtype not in OUTPUT_DTYPES:
        raise KernelInputError("dtype", dtype, f"one of {OUTPUT_DTYPES}")
    values = []
    for what, v in (("mean", mean), ("std", std)):
        try:
            t = tuple(float(x) for x in v)
        except (TypeError, ValueError):
            t = ()
        if len(t) != 3:
            raise KernelInputError(what, repr(v), "three numbers (R, G, B)")
        values.append(t)
    if any(x == 0.0 for x in values[1]):
        raise KernelInputError("std", values[1], "non-zero values")
    return values[0], values[1]
