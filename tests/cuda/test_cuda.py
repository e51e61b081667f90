"""Tests that need a CUDA GPU (``pytest -m cuda``): compiled Triton kernels, compiled and
fused passes on the device, NVDEC against PyAV, synchronizes in the hot loop, and
recompiles across buckets. Each has a CPU twin of its logic elsewhere in the suite (the
kernels under ``TRITON_INTERPRET=1``, compile counts with ``aot_eager``, the NV12
conversion against PyAV, the GPU check's dry run); here the same claims meet the GPU.

Where no GPU is present they are skipped, saying so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import RuntimeConfig
from engine.frames import FrameBatch
from engine.pipeline import Pipeline
from engine.sources.decoders import installed
from tests.conftest import tiny_config
from tests.media import face_frames

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here)"),
]

COMPILED = (
    'pipeline.device="cuda"',
    'runtime.backend="compile"',
    'runtime.compile_backend="inductor"',
    "runtime.cuda_graphs=true",
    "runtime.batch_buckets=[2, 4]",
    "pipeline.fake_threshold=1.0",
)


def batch(n: int = 4, size: int = 128) -> FrameBatch:
    from engine.frames import Frame

    frames = [Frame("s", i, i / 25, image) for i, image in enumerate(face_frames(n, size=size))]
    return FrameBatch.from_frames(frames, pin_memory=True)


def unique_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def test_compiled_triton_kernels_agree_with_their_references() -> None:
    from kernels.bench import bench_cases

    cases = bench_cases(
        "cuda", frames=(2, 240, 320), faces=4, face_sizes=(32, 160), ig_steps=8, ig_rows=16
    )
    for case in cases:
        assert case.max_abs_diff() <= 1e-3, case.name


def test_the_compiled_pipeline_on_the_gpu_agrees_with_eager() -> None:
    torch.manual_seed(0)
    compiled = Pipeline.from_config(tiny_config(*COMPILED))
    eager = Pipeline(
        compiled.face_detector,
        compiled.detector,
        compiled.adversarial,
        compiled.settings,
        compiled.device,
    )
    compiled.warm_start()
    frames = batch()
    a = eager.analyze(frames, keep_maps=True).faces
    b = compiled.analyze(frames, keep_maps=True).faces
    assert len(a.p_fake) == len(b.p_fake) > 0
    assert (a.p_fake - b.p_fake).abs().max() < 1e-3
    assert (a.maps - b.maps).abs().max() < 1e-2


def test_fused_and_unfused_classify_and_explain_agree_on_the_gpu() -> None:
    torch.manual_seed(0)
    fused = Pipeline.from_config(
        tiny_config('pipeline.device="cuda"', "pipeline.fake_threshold=1.0")
    )
    unfused = Pipeline(
        fused.face_detector,
        fused.detector,
        fused.adversarial,
        fused.settings,
        fused.device,
        RuntimeConfig(fuse_classify_xai=False),
    )
    assert fused.fused and not unfused.fused
    frames = batch()
    a = fused.analyze(frames, keep_maps=True).faces
    b = unfused.analyze(frames, keep_maps=True).faces
    assert (a.p_fake - b.p_fake).abs().max() < 1e-4
    assert (a.maps - b.maps).abs().max() < 1e-4


def test_no_compiled_pass_or_xai_code_synchronizes_in_a_steady_state_batch() -> None:
    from benchmarks.gpu_check import sync_sites

    pipeline = Pipeline.from_config(tiny_config(*COMPILED))
    pipeline.warm_start()
    frames = batch()
    for _ in range(2):
        pipeline.analyze(frames)
    with sync_sites(pipeline.device) as sites:
        pipeline.analyze(frames)
    # The records' one transfer per result tensor may synchronize; the device stages not.
    hot = {site: n for site, n in sites.items() if site.split(":")[0] in HOT_FILES}
    assert not hot, sites


HOT_FILES = {p.name for p in (Path(__file__).parents[2] / "engine").glob("runtime/*.py")} | {
    p.name for p in (Path(__file__).parents[2] / "engine").glob("xai/*.py")
}


def test_no_recompiles_across_buckets_after_warm_start_on_the_gpu() -> None:
    torch._dynamo.reset()
    pipeline = Pipeline.from_config(tiny_config(*COMPILED))
    pipeline.warm_start()
    built = unique_graphs()
    size = pipeline.detector.cfg.input_size
    for n in (1, 2, 3, 4, 3, 1):
        crops = torch.rand(n, 3, size, size, device="cuda")
        pipeline.classify_and_explain(crops, explain=torch.arange(n))
        pipeline.check(crops, torch.zeros_like(crops), keep_maps=False)
    assert unique_graphs() == built


@pytest.mark.skipif(
    not (installed("PyNvVideoCodec") and installed("av")),
    reason="NVDEC against PyAV needs PyNvVideoCodec and PyAV (make gpu-wheels)",
)
def test_nvdec_frames_match_pyavs_on_the_device(tmp_path: Path) -> None:
    from engine.sources import SourceSettings, VideoFileSource
    from engine.sources.nvdec import NvdecVideoSource
    from tests.media import encode_video

    clip = encode_video(tmp_path / "c.mp4", face_frames(10, size=128), fps=25)
    with VideoFileSource(clip, SourceSettings()) as source:
        want = [(f.index, f.pts, f.image) for f in source]
    with NvdecVideoSource(clip, SourceSettings()) as source:
        got = [(f.index, f.pts, f.image) for f in source]
    assert [g[:2] for g in got] == pytest.approx([w[:2] for w in want])
    for (_, _, image), (_, _, ref) in zip(got, want, strict=True):
        assert isinstance(image, torch.Tensor) and image.is_cuda
        diff = np.abs(image.cpu().numpy().astype(np.int16) - ref.astype(np.int16))
        assert diff.max() <= 4 and diff.mean() < 2.0


def test_frames_uploaded_ahead_batch_on_the_device_as_host_frames_do() -> None:
    from engine.frames import Frame
    from engine.upload import FrameUploader

    pictures = face_frames(5, size=96)
    pictures[2] = pictures[2][:64, :80]  # a smaller frame: padding on the device
    frames = [Frame("s", i, i / 25, p) for i, p in enumerate(pictures)]
    uploaded = list(FrameUploader(torch.device("cuda"))(frames))
    assert all(f.image.is_cuda and f.ready is not None for f in uploaded)
    on_device = FrameBatch.from_frames(uploaded)
    on_host = FrameBatch.from_frames(frames)
    assert on_device.images.is_cuda
    assert torch.equal(on_device.images.cpu(), on_host.images)
    assert torch.equal(on_device.sizes, on_host.sizes)
