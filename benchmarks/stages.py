"""(a) Each stage alone, across batch sizes: images/s, and FLOP/s on a GPU.

Inputs are real: the synthetic frames, the faces the face detector finds in them and
their crops (one face per frame; the first face is repeated when a frame has none, so
a batch of B frames gives B crops). Stages and what one call does:

``detect``           the face detector on B frames
``crop``             crop boxes and crops of B faces (``Pipeline.crop``)
``classify``         the detector's no-grad forward on B crops (runtime forward pass)
``classify+xai``     fused: one forward with gradients + one backward (B faces), for the
                     gradient methods (``Pipeline.classify_and_explain``)
``xai``              Integrated Gradients of B faces (``ig_steps`` · B rows)
``map``              Detect-ResNet50's input from B crops and attributions: resized crops
                     and XAI maps, normalized (``engine.xai.maps.detect_resnet_inputs``,
                     which applies ``prepare_map``'s rule)
``adversarial``      Detect-ResNet50 on B (crop, map) pairs

FLOPs are counted on a GPU with PyTorch's FLOP counter on one *eager* call at batch 1
(compiled graphs bypass the counter) and scaled by B (exact for convolutions and matrix
products); they give achieved FLOP/s and its share of the bf16 matmul peak measured in
the same run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from benchmarks.measure import count_flops, time_call
from engine.frames import Frame, FrameBatch
from engine.pipeline import FUSABLE_METHODS, Pipeline
from engine.xai.maps import detect_resnet_inputs


def run(bench: Any, peak_flops: float | None) -> list[dict[str, Any]]:
    s = bench.settings
    batches = sorted({*s.stage_batches, s.batch_size})
    images = bench.images(0, max(batches))
    frames = [Frame("stage", i, i / 25, im) for i, im in enumerate(images)]
    rows: list[dict[str, Any]] = []
    flops: dict[str, int] = {}
    for b in batches:
        rows += _measure_batch(bench, frames[:b], peak_flops, flops)
    return rows


def _measure_batch(
    bench: Any, frames: list[Frame], peak_flops: float | None, flops_cache: dict[str, int]
) -> list[dict[str, Any]]:
    """Every stage at batch ``len(frames)``."""
    s = bench.settings
    device = bench.device
    b = len(frames)
    base: Pipeline = bench.pipeline(s.xai[0])
    eager: Pipeline = bench.eager_pipeline(s.xai[0])
    rows: list[dict[str, Any]] = []

    def add(
        stage: str,
        method: str | None,
        fn: Callable[[], object],
        once: Callable[[], object] | None = None,
    ) -> None:
        seconds = time_call(fn, device, min_seconds=s.stage_seconds)
        row: dict[str, Any] = {
            "stage": stage,
            "method": method,
            "batch": b,
            "seconds_per_call": seconds,
            "items_per_s": b / seconds,
            "ms_per_item": 1000 * seconds / b,
        }
        key = f"{stage}:{method}"
        if once is not None and device.type == "cuda":
            if key not in flops_cache:
                flops_cache[key] = count_flops(once)
            flops = flops_cache[key]
            if flops:
                row["gflops_per_item"] = flops / 1e9
                row["tflops_per_s"] = flops * b / seconds / 1e12
                if peak_flops:
                    row["share_of_peak"] = flops * b / seconds / peak_flops
        rows.append(row)

    batch = FrameBatch.from_frames(frames, pin_memory=device.type == "cuda")
    on_device = batch.images.to(device)
    frame_ids, boxes = _one_face_per_frame(*base.detect(batch, on_device), b, batch)
    _, crops = base.crop(on_device, batch.sizes, frame_ids, boxes)
    one = crops[:1]
    add("detect", None, lambda: base.detect(batch, on_device))
    add("crop", None, lambda: base.crop(on_device, batch.sizes, frame_ids, boxes))
    add("classify", None, lambda: base.classify(crops), lambda: eager.classify(one))
    for method in s.xai:
        p, e = bench.pipeline(method), eager.with_settings(xai_method=method)
        if method in FUSABLE_METHODS and p.fused:
            add(
                "classify+xai",
                method,
                lambda p=p: p.classify_and_explain(crops, explain=torch.arange(len(crops))),
                lambda e=e: e.classify_and_explain(one, explain=torch.arange(1)),
            )
        elif method != "integrated_gradients" or b in s.ig_stage_batches:
            add("xai", method, lambda p=p: p.explain(crops), lambda e=e: e.explain(one))
        else:
            continue
        attributions = torch.randn_like(crops)  # the cost does not depend on the values
        add("map", method, lambda a=attributions, m=method: _inputs(base, crops, a, m))
    stacked = _inputs(base, crops, torch.randn_like(crops), "guided_backprop")
    adversarial = base.network_pass("adversarial")
    add(
        "adversarial",
        None,
        lambda: adversarial(*stacked.chunk(2)),
        lambda: eager.network_pass("adversarial")(*_pairs(stacked, 1)),
    )
    return rows


def _inputs(p: Pipeline, crops: torch.Tensor, attributions: torch.Tensor, method: str) -> Any:
    """Detect-ResNet50's normalized input for ``crops`` (the pipeline's check stage)."""
    cfg = p.adversarial.cfg
    q = p.settings.map_quantile
    return detect_resnet_inputs(crops, attributions, method, cfg.input_size, cfg.mean, cfg.std, q)


def _pairs(stacked: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    crops, maps = stacked.chunk(2)
    return crops[:n], maps[:n]


def _one_face_per_frame(
    frame_ids: torch.Tensor, boxes: torch.Tensor, b: int, batch: FrameBatch
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first face of every frame (a frame with none borrows the first face found)."""
    if len(boxes) == 0:
        h, w = batch.sizes[0].tolist()
        fallback = torch.tensor([[w * 0.35, h * 0.2, w * 0.65, h * 0.5, 1.0]])
    else:
        fallback = boxes[:1]
    chosen = []
    for i in range(b):
        mine = boxes[frame_ids == i]
        chosen.append(mine[:1] if len(mine) else fallback)
    return torch.arange(b), torch.cat(chosen)
