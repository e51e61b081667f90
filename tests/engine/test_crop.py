"""Face crops: the FaceForensics++ box rule, the crop and its resize."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageFilter

from engine.faces.crop import crop_faces, enlarge_boxes, resize_images


def test_box_is_enlarged_to_a_centred_square():
    # 100x60 box centred at (150, 130): side floor(100 * 1.3) = 130
    out = enlarge_boxes(torch.tensor([[100.0, 100.0, 200.0, 160.0, 0.9]]), 480, 640, 1.3)
    assert out.tolist() == [[150 - 65, 130 - 65, 150 + 65, 130 + 65]]


def test_box_at_the_top_left_is_moved_inside_and_at_bottom_right_shrunk():
    out = enlarge_boxes(
        torch.tensor([[0.0, 0.0, 40.0, 40.0], [600.0, 440.0, 640.0, 480.0]]), 480, 640, 1.3
    )
    x1, y1, x2, y2 = out[0].tolist()
    assert (x1, y1) == (0, 0) and x2 - x1 == y2 - y1 == 52
    x1, y1, x2, y2 = out[1].tolist()
    assert (x2, y2) == (640, 480) and x2 - x1 == y2 - y1  # still square, inside the frame
    assert x2 - x1 < 52


def test_empty_boxes_give_empty_crops():
    assert enlarge_boxes(torch.zeros(0, 5), 10, 10, 1.3).shape == (0, 4)
    assert crop_faces(
        torch.zeros(1, 10, 10, 3, dtype=torch.uint8),
        torch.zeros(0, 4).long(),
        torch.zeros(0).long(),
        32,
    ).shape == (0, 3, 32, 32)


def test_crops_come_from_the_right_frame_and_place():
    frames = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)
    frames[1, 10:30, 20:40] = 200  # a bright square in frame 1 only
    boxes = torch.tensor([[20, 10, 40, 30], [20, 10, 40, 30]])
    crops = crop_faces(frames, boxes, torch.tensor([0, 1]), 16)
    assert crops.shape == (2, 3, 16, 16) and crops.dtype == torch.float32
    assert crops[0].max() == 0
    torch.testing.assert_close(crops[1], torch.full((3, 16, 16), 200 / 255))


def test_resize_matches_pil_bilinear_as_used_by_the_ffpp_pipeline():
    rng = np.random.default_rng(0)
    img = (rng.random((97, 83, 3)) * 255).astype(np.uint8)
    img = np.array(Image.fromarray(img).filter(ImageFilter.SMOOTH))
    ref = np.asarray(Image.fromarray(img).resize((41, 41), Image.BILINEAR)).astype(np.float32)
    ours = resize_images(torch.from_numpy(img).permute(2, 0, 1)[None].float(), 41)[0]
    diff = (ours.permute(1, 2, 0).numpy() - ref).__abs__()
    assert diff.mean() < 1.0 and diff.max() < 4.0  # within rounding of PIL's 8-bit output
