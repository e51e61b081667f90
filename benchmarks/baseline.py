"""The paper's way of running the method: one frame at a time, batch 1, fp32, Captum.

Pinhasov et al. (2024), as its public code runs (``shared/PAPERS.md``): every frame
alone; every face alone through the deepfake detector (a no-grad forward for the
verdict), then Captum's attribution as a *separate* forward and backward (Integrated
Gradients with ``internal_batch_size=1``: ``n_steps`` forward+backward passes of one
image), then the map and Detect-ResNet50 at batch 1. Eager PyTorch, float32, the
Captum hooks registered and removed on every call.

It uses the Veritas pipeline's own face detector, crop and map preparation, and copies
of its models with the same weights (in PyTorch's default NCHW memory format), so the
two differ only in how the work is run, not in what is computed: the benchmark reports
the largest difference of their ``p_fake`` and ``p_attacked`` on the same frames as a
check.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from engine.faces import crop_faces, enlarge_boxes, resize_images
from engine.frames import Frame, FrameBatch
from engine.pipeline import Pipeline
from engine.xai import prepare_map

REAL, FAKE = 0, 1


@dataclass
class BaselineFace:
    source: str
    frame: int
    p_fake: float
    p_attacked: float | None


def captum_attribution(model: nn.Module, crop: Tensor, method: str, n_steps: int) -> Tensor:
    """Captum's attribution of the "real" logit for one crop, as the paper's code does."""

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum warns about its hooks on every call
        return _captum(model, crop, method, n_steps)


def _captum(model: nn.Module, crop: Tensor, method: str, n_steps: int) -> Tensor:
    from captum.attr import GuidedBackprop, InputXGradient, IntegratedGradients, Saliency

    if method == "guided_backprop":
        return GuidedBackprop(model).attribute(crop, target=REAL)
    if method == "integrated_gradients":
        return IntegratedGradients(model).attribute(
            crop, target=REAL, n_steps=n_steps, internal_batch_size=1
        )
    if method == "saliency":
        return Saliency(model).attribute(crop, target=REAL)
    if method == "input_x_gradient":
        return InputXGradient(model).attribute(crop, target=REAL)
    raise ValueError(f"no Captum baseline for {method!r}")


class PaperBaseline:
    """Frame by frame, face by face; the models and settings of ``pipeline``."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.device = pipeline.device
        self.settings = pipeline.settings

    def analyze(self, frame: Frame) -> list[BaselineFace]:
        p = self.pipeline
        s = self.settings
        batch = FrameBatch.from_frames([frame])
        image = batch.images.to(self.device)
        _, boxes = p.detect(batch, image)
        h, w = frame.height, frame.width
        faces = []
        for box in boxes:
            crop_box = enlarge_boxes(box[None], h, w, s.box_scale)
            crop = crop_faces(
                image, crop_box, torch.zeros(1, dtype=torch.long), p.detector.cfg.input_size
            )
            with torch.no_grad():
                p_fake = float(p.detector(crop).softmax(dim=1)[0, FAKE])
            p_attacked = None
            if p_fake < s.fake_threshold:
                attribution = captum_attribution(p.detector, crop, s.xai_method, s.ig_steps)
                size = p.adversarial.cfg.input_size
                maps = prepare_map(attribution, s.xai_method, size, quantile=s.map_quantile)
                with torch.no_grad():
                    logits = p.adversarial(resize_images(crop, size), maps)
                p_attacked = float(logits.softmax(dim=1)[0, 1])
            faces.append(BaselineFace(frame.source, frame.index, p_fake, p_attacked))
        return faces

    def run(self, frames: Iterable[Frame]) -> list[BaselineFace]:
        out: list[BaselineFace] = []
        for frame in frames:
            out.extend(self.analyze(frame))
        return out
