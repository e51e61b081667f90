"""The XAI map: an attribution turned into the image-like input of Detect-ResNet50.

:func:`prepare_map` is the ONE implementation of this step, used online by the engine
and offline by the dataset builder in ``training/`` (which stores maps as uint8 with
:func:`map_to_uint8` and reads them back with :func:`uint8_to_map`). It is
deterministic, batched (no loop over samples), and its rule is, per sample ``a`` of
shape ``(C, H, W)``:

1. ``s`` = the ``quantile`` (default 0.995) of ``|a|`` over all ``C*H*W`` elements, with
   linear interpolation between order statistics (``torch.quantile``'s default), floored
   at :data:`SCALE_EPS` so an all-zero attribution stays finite. NaN counts as 0 and
   ±inf as the largest finite float32. The map is thus invariant to the attribution's
   scale (``prepare_map(k * a) == prepare_map(a)`` for ``k > 0``) and robust to a few
   extreme pixels.
2. Signed methods (``input_x_gradient``, ``integrated_gradients``,
   ``guided_backprop``; ``saliency`` computed with ``abs=False`` — pass
   ``signed=True``): ``m = 0.5 + 0.5 * clamp(a / s, -1, 1)``, so 0 is mid-grey.
   Unsigned (``saliency``): ``m = clamp(a / s, 0, 1)``.
3. Resize to ``size x size`` with :func:`engine.faces.crop.resize_images` (bilinear,
   antialiased — the crop's own resize), clamp to [0, 1]; a 1-channel map is repeated
   to 3 channels.
4. Quantize to multiples of 1/255 (round half to even): the online map equals the
   uint8 map stored offline, decoded, bit for bit. A zero attribution maps to 128/255
   (the quantized 0.5) when signed and to 0 when unsigned.

Computation is in float32 whatever the attributions' dtype; the result is float32.
(The paper's public code wrote un-normalized maps as 8-bit images without clamping;
this rule is our documented replacement for it.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from engine.faces.crop import resize_images
from engine.xai.attribute import METHODS, check_image_batch
from engine.xai.errors import InvalidXAIOptionError, UnknownXAIMethodError

__all__ = [
    "DEFAULT_QUANTILE",
    "SCALE_EPS",
    "UNSIGNED_METHODS",
    "map_to_uint8",
    "prepare_map",
    "uint8_to_map",
]

DEFAULT_QUANTILE = 0.995
"""The quantile of |attribution| that maps to full scale (mid-grey ± 0.5 or 1)."""

SCALE_EPS = 1e-12
"""Floor of the per-sample scale, so an all-zero attribution maps to 0 (or 0.5)."""

UNSIGNED_METHODS = frozenset({"saliency"})
"""Methods whose attributions are non-negative by default (mapped onto [0, 1])."""


def prepare_map(
    attributions: Tensor,
    method: str,
    size: int,
    quantile: float = DEFAULT_QUANTILE,
    *,
    signed: bool | None = None,
) -> Tensor:
    """Turn attributions ``(N, C, H, W)`` into maps ``(N, 3, size, size)`` in [0, 1].

    Args:
        attributions: output of :func:`engine.xai.attribute` (C = 3, or 1).
        method: the method that produced them (one of :data:`engine.xai.METHODS`);
            it decides whether the map is signed.
        size: side of the output map (Detect-ResNet50's input size).
        quantile: the quantile of ``|a|`` per sample that maps to full scale, in (0, 1].
        signed: override the method's default (e.g. True for saliency computed with
            ``abs=False``).

    Returns:
        float32 maps on the attributions' device, multiples of 1/255 in [0, 1]; see the
        module docstring for the exact rule.
    """
    if not isinstance(method, str) or method not in METHODS:
        raise UnknownXAIMethodError(method, METHODS)
    check_image_batch("attributions", attributions)
    channels = attributions.shape[1]
    if channels not in (1, 3):
        raise InvalidXAIOptionError("attributions channels", channels, "1 or 3")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidXAIOptionError("size", size, "a positive int")
    if (
        isinstance(quantile, bool)
        or not isinstance(quantile, float | int)
        or not 0.0 < quantile <= 1.0
    ):
        raise InvalidXAIOptionError("quantile", quantile, "a number in (0, 1]")
    if signed is None:
        signed = method not in UNSIGNED_METHODS

    big = torch.finfo(torch.float32).max
    a = torch.nan_to_num(attributions.detach().to(torch.float32), nan=0.0, posinf=big, neginf=-big)
    n = a.shape[0]
    if n == 0 or a[0].numel() == 0:
        return torch.zeros(n, 3, size, size, device=a.device)
    scale = _abs_quantile(a, float(quantile)).clamp_min(SCALE_EPS).view(n, 1, 1, 1)
    ratio = a / scale
    m = 0.5 + 0.5 * ratio.clamp(-1.0, 1.0) if signed else ratio.clamp(0.0, 1.0)
    m = resize_images(m, size).clamp(0.0, 1.0)
    if channels == 1:
        m = m.expand(-1, 3, -1, -1)
    return uint8_to_map(map_to_uint8(m))


def map_to_uint8(maps: Tensor) -> Tensor:
    """Maps in [0, 1] -> uint8 ``round(255 * m)``; exact for :func:`prepare_map` output."""
    if not (isinstance(maps, Tensor) and maps.is_floating_point()):
        raise InvalidXAIOptionError("maps", type(maps).__name__, "a floating-point tensor")
    return torch.round(maps * 255).clamp(0, 255).to(torch.uint8)


def uint8_to_map(maps: Tensor) -> Tensor:
    """uint8 maps -> float32 ``m / 255``: the inverse of :func:`map_to_uint8`."""
    if not (isinstance(maps, Tensor) and maps.dtype == torch.uint8):
        raise InvalidXAIOptionError(
            "maps", getattr(maps, "dtype", type(maps).__name__), "a uint8 tensor"
        )
    return maps.to(torch.float32) / 255


def _abs_quantile(a: Tensor, q: float) -> Tensor:
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
