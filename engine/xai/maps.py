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
The rule's one implementation is :func:`kernels.xai_map.xai_maps_reference` (this module
validates and dispatches: the fused Triton kernel on CUDA, the reference elsewhere), and
:func:`detect_resnet_inputs` builds Detect-ResNet50's normalized input from it.
(The paper's public code wrote un-normalized maps as 8-bit images without clamping;
this rule is our documented replacement for it.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from engine.xai.attribute import METHODS, check_image_batch
from engine.xai.errors import InvalidXAIOptionError, UnknownXAIMethodError
from kernels.xai_map import SCALE_EPS, map_levels, xai_maps
from kernels.xai_map import detect_resnet_inputs as _detect_resnet_inputs

__all__ = [
    "DEFAULT_QUANTILE",
    "SCALE_EPS",
    "UNSIGNED_METHODS",
    "detect_resnet_inputs",
    "map_to_uint8",
    "prepare_map",
    "uint8_to_map",
]

DEFAULT_QUANTILE = 0.995
"""The quantile of |attribution| that maps to full scale (mid-grey ± 0.5 or 1)."""

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
        module docstring for the exact rule. On CUDA the scaling, resize and
        quantization are one fused Triton kernel (:mod:`kernels.xai_map`), elsewhere its
        PyTorch reference; the two agree exactly except where rounding puts ``255 m``
        within ~1e-5 of a half-integer, and then by one level.
    """
    signed = _map_options(attributions, method, size, quantile, signed)
    return xai_maps(attributions, signed, size, float(quantile))


def detect_resnet_inputs(
    crops: Tensor,
    attributions: Tensor,
    method: str,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    quantile: float = DEFAULT_QUANTILE,
    *,
    signed: bool | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Detect-ResNet50's whole input, ``(2M, 3, size, size)``, in one pass.

    Rows ``[0, M)`` are ``(resize_images(crops, size) - mean) / std`` and rows ``[M, 2M)``
    are ``(prepare_map(attributions, method, size, quantile) - mean) / std``: exactly what
    ``DetectResNet50.forward(resize_images(crops, size), maps)`` feeds its backbone, ready
    for ``DetectResNet50.forward_stacked``.

    Args:
        crops: the detector's input ``(M, 3, H, W)`` in [0, 1].
        attributions, method, quantile, signed: as :func:`prepare_map`.
        size: Detect-ResNet50's input size.
        mean, std: Detect-ResNet50's normalization (``model.cfg.mean``/``std``).
        dtype: float32, float16 or bfloat16.

    On CUDA this is the per-sample scale (``torch.kthvalue``,
    :func:`kernels.xai_map.map_scale`) plus one fused Triton launch that writes the whole
    buffer (:mod:`kernels.xai_map`); elsewhere the PyTorch reference.
    """
    signed = _map_options(attributions, method, size, quantile, signed)
    check_image_batch("crops", crops)
    if crops.shape[0] != attributions.shape[0] or crops.shape[1] != 3:
        raise InvalidXAIOptionError(
            "crops",
            f"shape {tuple(crops.shape)}",
            f"one RGB crop per attribution: ({attributions.shape[0]}, 3, H, W)",
        )
    return _detect_resnet_inputs(
        crops, attributions, signed, size, mean, std, float(quantile), dtype
    )


def map_to_uint8(maps: Tensor) -> Tensor:
    """Maps in [0, 1] -> uint8 ``round(255 * m)``; exact for :func:`prepare_map` output."""
    if not (isinstance(maps, Tensor) and maps.is_floating_point()):
        raise InvalidXAIOptionError("maps", type(maps).__name__, "a floating-point tensor")
    return map_levels(maps)


def uint8_to_map(maps: Tensor) -> Tensor:
    """uint8 maps -> float32 ``m / 255``: the inverse of :func:`map_to_uint8`."""
    if not (isinstance(maps, Tensor) and maps.dtype == torch.uint8):
        raise InvalidXAIOptionError(
            "maps", getattr(maps, "dtype", type(maps).__name__), "a uint8 tensor"
        )
    return maps.to(torch.float32) / 255


def _map_options(
    attributions: Tensor, method: str, size: int, quantile: float, signed: bool | None
) -> bool:
    """Validate :func:`prepare_map`'s arguments; return whether the map is signed."""
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
    return method not in UNSIGNED_METHODS if signed is None else bool(signed)
