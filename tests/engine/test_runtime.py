"""Runtimes: eager, torch.compile, ONNX Runtime and TensorRT behind one interface.

Compiled and ONNX passes are checked for numerical agreement with eager PyTorch, the
XAI backward through the compiled guided twin against ``engine.xai.attribute``, and the
pipeline's fused classify + XAI against the unfused stages. torch.compile tests use the
``aot_eager`` backend (AOTAutograd's forward and backward graphs, no code generation) on
the tiny models, and Inductor on a small network only: Inductor compiles C++ on a CPU,
which takes minutes for a whole model.
"""

from __future__ import annotations

import importlib.util
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from engine.config import RuntimeConfig, load_config
from engine.errors import ConfigError
from engine.frames import Frame, FrameBatch
from engine.models import create_model
from engine.pipeline import Pipeline
from engine.runtime import (
    BucketedPass,
    RuntimeMismatchError,
    RuntimeUnavailableError,
    UnknownRuntimeError,
    bucket_for,
    create_runtime,
    list_runtimes,
    pad_rows,
    plan_chunks,
    runtime_availability,
)
from engine.runtime.onnx import check_agreement, export_onnx
from engine.xai import attribute, guided_model
from tests.conftest import tiny_config
from tests.media import face_frames

pytestmark = pytest.mark.numerics  # also run as an AVX2-only CPU would (Makefile)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def detector() -> nn.Module:
    return create_model("xception_tiny")


@pytest.fixture(scope="module")
def adversarial() -> nn.Module:
    return create_model("detect_resnet50_tiny")


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    return torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def faces() -> list[np.ndarray]:
    return face_frames(3, size=192)


def batch_of(images: list[np.ndarray]) -> FrameBatch:
    return FrameBatch.from_frames([Frame("clip", i, i / 25, im) for i, im in enumerate(images)])


def input_gradient(module: nn.Module, x: torch.Tensor, target: int = 0) -> torch.Tensor:
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(module(leaf)[:, target].sum(), leaf)
    return grad


# --- the registry and settings -----------------------------------------------------------


def test_the_four_backends_are_registered_and_eager_compile_onnx_are_available_here():
    assert set(list_runtimes()) == {"eager", "compile", "onnx", "tensorrt"}
    available = runtime_availability()
    assert available["eager"] is None and available["compile"] is None
    assert available["onnx"] is None


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here"
)
def test_tensorrt_reports_clearly_that_it_is_unavailable():
    with pytest.raises(RuntimeUnavailableError) as e:
        create_runtime(RuntimeConfig(backend="tensorrt"), CPU)
    message = str(e.value)
    assert "tensorrt" in message and "not importable" in message
    assert "runtime.backend = 'compile'" in message and "\n" not in message
    with pytest.raises(RuntimeUnavailableError):
        Pipeline.from_config(tiny_config('runtime.backend="tensorrt"'))


def test_unknown_backend_and_bad_settings_name_their_key():
    with pytest.raises(UnknownRuntimeError, match="choose one of"):
        create_runtime(SimpleNamespace(backend="tvm"), CPU)  # type: ignore[arg-type]
    for override, key in [
        ('runtime.backend="tvm"', "runtime.backend"),
        ('runtime.precision="int8"', "runtime.precision"),
        ("runtime.batch_buckets=[4, 2]", "runtime.batch_buckets"),
        ("runtime.batch_buckets=[]", "runtime.batch_buckets"),
        ("runtime.batch_buckets=[0, 1]", "runtime.batch_buckets"),
        ("runtime.channels_last=1", "runtime.channels_last"),
    ]:
        with pytest.raises(ConfigError) as e:
            load_config(None, [override])
        assert e.value.key == key


def test_batch_buckets_from_toml_become_a_tuple():
    cfg = load_config(None, ["runtime.batch_buckets=[1, 3, 9]"])
    assert cfg.runtime.batch_buckets == (1, 3, 9)


# --- buckets ----------------------------------------------------------------------------


def test_chunks_cover_every_row_once_in_buckets():
    buckets = (1, 2, 4, 8)
    assert list(plan_chunks(0, buckets)) == []
    assert list(plan_chunks(3, buckets)) == [(0, 3, 4)]
    assert list(plan_chunks(20, buckets)) == [(0, 8, 8), (8, 8, 8), (16, 4, 4)]
    assert bucket_for(5, buckets) == 8 and bucket_for(9, buckets) == 8
    for n in range(1, 30):
        chunks = list(plan_chunks(n, buckets))
        assert sum(size for _, size, _ in chunks) == n
        assert all(size <= bucket and bucket in buckets for _, size, bucket in chunks)


def test_padding_rows_get_no_gradient_and_the_real_rows_keep_theirs():
    x = torch.rand(3, 2, requires_grad=True)
    padded = pad_rows(x, 5)
    assert padded.shape == (5, 2) and torch.equal(padded[3:], torch.zeros(2, 2))
    (grad,) = torch.autograd.grad((padded * 2).sum(), x)
    assert torch.equal(grad, torch.full((3, 2), 2.0))
    assert pad_rows(x, 3) is x


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    ).eval()


def test_bucketed_pass_equals_the_model_on_every_batch_size():
    net = small_net()
    bucketed = BucketedPass(net, RuntimeConfig(batch_buckets=(2, 4)), grad=True)
    x = torch.rand(9, 3, 16, 16)
    for n in (1, 3, 9):  # padded to 2, to 4; over the largest bucket: chunks 4, 4, 1 -> 2
        torch.testing.assert_close(bucketed(x[:n]), net(x[:n]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            input_gradient(bucketed, x[:n]), input_gradient(net, x[:n]), rtol=1e-5, atol=1e-8
        )


class Strides(nn.Module):
    """Records the strides of every batch it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.stride())
        return x.flatten(1).sum(1, keepdim=True)


def test_a_padded_bucket_has_the_strides_of_a_full_one():
    """Channels-last inputs padded with zero rows (``torch.cat``: contiguous) are put
    back in channels-last, so a bucket is one shape *and* one layout: one graph."""
    model = Strides()
    bucketed = BucketedPass(model, RuntimeConfig(batch_buckets=(4,), channels_last=True), False)
    x = torch.rand(4, 3, 8, 8)
    bucketed(x)  # full
    bucketed(x[:3])  # padded
    full, padded = model.seen
    assert padded == full == x.contiguous(memory_format=torch.channels_last).stride()


def test_prepared_networks_are_frozen_and_still_differentiate_their_inputs(crops):
    """No weight gradient is ever asked of a pass (a compiled backward would compute
    them all); input gradients are unchanged."""
    net = create_model("xception_tiny")
    expected = input_gradient(net, crops)
    runtime = create_runtime(RuntimeConfig(), CPU)
    gradient = runtime.gradient_pass(net, (crops,), "detector-gradient")
    assert not any(p.requires_grad for p in net.parameters())
    torch.testing.assert_close(input_gradient(gradient, crops), expected, rtol=1e-5, atol=1e-8)


def compiled_graphs() -> int:
    """Graphs Dynamo has compiled in this process (``torch._dynamo.reset`` keeps it)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@pytest.mark.parametrize("grad", [False, True], ids=["forward", "gradient"])
def test_a_compiled_pass_compiles_once_per_bucket_whatever_the_batch_sizes(grad):
    """Batch sizes 1 to 4 over buckets (1, 2, 4): three graphs, and none more when the
    sizes come again (before stride-stable padding a padded 3 and a full 4 were two)."""
    torch._dynamo.reset()
    before = compiled_graphs()
    settings = RuntimeConfig(
        backend="compile", compile_backend="aot_eager", batch_buckets=(1, 2, 4)
    )
    runtime = create_runtime(settings, CPU)
    net = small_net()
    x = torch.rand(4, 3, 16, 16)
    build = runtime.gradient_pass if grad else runtime.forward_pass
    compiled = build(net, (x,), "small")

    def call(n: int) -> None:  # as the pipeline calls each: with input gradients or not
        if grad:
            input_gradient(compiled, x[:n])
        else:
            compiled(x[:n])

    for n in (1, 2, 3, 4):
        call(n)
    assert compiled_graphs() - before == 3
    for n in (4, 3, 1, 2, 3):
        call(n)
    assert compiled_graphs() - before == 3


def test_warm_start_builds_every_bucket_so_no_frame_compiles():
    """``veritas run`` and workers call ``warm_start``: with the compiled runtime every
    bucket of every pass is built before the first frame; with eager nothing is done."""
    eager = Pipeline.from_config(tiny_config())
    assert eager.warm_start() == 0.0 and not eager._passes
    torch._dynamo.reset()
    before = compiled_graphs()
    pipeline = Pipeline.from_config(
        tiny_config(
            'runtime.backend="compile"',
            'runtime.compile_backend="aot_eager"',
            "runtime.batch_buckets=[1, 2]",
        )
    )
    assert pipeline.warm_start() > 0
    built = compiled_graphs()
    assert built > before
    size = pipeline.detector.cfg.input_size
    for n in (2, 1):
        crops = torch.rand(n, 3, size, size)
        pipeline.classify_and_explain(crops, explain=torch.arange(n))
        pipeline.check(crops, torch.zeros_like(crops), keep_maps=False)
    assert compiled_graphs() == built


def test_warm_start_builds_a_compiled_retinaface_for_the_configured_frame_sizes():
    """With RetinaFace compiled, ``warm_start`` also builds it for ``faces.warm_frame_sizes``
    (frame sizes are not known before the first batch): detecting faces in a batch of
    those frames, of any length, compiles nothing."""
    torch._dynamo.reset()
    pipeline = Pipeline.from_config(
        tiny_config(
            'models.face_detector="retinaface"',
            'runtime.backend="compile"',
            'runtime.compile_backend="aot_eager"',
            "runtime.batch_buckets=[1]",
            'faces.warm_frame_sizes=["160x96"]',
        )
    )
    pipeline.warm_start()
    built = compiled_graphs()
    images = np.random.default_rng(0).integers(0, 256, (3, 96, 160, 3), dtype=np.uint8)
    for n in (3, 1):
        batch = FrameBatch.from_frames(
            [Frame("clip", i, i / 25, im) for i, im in enumerate(images[:n])]
        )
        frame_ids, boxes = pipeline.detect(batch)
        assert boxes.shape[1] == 5 and len(frame_ids) == len(boxes)
    assert compiled_graphs() == built


# --- torch.compile -------------------------------------------------------------------------


def test_compiled_forward_and_guided_backward_agree_with_eager(detector, crops):
    """The XAI backward runs through the compiled guided twin (aot_eager graphs)."""
    settings = RuntimeConfig(backend="compile", compile_backend="aot_eager", batch_buckets=(2,))
    runtime = create_runtime(settings, CPU)
    forward = runtime.forward_pass(detector, (crops,), "detector")
    torch.testing.assert_close(forward(crops), detector(crops), rtol=1e-5, atol=1e-6)
    guided = runtime.gradient_pass(guided_model(detector), (crops,), "guided")
    expected = attribute(detector, crops, 0, "guided_backprop")
    torch.testing.assert_close(input_gradient(guided, crops), expected, rtol=1e-4, atol=1e-8)


def test_guided_twin_compiles_with_inductor_forward_and_backward():
    net = small_net()
    x = torch.rand(3, 3, 16, 16)
    runtime = create_runtime(RuntimeConfig(backend="compile", batch_buckets=(4,)), CPU)
    guided = runtime.gradient_pass(guided_model(net), (x,), "guided")
    torch.testing.assert_close(guided(x), net(x), rtol=1e-5, atol=1e-6)
    expected = attribute(net, x, 0, "guided_backprop")
    got = input_gradient(guided, x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-7)
    assert not torch.allclose(got, attribute(net, x, 0, "saliency", abs=False))  # guided


# --- ONNX ---------------------------------------------------------------------------------


def test_onnx_passes_agree_with_eager_at_any_batch_size(detector, adversarial, crops, tmp_path):
    runtime = create_runtime(RuntimeConfig(backend="onnx", export_dir=str(tmp_path)), CPU)
    assert runtime.differentiable is False
    forward = runtime.forward_pass(detector, (crops[:2],), "detector")
    for n in (1, 3):
        with torch.no_grad():
            torch.testing.assert_close(
                forward(crops[:n]), detector(crops[:n]), atol=1e-4, rtol=1e-4
            )
    x = torch.rand(2, 3, 64, 64)
    pairs = runtime.forward_pass(adversarial, (x, x), "adversarial")
    maps = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            pairs(crops, maps), adversarial(crops, maps), atol=1e-4, rtol=1e-4
        )
    # Gradient passes stay in PyTorch: they differentiate.
    gradient = runtime.gradient_pass(detector, (crops,), "detector")
    torch.testing.assert_close(
        input_gradient(gradient, crops), input_gradient(detector, crops), rtol=1e-5, atol=1e-8
    )


def test_onnx_export_is_reused_for_the_same_weights_only(detector, crops, tmp_path):
    first = export_onnx(detector, (crops,), tmp_path, "d")
    stamp = first.stat().st_mtime_ns
    assert export_onnx(detector, (crops,), tmp_path, "d") == first
    assert first.stat().st_mtime_ns == stamp
    other = create_model("xception_tiny", seed=1)
    assert export_onnx(other, (crops,), tmp_path, "d") != first


def test_a_pass_that_disagrees_with_eager_is_refused(detector, crops):
    class Off(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return detector(x) + 0.01

    with pytest.raises(RuntimeMismatchError, match="'detector' differs from eager"):
        check_agreement(detector, Off(), (crops,), "detector", "onnx", 1e-3)
    assert check_agreement(detector, detector, (crops,), "detector", "onnx", 0.0) == 0.0


# --- the pipeline on each runtime ----------------------------------------------------------


def _results(pipeline: Pipeline, faces: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    result = pipeline.analyze(batch_of(faces), keep_maps=True)
    return result.faces.p_fake, result.faces.p_attacked


@pytest.mark.parametrize("method", ["guided_backprop", "input_x_gradient"])
def test_fused_classify_and_xai_equals_the_separate_passes(faces, method):
    """Faces on both sides of the threshold: only the real ones are explained and checked."""
    fused = Pipeline.from_config(tiny_config(f'pipeline.xai_method="{method}"'))
    assert fused.fused
    p_fake = fused.analyze(batch_of(faces)).faces.p_fake
    threshold = float(p_fake.median())  # some faces at or above: fake
    overrides = [f'pipeline.xai_method="{method}"', f"pipeline.fake_threshold={threshold}"]
    fused = Pipeline.from_config(tiny_config(*overrides))
    separate = Pipeline.from_config(tiny_config(*overrides, "runtime.fuse_classify_xai=false"))
    assert not separate.fused
    a = fused.analyze(batch_of(faces), keep_maps=True)
    b = separate.analyze(batch_of(faces), keep_maps=True)
    real = a.faces.p_fake < threshold
    assert 0 < int(real.sum()) < len(real)
    torch.testing.assert_close(a.faces.p_fake, b.faces.p_fake)
    torch.testing.assert_close(a.faces.p_attacked, b.faces.p_attacked, equal_nan=True)
    assert torch.isnan(a.faces.p_attacked[~real]).all()
    torch.testing.assert_close(a.faces.maps, b.faces.maps)


def test_pipeline_results_agree_across_eager_onnx_and_compiled_runtimes(faces, tmp_path):
    eager = _results(Pipeline.from_config(tiny_config("pipeline.fake_threshold=1.0")), faces)
    onnx_pipeline = Pipeline.from_config(
        tiny_config(
            "pipeline.fake_threshold=1.0",
            'runtime.backend="onnx"',
            f'runtime.export_dir="{tmp_path}"',
        )
    )
    compiled_pipeline = Pipeline.from_config(
        tiny_config(
            "pipeline.fake_threshold=1.0",
            'runtime.backend="compile"',
            'runtime.compile_backend="aot_eager"',
            "runtime.batch_buckets=[4]",
        )
    )
    assert not onnx_pipeline.fused and compiled_pipeline.fused
    for pipeline in (onnx_pipeline, compiled_pipeline):
        p_fake, p_attacked = _results(pipeline, faces)
        torch.testing.assert_close(p_fake, eager[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(p_attacked, eager[1], atol=1e-3, rtol=1e-3)


def test_channels_last_and_bf16_autocast_stay_close_to_plain_fp32(faces):
    plain = tiny_config("pipeline.fake_threshold=1.0", "runtime.channels_last=false")
    reference = _results(Pipeline.from_config(plain), faces)
    nhwc = Pipeline.from_config(tiny_config("pipeline.fake_threshold=1.0"))  # the default
    assert nhwc.runtime.settings.channels_last
    p_fake, p_attacked = _results(nhwc, faces)
    torch.testing.assert_close(p_fake, reference[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(p_attacked, reference[1], atol=1e-4, rtol=1e-3)
    bf16 = Pipeline.from_config(
        tiny_config("pipeline.fake_threshold=1.0", 'runtime.precision="bf16"')
    )
    p_fake, p_attacked = _results(bf16, faces)
    assert p_fake.dtype == torch.float32
    torch.testing.assert_close(p_fake, reference[0], atol=0.05, rtol=0)
    assert torch.isfinite(p_attacked).all()


def test_frames_given_as_tensors_batch_like_arrays(faces):
    """Decoders that leave frames on a device (DALI) give torch tensors, not arrays."""
    arrays = batch_of(faces[:2])
    tensors = FrameBatch.from_frames(
        [Frame("clip", i, i / 25, torch.from_numpy(im)) for i, im in enumerate(faces[:2])]
    )
    assert torch.equal(tensors.images, arrays.images)
    assert torch.equal(tensors.sizes, arrays.sizes)


def test_faces_detected_ahead_in_reader_threads_are_used_by_analyze(faces):
    pipeline = Pipeline.from_config(tiny_config())
    frames = [Frame("clip", i, i / 25, im) for i, im in enumerate(faces)]
    expected = pipeline.analyze(FrameBatch.from_frames(frames)).records
    calls = []
    detect = pipeline.face_detector.detect
    pipeline.face_detector.detect = lambda *a: calls.append(len(a[0])) or detect(*a)  # type: ignore[method-assign]
    ahead: list[Frame] = []
    reader = threading.Thread(target=lambda: ahead.extend(pipeline.detect_ahead(frames[:2])))
    reader.start()
    reader.join()
    assert calls == [] and pipeline.detect_ahead_ms > 0  # the reader's own detector ran
    got = pipeline.analyze(FrameBatch.from_frames([*ahead, frames[2]])).records
    assert calls == [1]  # only the frame that was not detected ahead
    assert [r.faces for r in got] == [r.faces for r in expected]
