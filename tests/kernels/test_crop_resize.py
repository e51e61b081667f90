"""kernels.crop_resize: the fused crop + resize + normalize kernel against its reference."""

from __future__ import annotations

import pytest
import torch

from engine.faces import crop_faces, enlarge_boxes
from kernels.crop_resize import (
    crop_resize_normalize_reference,
    crop_resize_normalize_triton,
)
from kernels.errors import KernelInputError
from tests.kernels.helpers import (
    BOXES,
    FRAME_IDS,
    IMAGENET,
    IMAGENET_MEAN,
    IMAGENET_STD,
    UNIT,
    assert_close,
    padded_frames,
)


@pytest.mark.triton
@pytest.mark.parametrize(
    ("size", "dtype", "norm", "blocks"),
    [
        (29, torch.float32, UNIT, (16, 16)),  # several tiles, partial at the edges
        (29, torch.float16, IMAGENET, (32, 32)),
        (29, torch.bfloat16, IMAGENET, (32, 32)),
        (64, torch.float32, IMAGENET, (64, 64)),
        (64, torch.bfloat16, UNIT, (64, 64)),
    ],
)
def test_kernel_matches_reference_on_a_padded_batch_of_two_frame_sizes(
    size: int, dtype: torch.dtype, norm: tuple, blocks: tuple[int, int]
) -> None:
    frames = padded_frames()
    mean, std = norm
    ref = crop_resize_normalize_reference(frames, BOXES, FRAME_IDS, size, mean, std, dtype)
    out = crop_resize_normalize_triton(
        frames, BOXES, FRAME_IDS, size, mean, std, dtype, block_y=blocks[0], block_x=blocks[1]
    )
    assert_close(out, ref)


@pytest.mark.triton
def test_kernel_reads_only_inside_each_box() -> None:
    """Pixels around the boxes (and the batch's zero padding) never leak into a crop."""
    frames = torch.full((2, 40, 30, 3), 255, dtype=torch.uint8)
    boxes = torch.tensor([[0, 0, 7, 7], [23, 33, 30, 40], [10, 12, 11, 13], [5, 5, 25, 25]])
    ids = torch.tensor([0, 1, 0, 1])
    for (x1, y1, x2, y2), fid in zip(boxes.tolist(), ids.tolist(), strict=True):
        frames[fid, y1:y2, x1:x2] = 0
    out = crop_resize_normalize_triton(frames, boxes, ids, 13, *IMAGENET)
    expected = (0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.equal(out, expected.view(1, 3, 1, 1).expand(4, 3, 13, 13))


@pytest.mark.triton
def test_box_of_the_output_size_is_copied_exactly() -> None:
    """No resize: the same float32 values as the reference, so every dtype rounds alike."""
    frames = padded_frames(1)
    boxes, ids = torch.tensor([[3, 100, 32, 129], [20, 4, 49, 33]]), torch.tensor([1, 0])
    pixels = torch.stack([frames[1, 100:129, 3:32], frames[0, 4:33, 20:49]])
    assert torch.equal(
        crop_resize_normalize_triton(frames, boxes, ids, 29), pixels.permute(0, 3, 1, 2) / 255
    )
    for dtype in (torch.float16, torch.bfloat16):
        args = (frames, boxes, ids, 29, *IMAGENET, dtype)
        ref = crop_resize_normalize_reference(*args)
        assert torch.equal(crop_resize_normalize_triton(*args, block_y=32, block_x=32), ref)


@pytest.mark.triton
def test_engine_crop_boxes_from_the_detector_rule() -> None:
    """Boxes made by enlarge_boxes (clipped at every edge) crop as the reference does."""
    frames = padded_frames(2)
    detections = torch.tensor(
        [[-5.0, -3.0, 20.0, 30.0], [40.0, 20.0, 60.0, 45.0], [80.0, 150.0, 99.0, 183.0]]
    )
    boxes = torch.cat(
        [enlarge_boxes(detections[:2], 37, 53, 1.3), enlarge_boxes(detections[2:], 181, 97, 1.3)]
    )
    ids = torch.tensor([0, 0, 1])
    ref = crop_resize_normalize_reference(frames, boxes, ids, 29)
    assert_close(crop_resize_normalize_triton(frames, boxes, ids, 29, block_y=32), ref)


def test_reference_is_the_engine_crop() -> None:
    frames = padded_frames()
    plain = crop_faces(frames, BOXES, FRAME_IDS, 29)
    assert torch.equal(plain, crop_resize_normalize_reference(frames, BOXES, FRAME_IDS, 29))
    assert plain.dtype == torch.float32 and 0 <= plain.min() and plain.max() <= 1
    normalized = crop_faces(frames, BOXES, FRAME_IDS, 29, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in IMAGENET)
    assert torch.equal(normalized, (plain - mean) / std)
    half = crop_faces(frames, BOXES, FRAME_IDS, 29, dtype=torch.bfloat16)
    assert torch.equal(half, plain.to(torch.bfloat16))


@pytest.mark.parametrize("impl", [crop_resize_normalize_reference, crop_resize_normalize_triton])
def test_no_boxes_give_an_empty_batch(impl) -> None:
    out = impl(padded_frames(), torch.zeros(0, 4, dtype=torch.long), torch.zeros(0).long(), 29)
    assert out.shape == (0, 3, 29, 29) and out.dtype == torch.float32


@pytest.mark.parametrize("impl", [crop_resize_normalize_reference, crop_resize_normalize_triton])
@pytest.mark.parametrize(
    ("boxes", "ids", "what"),
    [
        ([[0, 0, 10, 182]], [1], "crop box"),  # below the padded batch
        ([[5, 5, 5, 9]], [0], "crop box"),  # empty
        ([[0, 0, 4, 4]], [2], "crop box"),  # no frame 2
        ([[0, 0, 4, 4, 1]], [0], "boxes"),
    ],
)
def test_bad_boxes_are_a_clear_error(impl, boxes: list, ids: list, what: str) -> None:
    with pytest.raises(KernelInputError, match=what):
        impl(padded_frames(), torch.tensor(boxes), torch.tensor(ids), 16)


@pytest.mark.parametrize("impl", [crop_resize_normalize_reference, crop_resize_normalize_triton])
def test_bad_frames_and_options_are_a_clear_error(impl) -> None:
    frames, boxes, ids = padded_frames(), BOXES[:1], FRAME_IDS[:1]
    with pytest.raises(KernelInputError, match="uint8"):
        impl(frames.float(), boxes, ids, 16)
    with pytest.raises(KernelInputError, match="std"):
        impl(frames, boxes, ids, 16, (0, 0, 0), (1, 0, 1))
    with pytest.raises(KernelInputError, match="mean"):
        impl(frames, boxes, ids, 16, (0, 0), (1, 1, 1))
    with pytest.raises(KernelInputError, match="dtype"):
        impl(frames, boxes, ids, 16, dtype=torch.float64)
    with pytest.raises(KernelInputError, match="size"):
        impl(frames, boxes, ids, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_vectorized_reference_equals_the_per_face_reference(dtype) -> None:
    """The benchmark's baseline (all faces in two batched matrix products) computes the
    per-face reference: up- and downscaled boxes, a box of the output size, edge boxes,
    two frame sizes' padding, normalization."""
    from kernels.crop_resize import crop_resize_normalize_vectorized

    g = torch.Generator().manual_seed(5)
    frames = torch.randint(0, 256, (2, 90, 120, 3), dtype=torch.uint8, generator=g)
    boxes = torch.tensor(
        [[0, 0, 120, 90], [10, 5, 26, 21], [3, 7, 4, 9], [50, 30, 82, 62], [100, 70, 120, 90]]
    )
    ids = torch.tensor([0, 1, 0, 1, 1])
    for size in (32, 16, 7):
        args = (frames, boxes, ids, size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), dtype)
        want = crop_resize_normalize_reference(*args)
        got = crop_resize_normalize_vectorized(*args)
        assert got.shape == want.shape and got.dtype == want.dtype
        limit = 1e-4 if dtype == torch.float32 else 2e-2
        assert (got.float() - want.float()).abs().max() <= limit, size
