"""The pipeline: faces found, cropped, judged, explained and checked; routing by thresholds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import ConfigError
from engine.faces import enlarge_boxes, resize_images
from engine.frames import Frame, FrameBatch
from engine.pipeline import Pipeline
from engine.records import Verdict
from engine.xai import attribute, prepare_map
from tests.conftest import tiny_config
from tests.media import face_box, face_frames


def batch_of(images: list[np.ndarray], source: str = "clip") -> FrameBatch:
    return FrameBatch.from_frames([Frame(source, i, i / 25, im) for i, im in enumerate(images)])


@pytest.fixture(scope="module")
def faces() -> list[np.ndarray]:
    return face_frames(3, size=192)


def test_every_frame_gets_a_record_and_the_real_face_is_found(faces):
    pipeline = Pipeline.from_config(tiny_config())
    blank = np.zeros((120, 160, 3), np.uint8)
    result = pipeline.analyze(batch_of([faces[0], blank, faces[2]]), job="j1")
    assert [r.frame for r in result.records] == [0, 1, 2]
    assert [len(r.faces) for r in result.records] == [1, 0, 1]
    assert result.records[1].verdict is Verdict.NO_FACE
    # The Haar box lies on the photo's face.
    x1, y1, x2, y2 = result.records[0].faces[0].box
    fx1, fy1, fx2, fy2 = face_box(0, size=192)
    assert abs((x1 + x2) / 2 - (fx1 + fx2) / 2) < 15 and abs((y1 + y2) / 2 - (fy1 + fy2) / 2) < 15
    assert all(r.job == "j1" and r.weights == "untrained" for r in result.records)
    assert set(result.records[0].timings_ms) == {
        "detect",
        "crop",
        "classify",
        "xai",
        "adversarial",
        "total",
    }


def test_faces_over_the_fake_threshold_skip_the_attack_check(faces):
    pipeline = Pipeline.from_config(tiny_config("pipeline.fake_threshold=0.0"))
    result = pipeline.analyze(batch_of(faces[:2]))
    assert all(
        f.verdict is Verdict.FAKE and f.p_attacked is None for r in result.records for f in r.faces
    )
    assert result.timings_ms["xai"] < 5  # no backward pass ran


@pytest.mark.parametrize("threshold,verdict", [(0.0, Verdict.ATTACKED), (1.0, Verdict.REAL)])
def test_faces_called_real_are_checked_by_detect_resnet50(faces, threshold, verdict):
    pipeline = Pipeline.from_config(
        tiny_config("pipeline.fake_threshold=1.0", f"pipeline.attacked_threshold={threshold}")
    )
    result = pipeline.analyze(batch_of(faces[:2]))
    checked = [f for r in result.records for f in r.faces]
    assert checked and all(f.p_attacked is not None for f in checked)
    # attacked_threshold 1.0 is only reached by p_attacked == 1.0; anything below is real.
    assert all(
        f.verdict is verdict or (verdict is Verdict.REAL and f.p_attacked == 1.0) for f in checked
    )


@pytest.mark.parametrize(
    "method", ["guided_backprop", "saliency", "input_x_gradient", "integrated_gradients"]
)
def test_attack_check_sees_the_training_path_map(faces, method):
    """p_attacked equals Detect-ResNet50 on the crop and the map built by the shared code."""
    cfg = tiny_config(
        "pipeline.fake_threshold=1.0", f'pipeline.xai_method="{method}"', "pipeline.ig_steps=4"
    )
    pipeline = Pipeline.from_config(cfg)
    batch = batch_of(faces[:2])
    result = pipeline.analyze(batch, keep_maps=True)
    # Recompute independently: crop → attribute → prepare_map → Detect-ResNet50.
    frame_ids, boxes = pipeline.detect(batch)
    _, crops = pipeline.crop(batch.images, batch.sizes, frame_ids, boxes)
    options = {"n_steps": 4} if method == "integrated_gradients" else {}
    attr = attribute(pipeline.detector, crops, 0, method, **options)
    size = pipeline.adversarial.cfg.input_size
    maps = prepare_map(attr, method, size)
    with torch.no_grad():
        expected = pipeline.adversarial(resize_images(crops, size), maps).softmax(1)[:, 1]
    torch.testing.assert_close(result.faces.p_attacked, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(result.faces.maps, maps)


def test_the_guided_rule_setting_reaches_the_maps(faces):
    """pipeline.guided_rule picks Guided Backprop's rule; auto on XceptionNet is captum."""
    maps = {}
    for rule in ("auto", "captum", "textbook"):
        cfg = tiny_config("pipeline.fake_threshold=1.0", f'pipeline.guided_rule="{rule}"')
        pipeline = Pipeline.from_config(cfg)
        batch = batch_of(faces[:2])
        maps[rule] = pipeline.analyze(batch, keep_maps=True).faces.maps
        frame_ids, boxes = pipeline.detect(batch)
        _, crops = pipeline.crop(batch.images, batch.sizes, frame_ids, boxes)
        attr = attribute(pipeline.detector, crops, 0, "guided_backprop", rule=rule)
        expected = prepare_map(attr, "guided_backprop", pipeline.adversarial.cfg.input_size)
        torch.testing.assert_close(maps[rule], expected)
    assert torch.equal(maps["auto"], maps["captum"])
    assert not torch.allclose(maps["captum"], maps["textbook"], atol=0.05)


def test_an_unknown_guided_rule_is_a_config_error():
    with pytest.raises(ConfigError, match=r"pipeline\.guided_rule"):
        tiny_config('pipeline.guided_rule="paper"')


def test_frames_of_several_sizes_and_sources_in_one_batch(faces):
    pipeline = Pipeline.from_config(tiny_config())
    small = faces[1][::2, ::2].copy()  # 96x96: the face is still above min_face_size
    frames = [
        Frame("a", 0, 0.0, faces[0]),
        Frame("b", 7, 0.28, np.zeros((50, 300, 3), np.uint8)),
        Frame("c", 3, 0.12, small),
    ]
    result = pipeline.analyze(FrameBatch.from_frames(frames))
    assert [(r.source, r.frame) for r in result.records] == [("a", 0), ("b", 7), ("c", 3)]
    assert result.records[1].verdict is Verdict.NO_FACE
    # Boxes are in each frame's own pixels, and crop boxes stay inside the frame.
    for r, f in zip(result.records, frames, strict=True):
        for face in r.faces:
            assert 0 <= face.box[0] < face.box[2] <= f.width
            assert 0 <= face.box[1] < face.box[3] <= f.height
    assert (result.faces.crop_boxes[:, 2:] <= torch.tensor([192, 192])).all()


def test_box_scale_setting_reaches_the_crop(faces):
    pipeline = Pipeline.from_config(tiny_config("pipeline.box_scale=2.0"))
    batch = batch_of(faces[:1])
    ids, boxes = pipeline.detect(batch)
    crop_boxes, _ = pipeline.crop(batch.images, batch.sizes, ids, boxes)
    assert torch.equal(crop_boxes, enlarge_boxes(boxes, 192, 192, 2.0))


def test_untrained_parts_are_named_and_marked(faces):
    pipeline = Pipeline.from_config(tiny_config())
    assert pipeline.untrained_parts == ["deepfake detector", "Detect-ResNet50"]
    assert pipeline.weights_status == "untrained"


def test_untrained_models_are_reproducible(faces):
    a = Pipeline.from_config(tiny_config()).analyze(batch_of(faces[:1])).records
    b = Pipeline.from_config(tiny_config()).analyze(batch_of(faces[:1])).records
    assert a[0].faces[0].p_fake == b[0].faces[0].p_fake


def test_retinaface_runs_batched_in_the_pipeline(faces):
    pipeline = Pipeline.from_config(
        tiny_config(
            'models.face_detector="retinaface"', "faces.score_threshold=0.0", "faces.max_faces=2"
        )
    )
    result = pipeline.analyze(batch_of(faces))
    assert len(result.records) == 3
    assert all(len(r.faces) <= 2 for r in result.records)
