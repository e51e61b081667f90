"""RetinaFace-MobileNet-0.25: published layout, priors, decoding, post-processing, batching."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from engine.errors import WeightsError
from engine.faces import create_face_detector, face_detector_cfg, list_face_detectors
from engine.faces.base import DetectionSettings
from engine.faces.retinaface import (
    CFG_MNET,
    RetinaFaceDetector,
    RetinaFaceNet,
    map_published_state,
    prior_boxes,
)
from engine.models.weights import save_weights

pytestmark = pytest.mark.numerics  # also run as an AVX2-only CPU would (Makefile)

LAYOUT = Path(__file__).parents[1] / "fixtures" / "layouts" / "retinaface_mnet025_keys.json"
ALL = DetectionSettings(score_threshold=0.0, min_face_size=1, max_faces=1024)


@pytest.fixture(scope="module")
def layout() -> list[tuple[str, list[int]]]:
    return [(k, s) for k, s in json.loads(LAYOUT.read_text())]


def published_checkpoint(layout: list[tuple[str, list[int]]], seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.randint(0, 1000, (), generator=g)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g)
    return state


def fake_net(outputs):
    """A forward giving fixed ``(loc, conf, landms)`` built by ``outputs(height, width)``."""
    calls = []

    def forward(x: torch.Tensor, sizes: torch.Tensor | None = None):
        calls.append((tuple(x.shape), None if sizes is None else sizes.tolist()))
        return outputs(*x.shape[-2:])

    return forward, calls


def blank_outputs(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    p = len(prior_boxes(height, width))
    conf = torch.zeros(1, p, 2)
    conf[..., 0] = 1.0
    return torch.zeros(1, p, 4), conf, torch.zeros(1, p, 10)


def prior_index(height: int, width: int, level: int, row: int, col: int, anchor: int) -> int:
    """Index of a prior by the published order (levels, rows, columns, anchors)."""
    start = 0
    for step in CFG_MNET.steps[:level]:
        start += math.ceil(height / step) * math.ceil(width / step) * 2
    fw = math.ceil(width / CFG_MNET.steps[level])
    return start + (row * fw + col) * 2 + anchor


# --- layout and weights ------------------------------------------------------------------


def test_state_dict_names_shapes_and_order_equal_the_published_checkpoint(layout):
    state = RetinaFaceNet().state_dict()
    assert [(k, list(v.shape)) for k, v in state.items()] == layout
    assert len(state) == 300
    assert sum(k.endswith("num_batches_tracked") for k in state) == 47


@pytest.mark.parametrize("wrap", ["plain", "module.", "state_dict"])
def test_published_checkpoint_maps_and_loads_strictly(layout, wrap):
    published = published_checkpoint(layout)
    if wrap == "module.":
        ckpt = {f"module.{k}": v for k, v in published.items()}
    elif wrap == "state_dict":
        ckpt = {"state_dict": {f"module.{k}": v for k, v in published.items()}}
    else:
        ckpt = dict(published)
    mapped = map_published_state(ckpt)
    assert list(mapped) == [k for k, _ in layout]
    net = RetinaFaceNet()
    net.load_state_dict(mapped, strict=True)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, published[key], rtol=0, atol=0)


def test_map_published_state_rejects_another_architecture(layout):
    state = published_checkpoint(layout)
    state["body.stage4.0.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="unexpected tensors"):
        map_published_state(state)
    state = published_checkpoint(layout)
    state["fpn.output1.0.weight"] = torch.zeros(256, 64, 1, 1)
    with pytest.raises(WeightsError, match=r"fpn\.output1\.0\.weight"):
        map_published_state(state)


def test_saved_weights_load_as_trained_with_equal_parameters(tmp_path, layout):
    net = RetinaFaceNet()
    net.load_state_dict(map_published_state(published_checkpoint(layout, seed=3)))
    path = save_weights(
        net.state_dict(), tmp_path / "rf.safetensors", arch="retinaface", source="retinaface-mnet"
    )
    untrained = RetinaFaceDetector()
    assert untrained.weights_status == "untrained"
    detector = RetinaFaceDetector(weights=path)
    assert detector.weights_status == "trained" == detector.net.weights_status
    for key, value in net.state_dict().items():
        torch.testing.assert_close(detector.net.state_dict()[key], value, rtol=0, atol=0)
    assert not detector.net.training


def test_registered_as_batched_face_detector_and_to_moves_the_net():
    assert "retinaface" in list_face_detectors()
    cfg = face_detector_cfg("retinaface")
    assert cfg.batched and cfg.weights_format == "retinaface-mnet"
    detector = create_face_detector("retinaface", max_side=640)
    assert isinstance(detector, RetinaFaceDetector) and detector.max_side == 640
    assert detector.to("meta") is detector
    assert next(detector.net.parameters()).device.type == "meta"
    assert detector.device == torch.device("meta")


# --- priors ---------------------------------------------------------------------------------


def test_prior_counts_match_the_published_sizes():
    assert prior_boxes(640, 640).shape == (16800, 4)
    assert prior_boxes(480, 641).shape == (12810, 4)


def test_priors_first_entries_and_level_starts_by_hand():
    h, w = 480, 641
    p = prior_boxes(h, w)
    expected = torch.tensor(
        [
            [4 / w, 4 / h, 16 / w, 16 / h],  # level 0, row 0, col 0, anchor 16
            [4 / w, 4 / h, 32 / w, 32 / h],  # ... anchor 32
            [12 / w, 4 / h, 16 / w, 16 / h],  # col 1 before row 1
            [12 / w, 4 / h, 32 / w, 32 / h],
        ]
    )
    torch.testing.assert_close(p[:4], expected)
    # Row 1 starts after ceil(641 / 8) = 81 columns of two anchors.
    torch.testing.assert_close(p[162], torch.tensor([4 / w, 12 / h, 16 / w, 16 / h]))
    # Level 1 (stride 16, anchors 64/128) starts after 60 * 81 * 2 level-0 priors.
    torch.testing.assert_close(p[9720], torch.tensor([8 / w, 8 / h, 64 / w, 64 / h]))
    torch.testing.assert_close(p[9721], torch.tensor([8 / w, 8 / h, 128 / w, 128 / h]))
    # The last prior: level 2, row 14, col 20, anchor 512.
    torch.testing.assert_close(
        p[-1], torch.tensor([20.5 * 32 / w, 14.5 * 32 / h, 512 / w, 512 / h])
    )


def test_vectorized_priors_equal_the_published_loop_order():
    h, w = 37, 90
    rows = []
    for step, sizes in zip(CFG_MNET.steps, CFG_MNET.min_sizes, strict=True):
        for i in range(math.ceil(h / step)):
            for j in range(math.ceil(w / step)):
                for m in sizes:
                    rows.append([(j + 0.5) * step / w, (i + 0.5) * step / h, m / w, m / h])
    torch.testing.assert_close(prior_boxes(h, w), torch.tensor(rows))


def test_priors_are_cached_per_size_and_device():
    detector = RetinaFaceDetector()
    first = detector._priors(64, 96, torch.device("cpu"))
    assert detector._priors(64, 96, torch.device("cpu")) is first
    assert detector._priors(64, 97, torch.device("cpu")) is not first


def test_forward_at_an_odd_size_gives_one_output_per_prior():
    net = RetinaFaceNet().eval()
    with torch.no_grad():
        loc, conf, landms = net(torch.randn(2, 3, 97, 131))
    p = len(prior_boxes(97, 131))
    assert p == 2 * (13 * 17 + 7 * 9 + 4 * 5)
    assert (loc.shape, conf.shape, landms.shape) == ((2, p, 4), (2, p, 2), (2, p, 10))
    torch.testing.assert_close(conf.sum(-1), torch.ones(2, p))


# --- decoding, scaling back, clipping -------------------------------------------------------


def test_decode_scale_back_and_clip_by_hand(monkeypatch):
    # Frame 0 is 100x200 and is downscaled by 2 (max_side 100) to 50x100; frame 1 is 60x80,
    # zero-padded to 100x200 in the batch and not scaled. Network input: 60x100.
    a0 = prior_index(60, 100, level=0, row=2, col=3, anchor=1)  # centre (28, 20), side 32
    a1 = prior_index(60, 100, level=0, row=3, col=9, anchor=0)  # centre (76, 28), side 16
    # Frame 1 has ceil(80 / 8) = 10 columns at stride 8: column 10 lies in the padding,
    # and its box (68..100 px, clipped to 68..80) would survive clipping.
    pad = prior_index(60, 100, level=0, row=3, col=10, anchor=1)

    def outputs(height, width):
        loc, conf, landms = blank_outputs(height, width)
        loc, conf, landms = loc.repeat(2, 1, 1), conf.repeat(2, 1, 1), landms.repeat(2, 1, 1)
        conf[0, a0] = torch.tensor([0.1, 0.9])
        loc[0, a0] = torch.tensor([1.0, -1.0, 0.0, 5 * math.log(1.5)])
        landms[0, a0] = torch.arange(10.0) / 10
        conf[1, a1] = torch.tensor([0.2, 0.8])
        loc[1, a1] = torch.tensor([2.0, 0.0, 0.0, 0.0])
        conf[1, pad] = torch.tensor([0.0, 1.0])  # a prior that exists only in the padding
        return loc, conf, landms

    detector = RetinaFaceDetector(settings=DetectionSettings(min_face_size=1), max_side=100)
    forward, calls = fake_net(outputs)
    monkeypatch.setattr(detector.net, "forward", forward)
    frames = torch.zeros(2, 100, 200, 3, dtype=torch.uint8)
    sizes = torch.tensor([[100, 200], [60, 80]])
    (b0, l0), (b1, l1) = detector.detect_with_landmarks(frames, sizes)
    assert calls == [((2, 3, 60, 100), [[50, 100], [60, 80]])]
    # Frame 0: centre (28 + 1 * .1 * 32, 20 - 1 * .1 * 32) = (31.2, 16.8), size 32 x 48
    # -> (15.2, -7.2, 47.2, 40.8) at the network's scale, x 2 -> clip y1 at 0.
    torch.testing.assert_close(b0, torch.tensor([[30.4, 0.0, 94.4, 81.6, 0.9]]))
    offsets = (torch.arange(10.0) / 10).reshape(5, 2)
    expected_points = (torch.tensor([28.0, 20.0]) + offsets * 0.1 * 32) * 2
    torch.testing.assert_close(l0, expected_points[None])
    # Frame 1: centre (76 + 2 * .1 * 16, 28) = (79.2, 28), 16 x 16 -> x2 clipped at 80.
    torch.testing.assert_close(b1, torch.tensor([[71.2, 20.0, 80.0, 36.0, 0.8]]))
    torch.testing.assert_close(l1, torch.tensor([[[76.0, 28.0]] * 5]))
    torch.testing.assert_close(detector.detect(frames, sizes)[1], b1)


def test_frames_that_fill_the_batch_are_not_masked_or_resized(monkeypatch):
    detector = RetinaFaceDetector(max_side=0)
    forward, calls = fake_net(lambda h, w: tuple(t.repeat(2, 1, 1) for t in blank_outputs(h, w)))
    monkeypatch.setattr(detector.net, "forward", forward)
    out = detector.detect(
        torch.zeros(2, 1500, 40, 3, dtype=torch.uint8), torch.tensor([[1500, 40]] * 2)
    )
    assert calls == [((2, 3, 1500, 40), None)]
    assert [o.shape for o in out] == [(0, 5), (0, 5)]


def test_preprocessing_is_bgr_minus_the_published_means(monkeypatch):
    seen = []

    def forward(x, sizes=None):
        seen.append(x.clone())
        return blank_outputs(*x.shape[-2:])

    detector = RetinaFaceDetector()
    monkeypatch.setattr(detector.net, "forward", forward)
    frame = torch.tensor([10, 20, 30], dtype=torch.uint8).expand(1, 8, 8, 3).contiguous()
    detector.detect(frame, torch.tensor([[8, 8]]))
    torch.testing.assert_close(
        seen[0][0, :, 0, 0], torch.tensor([30 - 104.0, 20 - 117.0, 10 - 123.0])
    )


# --- NMS and limits ---------------------------------------------------------------------------


def three_boxes(height, width):
    """Two overlapping faces (IoU 0.6) scoring .95 and .9, and a distant one scoring .55."""
    loc, conf, landms = blank_outputs(height, width)
    for (row, col), score in (((4, 4), 0.95), ((4, 5), 0.9), ((12, 16), 0.55)):
        conf[0, prior_index(height, width, 0, row, col, 1)] = torch.tensor([1 - score, score])
    return loc, conf, landms


def run_three_boxes(monkeypatch, **kwargs) -> torch.Tensor:
    detector = RetinaFaceDetector(**kwargs)
    monkeypatch.setattr(detector.net, "forward", fake_net(three_boxes)[0])
    return detector.detect(
        torch.zeros(1, 128, 160, 3, dtype=torch.uint8), torch.tensor([[128, 160]])
    )[0]


def test_nms_keeps_the_best_of_two_overlapping_faces(monkeypatch):
    boxes = run_three_boxes(monkeypatch, settings=DetectionSettings(min_face_size=1))
    expected = torch.tensor([[20.0, 20.0, 52.0, 52.0, 0.95], [116.0, 84.0, 148.0, 116.0, 0.55]])
    torch.testing.assert_close(boxes, expected)
    loose = run_three_boxes(monkeypatch, settings=DetectionSettings(min_face_size=1), nms_iou=0.7)
    assert loose[:, 4].tolist() == pytest.approx([0.95, 0.9, 0.55])


def test_score_threshold_max_faces_and_min_size_apply(monkeypatch):
    strict = run_three_boxes(
        monkeypatch, settings=DetectionSettings(score_threshold=0.6, min_face_size=1)
    )
    assert strict[:, 4].tolist() == pytest.approx([0.95])
    one = run_three_boxes(monkeypatch, settings=DetectionSettings(min_face_size=1, max_faces=1))
    assert one[:, 4].tolist() == pytest.approx([0.95])
    big = run_three_boxes(monkeypatch, settings=DetectionSettings(min_face_size=33))
    assert big.shape == (0, 5)
    pre = run_three_boxes(
        monkeypatch,
        settings=DetectionSettings(score_threshold=0.0, min_face_size=1),
        confidence_threshold=0.6,
    )
    assert pre[:, 4].tolist() == pytest.approx([0.95])
    top = run_three_boxes(
        monkeypatch, settings=DetectionSettings(score_threshold=0.0, min_face_size=1), keep_top_k=1
    )
    assert top[:, 4].tolist() == pytest.approx([0.95])


# --- batching -----------------------------------------------------------------------------------


def diverse_detector(max_side: int) -> RetinaFaceDetector:
    """Random weights with BN statistics measured on noise: activations neither die out
    nor blow up, scores spread over (0, 1), and a wrong border changes the outputs."""
    torch.manual_seed(0)
    detector = RetinaFaceDetector(settings=ALL, max_side=max_side, confidence_threshold=0.55)
    for m in detector.net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # a plain average over the calibration batch
    detector.net.train()
    with torch.no_grad():
        noise = torch.randn(4, 3, 96, 96, generator=torch.Generator().manual_seed(1)) * 60
        detector.net(noise)
    detector.net.eval()
    return detector


def by_position(rows: torch.Tensor) -> torch.Tensor:
    return torch.tensor(sorted(rows.tolist(), key=lambda r: [round(v, 2) for v in r[:4]]))


def padded_batch(seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    shapes = [(120, 160), (97, 131), (64, 150)]
    images = [torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g) for h, w in shapes]
    frames = torch.zeros(3, 120, 160, 3, dtype=torch.uint8)
    for i, image in enumerate(images):
        frames[i, : image.shape[0], : image.shape[1]] = image
    return frames, torch.tensor(shapes), images


@pytest.mark.parametrize("max_side", [0, 100])
def test_every_prior_of_a_padded_frame_predicts_as_the_frame_alone(max_side):
    detector = diverse_detector(max_side)
    frames, sizes, images = padded_batch()
    with torch.no_grad():
        boxes, scores, points = detector._predict(frames, sizes)
        assert (scores[2] == -1).any()  # the 64-pixel-high frame has padding priors
        for i, image in enumerate(images):
            alone_boxes, alone_scores, alone_points = detector._predict(
                image[None], sizes[i : i + 1]
            )
            inside = scores[i] >= 0  # priors of the padding score -1
            assert inside.sum() == alone_scores.shape[1]
            # Batched and single convolutions may use different kernels: boxes (hundreds
            # of pixels) agree to float32's relative precision, not to a fixed 1e-3 px.
            torch.testing.assert_close(scores[i, inside], alone_scores[0], rtol=0, atol=1e-5)
            torch.testing.assert_close(boxes[i, inside], alone_boxes[0], rtol=1e-5, atol=1e-3)
            torch.testing.assert_close(points[i, inside], alone_points[0], rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("max_side", [0, 100])
def test_batched_detection_equals_per_frame_detection(max_side):
    detector = diverse_detector(max_side)
    frames, sizes, images = padded_batch()
    batched = detector.detect(frames, sizes)
    for image, size, found in zip(images, sizes, batched, strict=True):
        alone = detector.detect(image[None], size[None])[0]
        assert len(alone) >= 3
        assert alone.shape == found.shape
        # Random weights tie many scores exactly; compare in position order, not score order.
        torch.testing.assert_close(by_position(found), by_position(alone), rtol=1e-5, atol=1e-3)
        h, w = size.tolist()
        assert (found[:, 0:4:2] <= w).all() and (found[:, 1:4:2] <= h).all()


def test_padding_does_not_leak_into_a_smaller_frame():
    # The same small frame (odd sizes: stride-2 convs read past its last row and column),
    # batched with a dark, then a bright large frame and padding.
    detector = diverse_detector(0)
    g = torch.Generator().manual_seed(4)
    small = torch.randint(0, 256, (71, 91, 3), dtype=torch.uint8, generator=g)
    sizes = torch.tensor([[128, 128], [71, 91]])
    results = []
    for fill in (0, 255):
        frames = torch.full((2, 128, 128, 3), fill, dtype=torch.uint8)
        frames[1, :71, :91] = small  # the rest of frame 1 is padding: 0, then 255
        with torch.no_grad():
            boxes, scores, _ = detector._predict(frames, sizes)
        results.append((boxes[1], scores[1], detector.detect(frames, sizes)[1]))
    (boxes0, scores0, found0), (boxes1, scores1, found1) = results
    torch.testing.assert_close(scores0, scores1, rtol=0, atol=1e-5)
    torch.testing.assert_close(boxes0, boxes1, rtol=1e-5, atol=1e-3)
    assert len(found0) > 0
    torch.testing.assert_close(by_position(found0), by_position(found1), rtol=1e-5, atol=1e-3)


def per_frame_candidates(detector, boxes, scores, points):
    """The published selection, one frame at a time: priors above the threshold, the
    ``top_k`` best where there are more."""
    rows, ids = [], []
    for i in range(len(scores)):
        keep = torch.nonzero(scores[i] > detector.confidence_threshold).squeeze(1)
        if len(keep) > detector.top_k:
            keep = keep[scores[i, keep].topk(detector.top_k).indices]
        rows.append(torch.cat([boxes[i, keep], scores[i, keep, None], points[i, keep]], dim=1))
        ids.append(torch.full((len(keep),), i))
    return torch.cat(rows), torch.cat(ids)


def test_batched_candidate_selection_equals_the_per_frame_selection():
    """One batched top-k picks, for every frame, the same candidates as the per-frame
    loop: frames with none, fewer than, exactly and more than ``top_k`` above the
    threshold."""
    detector = RetinaFaceDetector(confidence_threshold=0.5, top_k=40)
    g = torch.Generator().manual_seed(0)
    n, p = 4, 600
    boxes, points = torch.rand(n, p, 4, generator=g), torch.rand(n, p, 10, generator=g)
    scores = torch.rand(n, p, generator=g) * 0.5  # all below the threshold
    for frame, above in ((0, 10), (1, 300), (3, 40)):
        chosen = torch.randperm(p, generator=g)[:above]
        scores[frame, chosen] = 0.5 + 0.5 * torch.rand(above, generator=g) + 1e-6
    got, got_ids = detector._select(boxes, scores, points)
    want, want_ids = per_frame_candidates(detector, boxes, scores, points)
    assert [int((got_ids == i).sum()) for i in range(n)] == [10, 40, 0, 40]

    def as_set(rows, ids):
        return sorted(zip(ids.tolist(), map(tuple, rows.tolist()), strict=True))

    assert as_set(got, got_ids) == as_set(want, want_ids)


def test_under_the_pipelines_runtime_the_network_runs_in_its_precision_layout_and_compiled():
    """``with_runtime``: channels-last and torch.compile (Dynamo, eager backend) give the float32
    eager scores; bf16 autocast does run (the scores move) and stays close on average
    (random weights amplify its rounding); the original detector stays as it was."""
    from engine.config import RuntimeConfig

    detector = diverse_detector(0)
    g = torch.Generator().manual_seed(3)
    frames = torch.randint(0, 256, (3, 96, 128, 3), dtype=torch.uint8, generator=g)
    sizes = torch.tensor([[96, 128]] * 3)
    with torch.no_grad():
        _, want, _ = detector._predict(frames, sizes)
        for settings in (
            RuntimeConfig(channels_last=True),
            RuntimeConfig(backend="compile", compile_backend="eager"),
            RuntimeConfig(precision="bf16", channels_last=True),
        ):
            configured = detector.with_runtime(settings)
            for n in (3, 2):  # two batch sizes: one dynamic graph when compiled
                _, got, _ = configured._predict(frames[:n], sizes[:n])
                diff = (got - want[:n]).abs()
                assert got.dtype == torch.float32
                if settings.precision == "bf16":
                    assert 0 < diff.mean() <= 0.06
                else:
                    assert diff.max() <= 1e-4, settings
            assert configured._channels_last == settings.channels_last
    assert detector._autocast is None and detector._compiled is None
    assert not detector._channels_last
    assert detector.net.body.stage1[0][0].weight.is_contiguous()  # not converted in place


def test_warm_compiles_each_network_input_size_once_and_later_batches_of_it_compile_nothing():
    """``warm`` (``Pipeline.warm_start``) builds the compiled network for the given frame
    sizes: two frame sizes that ``max_side`` brings to one input size are built once, and
    batches of any frame count at those sizes then compile nothing; another size does."""
    from torch._dynamo.utils import counters

    from engine.config import RuntimeConfig

    def graphs() -> int:
        return int(counters["stats"]["unique_graphs"])

    def frames(n: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8), torch.tensor([[h, w]] * n)

    eager = RetinaFaceDetector(settings=ALL, max_side=192)
    assert eager.warm([(108, 192)]) == 0  # not compiled: nothing is built per size
    torch._dynamo.reset()
    detector = eager.with_runtime(RuntimeConfig(backend="compile", compile_backend="aot_eager"))
    before = graphs()
    assert detector.warm([(216, 384), (108, 192)]) == 1  # both reach the network at 108x192
    built = graphs()
    assert built > before
    for n in (3, 1, 5, 2):
        for h, w in ((216, 384), (108, 192)):
            assert len(detector.detect(*frames(n, h, w))) == n
    assert graphs() == built
    detector.detect(*frames(2, 96, 128))  # a size not warmed compiles at its first batch
    assert graphs() > built
