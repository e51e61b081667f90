"""The detection pipeline: frames in, one frame record per frame out.

Stages (``DESIGN.md``, data flow), each timed per batch, with where they run:

===============  ==========================================================  ===============
stage            computes                                                    runs on
===============  ==========================================================  ===============
``detect``       face detector f: boxes per frame                            CPU (Haar) or
                                                                             the device
                                                                             (RetinaFace)
``crop``         enlarge each box (``box_scale``), crop, resize to g's       device
                 input size (``engine.faces.crop``)
``classify``     deepfake detector g: ``p_fake`` per face; ``p_fake >=       device
                 fake_threshold`` is ``fake``
``xai``          for the faces g calls real: the XAI map of g's "real"       device
                 logit (``engine.xai``), one batched backward pass
                 (Integrated Gradients: one batch of ``ig_steps``
                 interpolations)
``adversarial``  Detect-ResNet50 d(crop, map): ``p_attacked``; ``>=          device
                 attacked_threshold`` is ``attacked``, else ``real``
===============  ==========================================================  ===============

What the stages compute is fixed by the models and :class:`~engine.config.PipelineConfig`.
How the networks run is the runtime's business (:mod:`engine.runtime`,
:class:`~engine.config.RuntimeConfig`: eager, ``torch.compile``, ONNX Runtime, TensorRT;
precision; batch buckets); where frames come from and how they are batched is the
caller's (``engine.runner``, the queue workers). The crop and the map preparation are
the functions ``training/`` uses to build Detect-ResNet50's data sets.

**Fused classify + XAI.** For the gradient methods (Guided Backprop, saliency,
input × gradient) with a differentiable runtime and ``runtime.fuse_classify_xai``, one
forward of g *with gradients* gives every face's ``p_fake``, and one backward of the
"real" logits of the faces called real gives their attributions: the forward is not run
twice. For Guided Backprop the forward runs through g's guided twin
(:func:`engine.xai.guided_model`), whose outputs equal g's. Unfused (Integrated
Gradients, ONNX/TensorRT runtimes), classification is a no-grad forward and the XAI pass
is :func:`engine.xai.attribute` on the runtime's gradient pass.

**Host↔device traffic per batch:** frames go to the device once (from pinned memory
when the caller pins them); per-face results come back once per stage as whole tensors
(``p_fake``, then ``p_attacked``), never face by face.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from engine.config import Config, PipelineConfig, RuntimeConfig
from engine.device import resolve_device
from engine.faces import (
    FaceDetector,
    create_face_detector,
    crop_faces,
    enlarge_boxes,
)
from engine.frames import Frame, FrameBatch
from engine.models import create_model
from engine.records import FaceResult, FrameRecord, Verdict
from engine.runtime import Runtime, create_runtime
from engine.stages.check import AttackCheck, NormalizedPairs
from engine.stages.classify import ClassifyThenExplain, FusedClassifyExplain
from engine.stages.detect import FaceDetection
from engine.stages.timing import StageTimer
from engine.xai import guided_model
from engine.xai.rules import GRADIENT_METHODS

log = logging.getLogger(__name__)

STAGES = ("detect", "crop", "classify", "xai", "adversarial")


FUSABLE_METHODS = GRADIENT_METHODS
"""XAI methods that are one backward of the classifying forward (fusable with ``classify``)."""


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
    signed_maps: bool = True
    """Whether ``maps`` are signed (0.5 is zero attribution) or magnitudes (saliency)."""

    def verdict(self, i: int, fake_threshold: float, attacked_threshold: float) -> Verdict:
        return _verdict(
            float(self.p_fake[i]), float(self.p_attacked[i]), fake_threshold, attacked_threshold
        )


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
        runtime: RuntimeConfig | None = None,
        face_detector_factory: Callable[[], FaceDetector] | None = None,
    ) -> None:
        """``face_detector_factory`` makes more face detectors like ``face_detector``:
        :meth:`detect_ahead` then gives each reader thread its own (detectors such as
        OpenCV's cascades cannot be shared by threads) instead of taking turns."""
        runtime = runtime or RuntimeConfig()
        # A batched detector's network runs like the others (precision, memory format,
        # compilation); per-frame CPU detectors stay as they are.
        self.faces = FaceDetection(face_detector.with_runtime(runtime), face_detector_factory)
        """Stage ``detect`` (``engine.stages.detect``)."""
        self.runtime: Runtime = create_runtime(runtime, device)
        # On the device, in eval mode, in the runtime's memory format and frozen from
        # the start, not when a pass is first built: whatever runs first (a pass, or an
        # attack differentiating ``detector`` in training) sees the same weights.
        self.detector = self.runtime.prepare(detector)
        self.adversarial = self.runtime.prepare(adversarial)
        self.settings = settings
        self.device = device
        self._passes: dict[str, nn.Module] = {}

    @property
    def face_detector(self) -> FaceDetector:
        return self.faces.detector

    @property
    def detect_ahead_ms(self) -> float:
        """Time spent detecting ahead, in ms (reader threads; a counter)."""
        return self.faces.ahead_ms

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
        return cls(
            face_detector,
            detector,
            adversarial,
            config.pipeline,
            device,
            config.runtime,
            face_detector_factory=lambda: create_face_detector(
                m.face_detector,
                weights=m.face_detector_weights or None,
                settings=config.faces,
                device=device,
            ),
        )

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

    @property
    def fused(self) -> bool:
        """Whether classification and XAI share one forward pass (see the module doc)."""
        return (
            self.runtime.settings.fuse_classify_xai
            and self.runtime.differentiable
            and self.settings.xai_method in FUSABLE_METHODS
        )

    @property
    def batched_detector(self) -> bool:
        """Whether the face detector runs once per batch (on the device) or per frame (CPU)."""
        return self.faces.batched

    @property
    def placement(self) -> dict[str, str]:
        """Where each stage runs: ``"cpu"`` or the pipeline's device."""
        device = str(self.device)
        return {
            "detect": device if self.batched_detector else "cpu",
            **{stage: device for stage in STAGES[1:]},
        }

    def with_settings(self, **changes: object) -> Pipeline:
        """This pipeline with other stage settings (``xai_method=...``), sharing its models,
        runtime and built passes (a compiled graph is not compiled twice)."""
        other = copy.copy(self)
        other.settings = dataclasses.replace(self.settings, **changes)  # type: ignore[arg-type]
        return other

    # --- the networks' passes (built once by the runtime) ----------------------------------

    def network_pass(self, name: str) -> nn.Module:
        """The runtime's pass ``classify``, ``gradient`` or ``adversarial`` (built lazily).

        ``gradient`` is the detector's differentiable pass: through its guided twin for
        Guided Backprop, the detector itself otherwise.
        """
        key = name
        if name == "gradient":
            if self.settings.xai_method == "guided_backprop":
                key = f"gradient-guided-{self.settings.guided_rule}"
        built = self._passes.get(key)
        if built is None:
            built = self._passes[key] = self._build_pass(key)
        return built

    def _build_pass(self, name: str) -> nn.Module:
        size = self.detector.cfg.input_size
        crops = torch.rand(2, 3, size, size, device=self.device)
        if name == "classify":
            return self.runtime.forward_pass(self.detector, (crops,), "detector")
        if name == "gradient":
            return self.runtime.gradient_pass(self.detector, (crops,), "detector-gradient")
        if name.startswith("gradient-guided-"):
            twin = guided_model(self.detector, rule=name.removeprefix("gradient-guided-"))
            return self.runtime.gradient_pass(twin, (crops,), "detector-guided")
        if name == "adversarial":
            size = self.adversarial.cfg.input_size
            x = torch.rand(2, 3, size, size, device=self.device)
            return self.runtime.forward_pass(NormalizedPairs(self.adversarial), (x, x), name)
        raise KeyError(f"no network pass {name!r}")

    def warm_start(self) -> float:
        """Build every batch bucket of every pass before the first frame, where the
        runtime builds per shape (``compile``, ``tensorrt``), and a compiled batched face
        detector for ``faces.warm_frame_sizes``, so that no frame waits for a
        compilation; the seconds it took (0.0 where there is nothing to build)."""
        if not self.runtime.builds_per_shape:
            return 0.0
        started = time.perf_counter()
        self.warmup(tuple(self.runtime.settings.batch_buckets))
        detector_sizes = self.faces.warm()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - started
        log.info(
            "warm start: %s buckets and %d face-detector input sizes built in %.1f s",
            self.runtime.name,
            detector_sizes,
            seconds,
        )
        return seconds

    def warmup(self, batch_sizes: tuple[int, ...] = (1,)) -> None:
        """Build every pass the configuration uses and run each at ``batch_sizes`` faces.

        With the compiled runtime this compiles (and captures) one graph per bucket, so
        the first frames are not slowed by compilation.
        """
        size = self.detector.cfg.input_size
        for n in batch_sizes:
            crops = torch.rand(n, 3, size, size, device=self.device)
            self.runtime.begin_step()
            self.classify_and_explain(crops, explain=torch.arange(n))
            self.check(crops, torch.zeros_like(crops), keep_maps=False)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # --- stages ---------------------------------------------------------------------------

    def detect(self, batch: FrameBatch, images: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """All faces of the batch: ``(frame_ids (M,), boxes (M, 5))`` on the CPU
        (:meth:`engine.stages.detect.FaceDetection.boxes`)."""
        return self.faces.boxes(batch, images)

    def detect_ahead(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        """``frames`` with their faces found in the calling (reader) thread by a per-frame
        detector (:meth:`engine.stages.detect.FaceDetection.ahead`); the frame path wraps
        every stream with it."""
        return self.faces.ahead(frames)

    def stream_ended(self, stream: str) -> None:
        """Stream ``stream`` (a ``FrameBatch.streams`` key) ended: drop its state (the face
        tracker of ``faces.detect_every``)."""
        self.faces.forget(stream)

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

    def _classify_explain(self) -> ClassifyThenExplain:
        kind = FusedClassifyExplain if self.fused else ClassifyThenExplain
        return kind(self.network_pass, self.settings, self.device)

    def classify(self, crops: torch.Tensor) -> torch.Tensor:
        """p_fake per crop (a no-grad forward of the runtime's classification pass)."""
        return ClassifyThenExplain(self.network_pass, self.settings, self.device).classify(crops)

    def explain(self, crops: torch.Tensor) -> torch.Tensor:
        """Attribution of the detector's "real" logit for each crop (``engine.xai``)."""
        return ClassifyThenExplain(self.network_pass, self.settings, self.device).explain(crops)

    def check(
        self, crops: torch.Tensor, attributions: torch.Tensor, keep_maps: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(p_attacked, prepared maps or None)`` from Detect-ResNet50
        (:class:`engine.stages.check.AttackCheck`)."""
        return AttackCheck(self.network_pass, self.settings, self.adversarial).run(
            crops, attributions, keep_maps
        )

    def classify_and_explain(
        self,
        crops: Tensor,
        explain: Tensor | None = None,
        timer: StageTimer | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Stages ``classify`` and ``xai``: ``(p_fake on the CPU, indices of the faces
        explained, their attributions or None)`` (``engine.stages.classify``: fused when
        :attr:`fused`).

        ``explain`` picks the faces to explain (indices); by default the faces the
        detector calls real. The offline dataset builder calls this too, so maps are
        taken exactly as online.
        """
        return self._classify_explain().run(crops, explain, timer)

    # --- the whole batch --------------------------------------------------------------------

    def analyze(
        self, batch: FrameBatch, job: str | Mapping[str, str] = "", keep_maps: bool = False
    ) -> BatchResult:
        """Every stage on ``batch``. ``job`` labels the records: one job for all, or a
        job per stream key (``FrameBatch.streams``); ``keep_maps`` keeps the prepared XAI
        maps in the result (an annotated video draws them)."""
        timer = StageTimer(self.device)
        self.runtime.begin_step()
        # One host->device copy per batch, issued first so it overlaps CPU detection.
        images = batch.images.to(self.device, non_blocking=True)
        with timer("detect"):
            frame_ids, boxes = self.detect(batch, images)
        with timer("crop"):
            crop_boxes, crops = self.crop(images, batch.sizes, frame_ids, boxes)
        p_fake, real, attributions = self.classify_and_explain(crops, timer=timer)
        p_attacked = torch.full((len(boxes),), float("nan"))
        maps = None
        if keep_maps:
            size = self.adversarial.cfg.input_size
            maps = torch.zeros(len(boxes), 3, size, size)
        with timer("adversarial"):
            if attributions is not None:
                p_att, real_maps = self.check(
                    crops[real.to(self.device)], attributions, keep_maps=keep_maps
                )
                p_attacked[real] = p_att.float().cpu()
                if maps is not None and real_maps is not None:
                    maps[real] = real_maps.float().cpu()
        signed = self.settings.xai_method != "saliency"
        faces = FaceBatch(frame_ids, boxes, crop_boxes, p_fake.float(), p_attacked, maps, signed)
        per_frame_ms = {k: v / len(batch) for k, v in timer.ms.items()}
        per_frame_ms["total"] = sum(per_frame_ms.values())
        records = self._records(batch, faces, job, per_frame_ms)
        return BatchResult(records, faces, timer.ms)

    def _records(
        self,
        batch: FrameBatch,
        faces: FaceBatch,
        job: str | Mapping[str, str],
        timings: dict[str, float],
    ) -> list[FrameRecord]:
        s = self.settings
        per_frame: list[list[FaceResult]] = [[] for _ in range(len(batch))]
        # Whole tensors to Python once, not element by element.
        p_fake = faces.p_fake.tolist()
        p_attacked = faces.p_attacked.tolist()
        boxes = faces.boxes[:, :4].tolist()
        for i, fid in enumerate(faces.frame_ids.tolist()):
            p_att = p_attacked[i]
            per_frame[fid].append(
                FaceResult(
                    box=tuple(boxes[i]),
                    p_fake=p_fake[i],
                    p_attacked=None if p_att != p_att else p_att,  # NaN: not checked
                    verdict=_verdict(p_fake[i], p_att, s.fake_threshold, s.attacked_threshold),
                )
            )
        weights = self.weights_status
        return [
            FrameRecord(
                job=job if isinstance(job, str) else job.get(batch.streams[k], ""),
                source=batch.sources[k],
                frame=batch.indices[k],
                pts=batch.pts[k],
                faces=tuple(per_frame[k]),
                weights=weights,
                timings_ms=timings,
                arrived=batch.arrived[k] if batch.arrived else None,
            )
            for k in range(len(batch))
        ]


def _verdict(
    p_fake: float, p_attacked: float, fake_threshold: float, attacked_threshold: float
) -> Verdict:
    if p_fake >= fake_threshold:
        return Verdict.FAKE
    return Verdict.ATTACKED if p_attacked >= attacked_threshold else Verdict.REAL
