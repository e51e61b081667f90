"""kernels.xai_map: the fused map / Detect-ResNet50 input kernel against engine.xai."""

from __future__ import annotations

import pytest
import torch

from engine.faces import resize_images
from engine.models import create_model
from engine.xai import prepare_map
from engine.xai.maps import detect_resnet_inputs
from kernels.errors import KernelInputError
from kernels.xai_map import (
    detect_resnet_inputs_reference,
    detect_resnet_inputs_triton,
    xai_maps_reference,
    xai_maps_triton,
)
from tests.kernels.helpers import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TOLERANCE,
    assert_close,
    assert_levels_close,
    heavy_tailed,
)


def crops_for(a: torch.Tensor, h: int, w: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(a.shape[0], 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.triton
@pytest.mark.parametrize(
    ("size", "method", "quantile"),
    [
        (29, "guided_backprop", 0.995),  # downscale 37x41 -> 29, signed
        (29, "saliency", 1.0),  # unsigned; q = 1 puts an inf sample's map at mid-grey
        (64, "integrated_gradients", 0.9),  # upscale
        (64, "saliency", 0.995),
    ],
)
def test_maps_match_the_engine_rule(size: int, method: str, quantile: float) -> None:
    a = heavy_tailed(3, 3, 37, 41)
    if method == "saliency":
        a = a.abs()
    ref = prepare_map(a, method, size, quantile)  # the engine's map, on CPU
    out = xai_maps_triton(a, method != "saliency", size, quantile, block_y=64, block_x=64)
    assert_levels_close(out, ref)
    assert torch.equal(out * 255, (out * 255).round())  # quantized exactly


@pytest.mark.triton
def test_maps_in_several_tiles_one_channel_and_half_precision_attributions() -> None:
    a = heavy_tailed(3, 1, 43, 43)  # 1849 elements per sample, one channel
    ref = xai_maps_reference(a, True, 29, 0.995)
    out = xai_maps_triton(a, True, 29, 0.995, block_y=16, block_x=16)
    assert_levels_close(out, ref)
    assert torch.equal(out[:, 0], out[:, 2])
    half = heavy_tailed(2, 3, 23, 31).to(torch.bfloat16)
    assert_levels_close(
        xai_maps_triton(half, True, 29, 0.995), xai_maps_reference(half, True, 29, 0.995)
    )


@pytest.mark.triton
def test_maps_without_resize_and_exact_resizes_equal_the_reference_exactly() -> None:
    a = heavy_tailed(3, 3, 29, 29)
    for signed in (True, False):
        ref = xai_maps_reference(a, signed, 29, 0.995)
        assert torch.equal(xai_maps_triton(a, signed, 29, 0.995, block_y=32, block_x=32), ref)
    zeros = torch.zeros(2, 3, 16, 16)  # 16 -> 8: dyadic weights, sums exact
    assert torch.equal(xai_maps_triton(zeros, True, 8, 0.995), torch.full((2, 3, 8, 8), 128 / 255))
    assert torch.equal(xai_maps_triton(zeros, False, 8, 0.995), torch.zeros(2, 3, 8, 8))


@pytest.mark.triton
def test_quantization_rounds_half_to_even_like_torch() -> None:
    """255 m exactly k + 1/2 for every k: torch.round (and the kernel) pick the even level."""
    ties = torch.tensor([(2 * k + 1) / 510 for k in range(255)] + [1.0])  # s = max = 1
    a = ties.view(1, 1, 16, 16)
    out = xai_maps_triton(a, False, 16, 1.0, block_y=16, block_x=16)
    assert torch.equal(out, xai_maps_reference(a, False, 16, 1.0))
    levels = (out[0, 0].flatten()[:255] * 255).round().long()
    assert torch.equal(levels, torch.arange(255) + torch.arange(255) % 2)


@pytest.mark.triton
@pytest.mark.parametrize(
    ("size", "dtype", "blocks"),
    [(29, torch.float32, (16, 32)), (64, torch.float16, (64, 64)), (29, torch.bfloat16, (32, 32))],
)
def test_detect_resnet_inputs_match_reference(
    size: int, dtype: torch.dtype, blocks: tuple[int, int]
) -> None:
    a = heavy_tailed(3, 3, 37, 41)
    crops = crops_for(a, 31, 35)  # crops and maps need not share a size
    args = (crops, a, True, size, IMAGENET_MEAN, IMAGENET_STD, 0.995, dtype)
    ref = detect_resnet_inputs_reference(*args)
    out = detect_resnet_inputs_triton(*args, block_y=blocks[0], block_x=blocks[1])
    assert out.shape == (6, 3, size, size) and out.dtype == dtype
    assert_close(out[:3], ref[:3])
    # maps: a level is 1/255/std; half types add their own rounding of the result
    tol = TOLERANCE[dtype]
    diff = (out[3:].double() - ref[3:].double()).abs()
    level = 1 / 255 / torch.tensor(IMAGENET_STD, dtype=torch.double).view(1, 3, 1, 1)
    assert (diff <= level + tol["atol"] + tol["rtol"] * ref[3:].double().abs()).all()
    assert (diff > level / 2).double().mean() <= 0.01


def test_reference_is_prepare_map_normalized_next_to_the_resized_crop() -> None:
    a = heavy_tailed(3, 3, 37, 41)
    crops = crops_for(a, 37, 41)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    stacked = detect_resnet_inputs(crops, a, "guided_backprop", 29, IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(stacked[:3], (resize_images(crops, 29) - mean) / std)
    assert torch.equal(stacked[3:], (prepare_map(a, "guided_backprop", 29) - mean) / std)
    assert torch.equal(
        xai_maps_reference(a, True, 29, 0.995), prepare_map(a, "input_x_gradient", 29)
    )


def test_stacked_input_gives_detect_resnet50_logits() -> None:
    model = create_model("detect_resnet50_tiny", kind="adversarial").eval()
    size = model.cfg.input_size
    a = heavy_tailed(2, 3, 37, 41)
    crops = crops_for(a, 37, 41)
    stacked = detect_resnet_inputs(crops, a, "saliency", size, model.cfg.mean, model.cfg.std)
    with torch.no_grad():
        expected = model(resize_images(crops, size), prepare_map(a, "saliency", size))
        torch.testing.assert_close(model.forward_stacked(stacked), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="2M, 3, S, S"):
        model.forward_stacked(stacked[:3])


def test_bad_arguments_are_clear_errors() -> None:
    a = heavy_tailed(2, 3, 9, 9)
    crops = crops_for(a, 9, 9)
    for impl in (xai_maps_reference, xai_maps_triton):
        with pytest.raises(KernelInputError, match="C = 1 or 3"):
            impl(torch.zeros(1, 2, 4, 4), True, 8, 0.9)
        with pytest.raises(KernelInputError, match="quantile"):
            impl(a, True, 8, 1.5)
    for impl in (detect_resnet_inputs_reference, detect_resnet_inputs_triton):
        with pytest.raises(KernelInputError, match="one per crop"):
            impl(crops[:1], a, True, 8, IMAGENET_MEAN, IMAGENET_STD, 0.9)
        with pytest.raises(KernelInputError, match="std"):
            impl(crops, a, True, 8, IMAGENET_MEAN, (1, 0, 1), 0.9)


def test_empty_batches() -> None:
    empty = torch.zeros(0, 3, 9, 9)
    assert xai_maps_triton(empty, True, 8, 0.9).shape == (0, 3, 8, 8)
    out = detect_resnet_inputs_triton(empty, empty, True, 8, IMAGENET_MEAN, IMAGENET_STD, 0.9)
    assert out.shape == (0, 3, 8, 8)
