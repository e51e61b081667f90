"""The detection pipeline: frames in, one frame record per frame out.

Stages (``DESIGN.md``, data flow), each timed per batch:

``detect``       face detector f: boxes per frame
``crop``         enlarge each box (``box_scale``), crop, resize to g's input size
``classify``     deepfake detector g: ``p_fake`` per face; ``p_fake >= fake_threshold``
                 is ``fake``
``xai``          for the faces g calls real: the XAI map of g's "real" logit
                 (``engine.xai.attribute``) — one batched backward pass (Integrated
                 Gradients: one batch of ``ig_steps`` interpolations)
``adversarial``  Detect-ResNet50 d(crop, map): ``p_attacked``; ``>= attacked_threshold``
                 is ``attacked``, else ``real``

What the stages compute is fixed by the models and :class:`~engine.config.PipelineConfig`;
where they run (device) and how frames are batched is decided by the caller
(``engine.runner``, the queue workers). The crop and the map preparation are the
functions ``training/`` uses to build Detect-ResNet50's data sets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from engine.config import Config, PipelineConfig
from engine.faces import (
    FaceDetector,
    create_face_detector,
    crop_faces,
    enlarge_boxes,
    resize_images,
)
from engine.frames import FrameBatch
from engine.models import create_model
from engine.records import FaceResult, FrameRecord, Verdict
from engine.xai import attribute, prepare_map

log = logging.getLogger(__name__)

STAGES = ("detect", "crop", "classify", "xai", "adversarial")
REAL, FAKE = 0, 1


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class FaceBatch:
    """Per-face results of one frame batch (all on the CPU), in detection order."""

    frame_ids: torch.Tensor
    """(M,) index of each face's frame in the batch."""
    boxes: torch.Tensor
    """(M, 5) detector boxes x1, y1, x2, y2, score in frame pixels."""
    crop_boxes: torch.Tensor
    """(M, 4) the enlarged square crop boxes."""
    p_fake: torch.Tensor
    p_attacked: torch.Tensor
    """(M,) NaN for faces that were not checked (called fake)."""
    maps: torch.Tensor | None = None
    """(M, 3, S, S) prepared XAI maps (zeros for unchecked faces), when asked for."""

    def verdict(self, i: int, fake_threshold: float, attacked_threshold: float) -> Verdict:
        if self.p_fake[i] >= fake_threshold:
            return Verdict.FAKE
        return Verdict.ATTACKED if self.p_attacked[i] >= attacked_threshold else Verdict.REAL


@dataclass
class BatchResult:
    records: list[FrameRecord]
    faces: FaceBatch
    timings_ms: dict[str, float] = field(default_factory=dict)


class Pipeline:
    """Runs the stages on :class:`~engine.frames.FrameBatch` es."""

    def __init__(
        self,
        face_detector: FaceDetector,
        detector: nn.Module,
        adversarial: nn.Module,
        settings: PipelineConfig,
        device: torch.device,
    ) -> None:
        self.face_detector = face_detector
        self.detector = detector.to(device).eval()
        self.adversarial = adversarial.to(device).eval()
        self.settings = settings
        self.device = device

    @classmethod
    def from_config(cls, config: Config) -> Pipeline:
        device = resolve_device(config.pipeline.device)
        m = config.models
        face_detector = create_face_detector(
            m.face_detector,
            weights=m.face_detector_weights or None,
            settings=config.faces,
            device=device,
        )
        detector = create_model(m.detector, weights=m.detector_weights or None, kind="deepfake")
        adversarial = create_model(
            m.adversarial, weights=m.adversarial_weights or None, kind="adversarial"
        )
        return cls(face_detector, detector, adversarial, config.pipeline, device)

    @property
    def untrained_parts(self) -> list[str]:
        parts = {
            "face detector": self.face_detector,
            "deepfake detector": self.detector,
            "Detect-ResNet50": self.adversarial,
        }
        return [name for name, p in parts.items() if p.weights_status != "trained"]

    @property
    def weights_status(self) -> str:
        return "untrained" if self.untrained_parts else "trained"

    # --- stages ---------------------------------------------------------------------------

    def detect(self, batch: FrameBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """All faces of the batch: ``(frame_ids (M,), boxes (M, 5))`` on the CPU."""
        per_frame = self.face_detector.detect(batch.images, batch.sizes)
        frame_ids = torch.cat([torch.full((len(b),), i) for i, b in enumerate(per_frame)])
        boxes = torch.cat(per_frame) if per_frame else torch.zeros(0, 5)
        return frame_ids.long(), boxes.reshape(-1, 5)

    def crop(
        self,
        images: torch.Tensor,
        sizes: torch.Tensor,
        frame_ids: torch.Tensor,
        boxes: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Square crop boxes and [0, 1] crops at the detector's input size."""
        crop_boxes = torch.zeros(len(boxes), 4, dtype=torch.long)
        for i in frame_ids.unique().tolist():
            sel = frame_ids == i
            h, w = sizes[i].tolist()
            crop_boxes[sel] = enlarge_boxes(boxes[sel], h, w, self.settings.box_scale)
        crops = crop_faces(images, crop_boxes, frame_ids, self.detector.cfg.input_size)
        return crop_boxes, crops

    @torch.no_grad()
    def classify(self, crops: torch.Tensor) -> torch.Tensor:
        """p_fake per crop."""
        return self.detector(crops).softmax(dim=1)[:, FAKE]

    def explain(self, crops: torch.Tensor) -> torch.Tensor:
        """Attribution of the detector's "real" logit for each crop."""
        s = self.settings
        options: dict[str, object] = {}
        if s.xai_method == "integrated_gradients":
            options = {
                "n_steps": s.ig_steps,
                "internal_batch_size": s.ig_internal_batch_size or None,
            }
        return attribute(self.detector, crops, REAL, s.xai_method, **options)

    @torch.no_grad()
    def check(
        self, crops: torch.Tensor, attributions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(p_attacked, prepared maps)`` from Detect-ResNet50."""
        size = self.adversarial.cfg.input_size
        maps = prepare_map(
            attributions, self.settings.xai_method, size, quantile=self.settings.map_quantile
        )
        logits = self.adversarial(resize_images(crops, size), maps)
        return logits.softmax(dim=1)[:, 1], maps

    # --- the whole batch --------------------------------------------------------------------

    def analyze(self, batch: FrameBatch, job: str = "", keep_maps: bool = False) -> BatchResult:
        timer = _StageTimer(self.device)
        s = self.settings
        with timer("detect"):
            frame_ids, boxes = self.detect(batch)
        images = batch.images.to(self.device, non_blocking=True)
        with timer("crop"):
            crop_boxes, crops = self.crop(images, batch.sizes, frame_ids, boxes)
        with timer("classify"):
            p_fake = self.classify(crops)
        real = (p_fake < s.fake_threshold).nonzero().flatten()
        p_attacked = torch.full((len(boxes),), float("nan"))
        maps = None
        if keep_maps:
            size = self.adversarial.cfg.input_size
            maps = torch.zeros(len(boxes), 3, size, size)
        with timer("xai"):
            attributions = self.explain(crops[real]) if len(real) else None
        with timer("adversarial"):
            if attributions is not None:
                p_att, real_maps = self.check(crops[real], attributions)
                p_attacked[real.cpu()] = p_att.float().cpu()
                if maps is not None:
                    maps[real.cpu()] = real_maps.float().cpu()
        faces = FaceBatch(frame_ids, boxes, crop_boxes, p_fake.float().cpu(), p_attacked, maps)
        per_frame_ms = {k: v / len(batch) for k, v in timer.ms.items()}
        per_frame_ms["total"] = sum(per_frame_ms.values())
        records = self._records(batch, faces, job, per_frame_ms)
        return BatchResult(records, faces, timer.ms)

    def _records(
        self, batch: FrameBatch, faces: FaceBatch, job: str, timings: dict[str, float]
    ) -> list[FrameRecord]:
        s = self.settings
        per_frame: list[list[FaceResult]] = [[] for _ in range(len(batch))]
        for i, fid in enumerate(faces.frame_ids.tolist()):
            p_att = faces.p_attacked[i].item()
            per_frame[fid].append(
                FaceResult(
                    box=tuple(faces.boxes[i, :4].tolist()),
                    p_fake=faces.p_fake[i].item(),
                    p_attacked=None if p_att != p_att else p_att,  # NaN: not checked
                    verdict=faces.verdict(i, s.fake_threshold, s.attacked_threshold),
                )
            )
        weights = self.weights_status
        return [
            FrameRecord(
                job=job,
                source=batch.sources[k],
                frame=batch.indices[k],
                pts=batch.pts[k],
                faces=tuple(per_frame[k]),
                weights=weights,
                timings_ms=timings,
            )
            for k in range(len(batch))
        ]


class _StageTimer:
    """Wall time per stage in ms; synchronizes CUDA so GPU work is counted in its stage."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.ms: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.ms[stage] = self.ms.get(stage, 0.0) + (time.perf_counter() - start) * 1000
