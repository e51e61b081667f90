"""RetinaFace face detector (MobileNet-0.25), batched over a frame batch on any device.

Deng et al., "RetinaFace: Single-stage Dense Face Localisation in the Wild" (CVPR 2020),
in the MobileNet-0.25 variant of biubug6/Pytorch_Retinaface (``cfg_mnet``): a
MobileNetV1 x0.25 backbone (``body.stage1..3``, strides 8/16/32), a three-level FPN
(``fpn``), one SSH context module per level (``ssh1..3``) and 1x1 heads per level
(``ClassHead``, ``BboxHead``, ``LandmarkHead``) with two anchors per location.

The module names and their order are those of the published checkpoint
``mobilenet0.25_Final.pth``, so :func:`map_published_state` only strips the
``module.`` prefix of a DataParallel save (``veritas convert-weights --format
retinaface-mnet``). Inputs follow the published preprocessing: BGR, float pixels minus
the BGR means (104, 117, 123), no scaling to [0, 1], no std.

Batching: frames of different sizes share one network pass. They come zero-padded at
the bottom/right; the network zeroes everything outside each frame's own region before
every 3x3 convolution (that is what a frame alone sees at its border: the conv's zero
padding) and the detector drops anchors outside it, so a frame's detections do not
depend on the other frames of its batch (up to float rounding).
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from engine.errors import ConfigError, WeightsError
from engine.faces.base import (
    DetectionSettings,
    FaceDetector,
    FaceDetectorCfg,
    register_face_detector,
)
from engine.models.weights import load_weights

log = logging.getLogger(__name__)

__all__ = [
    "CFG_MNET",
    "RetinaFaceCfg",
    "RetinaFaceDetector",
    "RetinaFaceNet",
    "decode_boxes",
    "decode_landmarks",
    "map_published_state",
    "prior_boxes",
    "retinaface",
]


@dataclass(frozen=True)
class RetinaFaceCfg:
    """Anchors, box coding and preprocessing of a RetinaFace network (published ``cfg_*``)."""

    min_sizes: tuple[tuple[int, ...], ...]
    """Anchor sides in input pixels, per level (one anchor per side and location)."""
    steps: tuple[int, ...]
    """Stride of each level's feature map."""
    variance: tuple[float, float]
    """Box-coding variances of the centre offsets and of the log sizes."""
    in_channel: int
    out_channel: int
    mean_bgr: tuple[float, float, float]
    """Subtracted from the BGR pixels (0..255), the only input normalization."""


CFG_MNET = RetinaFaceCfg(
    min_sizes=((16, 32), (64, 128), (256, 512)),
    steps=(8, 16, 32),
    variance=(0.1, 0.2),
    in_channel=32,
    out_channel=64,
    mean_bgr=(104.0, 117.0, 123.0),
)
"""``cfg_mnet`` of Pytorch_Retinaface (``clip`` False: priors are never clipped)."""

ANCHORS = 2
"""Anchors per feature-map location (``len(min_sizes[k])`` for every level)."""
LEAKY = 0.1
"""LeakyReLU slope of the whole MobileNet-0.25 model (the FPN and SSH use 0.1 because
``out_channel <= 64``)."""


# --- masking of padded batches ----------------------------------------------------------


class _ValidMask:
    """Zeroes, per image, the feature-map cells outside that image's own region.

    ``sizes`` are the images' true ``(height, width)`` in network-input pixels (the batch
    is padded at the bottom/right). At stride ``s`` the valid cells are the first
    ``ceil(h / s)`` rows and ``ceil(w / s)`` columns: exactly the feature map the image
    would have alone, since every stride-2 conv (3x3, padding 1) maps ``n`` to
    ``ceil(n / 2)``. ``sizes=None`` (no padding) leaves tensors as they are.
    """

    def __init__(self, sizes: torch.Tensor | None) -> None:
        self.sizes = sizes
        self._cache: dict[tuple[int, int, int, torch.dtype], torch.Tensor] = {}

    def __call__(self, x: torch.Tensor, stride: int) -> torch.Tensor:
        if self.sizes is None:
            return x
        key = (stride, x.shape[-2], x.shape[-1], x.dtype)
        mask = self._cache.get(key)
        if mask is None:
            valid = (self.sizes.to(x.device) + stride - 1) // stride  # (N, 2) ceil
            rows = torch.arange(x.shape[-2], device=x.device)[None, :] < valid[:, :1]
            cols = torch.arange(x.shape[-1], device=x.device)[None, :] < valid[:, 1:]
            mask = (rows[:, None, :, None] & cols[:, None, None, :]).to(x.dtype)
            self._cache[key] = mask
        return x * mask


# --- building blocks (published names: indices inside each Sequential matter) -------------


def conv_bn(cin: int, cout: int, stride: int = 1, leaky: float = 0.0) -> nn.Sequential:
    """3x3 conv (no bias), BN, LeakyReLU: keys ``0.weight``, ``1.*``."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(leaky)
    )


def conv_bn_no_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (no bias) and BN."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))


def conv_bn1x1(cin: int, cout: int, leaky: float = 0.0) -> nn.Sequential:
    """1x1 conv (no bias), BN, LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(leaky)
    )


def conv_dw(cin: int, cout: int, stride: int, leaky: float = LEAKY) -> nn.Sequential:
    """Depthwise 3x3 (groups=cin), BN, LeakyReLU, pointwise 1x1, BN, LeakyReLU (keys 0..5)."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.LeakyReLU(leaky),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(leaky),
    )


class MobileNetV1Body(nn.Module):
    """MobileNetV1 x0.25 up to its stride-32 stage: ``stage1`` (64 ch, stride 8),
    ``stage2`` (128 ch, stride 16), ``stage3`` (256 ch, stride 32); no pooling, no fc."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            conv_bn(3, 8, 2, leaky=LEAKY),
            conv_dw(8, 16, 1),
            conv_dw(16, 32, 2),
            conv_dw(32, 32, 1),
            conv_dw(32, 64, 2),
            conv_dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(conv_dw(64, 128, 2), *(conv_dw(128, 128, 1) for _ in range(5)))
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))

    def forward(self, x: torch.Tensor, mask: _ValidMask | None = None) -> list[torch.Tensor]:
        """The three stage outputs, each zeroed outside the valid region."""
        mask = mask or _ValidMask(None)
        outs = []
        stride = 1
        x = mask(x, stride)
        for stage in (self.stage1, self.stage2, self.stage3):
            for block in stage:
                stride *= block[0].stride[0]  # every block opens with its 3x3 conv
                x = mask(block(x), stride)
            outs.append(x)
        return outs


class FPN(nn.Module):
    """Top-down feature pyramid: 1x1 lateral convs, nearest upsampling, 3x3 merges."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, leaky: float = LEAKY) -> None:
        super().__init__()
        self.output1 = conv_bn1x1(in_channels[0], out_channels, leaky)
        self.output2 = conv_bn1x1(in_channels[1], out_channels, leaky)
        self.output3 = conv_bn1x1(in_channels[2], out_channels, leaky)
        self.merge1 = conv_bn(out_channels, out_channels, leaky=leaky)
        self.merge2 = conv_bn(out_channels, out_channels, leaky=leaky)

    def forward(
        self,
        feats: Sequence[torch.Tensor],
        mask: _ValidMask | None = None,
        strides: Sequence[int] = CFG_MNET.steps,
    ) -> list[torch.Tensor]:
        mask = mask or _ValidMask(None)
        s1, s2, _ = strides
        out1 = self.output1(feats[0])
        out2 = self.output2(feats[1])
        out3 = self.output3(feats[2])
        # Upsample to the finer map's exact size: ceil(n / 2) cells -> n cells, cell i
        # reads cell i // 2, so valid cells only read valid cells.
        out2 = out2 + F.interpolate(out3, size=out2.shape[-2:], mode="nearest")
        out2 = self.merge2(mask(out2, s2))
        out1 = out1 + F.interpolate(out2, size=out1.shape[-2:], mode="nearest")
        out1 = self.merge1(mask(out1, s1))
        return [out1, out2, out3]


class SSH(nn.Module):
    """Single Stage Headless context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3)
    branches concatenated (out/2 + out/4 + out/4 channels), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, leaky: float = LEAKY) -> None:
        super().__init__()
        if out_channels % 4:
            raise ValueError(f"SSH needs out_channels divisible by 4, got {out_channels}")
        self.conv3X3 = conv_bn_no_relu(in_channels, out_channels // 2)
        self.conv5X5_1 = conv_bn(in_channels, out_channels // 4, leaky=leaky)
        self.conv5X5_2 = conv_bn_no_relu(out_channels // 4, out_channels // 4)
        self.conv7X7_2 = conv_bn(out_channels // 4, out_channels // 4, leaky=leaky)
        self.conv7x7_3 = conv_bn_no_relu(
            out_channels // 4, out_channels // 4
        )  # lower-case x, as published
        self.relu = nn.ReLU()

    def forward(
        self, x: torch.Tensor, mask: _ValidMask | None = None, stride: int = 1
    ) -> torch.Tensor:
        mask = mask or _ValidMask(None)
        x = mask(x, stride)
        c3 = self.conv3X3(x)
        c5_1 = mask(self.conv5X5_1(x), stride)
        c5 = self.conv5X5_2(c5_1)
        c7 = self.conv7x7_3(mask(self.conv7X7_2(c5_1), stride))
        return self.relu(torch.cat([c3, c5, c7], dim=1))


class Head(nn.Module):
    """A per-level 1x1 conv (with bias) giving ``values`` numbers per anchor, flattened
    to ``(N, H * W * anchors, values)`` in (row, column, anchor) order."""

    def __init__(self, in_channels: int, values: int, anchors: int = ANCHORS) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(in_channels, anchors * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)  # NCHW -> NHWC
        return out.reshape(out.shape[0], -1, self.values)


class RetinaFaceNet(nn.Module):
    """RetinaFace with the published module names (its ``state_dict`` is the checkpoint's).

    ``forward(x)`` takes normalized BGR images ``(N, 3, H, W)`` (see
    :attr:`RetinaFaceCfg.mean_bgr`) and returns, over the ``P`` priors of
    :func:`prior_boxes` for ``(H, W)``: box offsets ``(N, P, 4)``, softmax scores
    ``(N, P, 2)`` (index 1 = face) and landmark offsets ``(N, P, 10)``.
    """

    weights_status: str = "untrained"

    def __init__(self, cfg: RetinaFaceCfg = CFG_MNET) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.in_channel
        self.body = MobileNetV1Body()
        self.fpn = FPN([c * 2, c * 4, c * 8], cfg.out_channel)
        self.ssh1 = SSH(cfg.out_channel, cfg.out_channel)
        self.ssh2 = SSH(cfg.out_channel, cfg.out_channel)
        self.ssh3 = SSH(cfg.out_channel, cfg.out_channel)
        levels = len(cfg.steps)
        self.ClassHead = nn.ModuleList(Head(cfg.out_channel, 2) for _ in range(levels))
        self.BboxHead = nn.ModuleList(Head(cfg.out_channel, 4) for _ in range(levels))
        self.LandmarkHead = nn.ModuleList(Head(cfg.out_channel, 10) for _ in range(levels))
        self.softmax = nn.Softmax(dim=-1)

    def forward_features(
        self, x: torch.Tensor, sizes: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """The three SSH outputs (strides 8, 16, 32).

        ``sizes`` ``(N, 2)``: each image's true ``(height, width)`` when the batch is
        zero-padded at the bottom/right; None when every image fills the tensor.
        """
        mask = _ValidMask(sizes)
        feats = self.body(x, mask)
        feats = self.fpn(feats, mask, self.cfg.steps)
        return [
            ssh(f, mask, s)
            for ssh, f, s in zip(
                (self.ssh1, self.ssh2, self.ssh3), feats, self.cfg.steps, strict=True
            )
        ]

    def forward_head(
        self, feats: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats, strict=True)], dim=1)
        conf = torch.cat([h(f) for h, f in zip(self.ClassHead, feats, strict=True)], dim=1)
        landms = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats, strict=True)], dim=1)
        return loc, self.softmax(conf), landms

    def forward(
        self, x: torch.Tensor, sizes: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.forward_head(self.forward_features(x, sizes))


# --- priors and box coding -----------------------------------------------------------------


def _prior_grid(
    height: int, width: int, cfg: RetinaFaceCfg, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Priors ``(P, 4)`` and, per prior, ``(row, column, stride)`` ``(P, 3)`` long."""
    boxes, cells = [], []
    for step, sizes in zip(cfg.steps, cfg.min_sizes, strict=True):
        fh, fw = -(-height // step), -(-width // step)  # ceil
        rows = torch.arange(fh, device=device, dtype=torch.float64)
        cols = torch.arange(fw, device=device, dtype=torch.float64)
        cy = ((rows + 0.5) * step / height)[:, None, None].expand(fh, fw, len(sizes))
        cx = ((cols + 0.5) * step / width)[None, :, None].expand(fh, fw, len(sizes))
        side = torch.tensor(sizes, device=device, dtype=torch.float64)[None, None, :]
        sw = (side / width).expand(fh, fw, len(sizes))
        sh = (side / height).expand(fh, fw, len(sizes))
        # Order: rows, then columns, then anchors -- the heads' (H, W, anchor) order.
        boxes.append(torch.stack([cx, cy, sw, sh], dim=-1).reshape(-1, 4))
        r = torch.arange(fh, device=device)[:, None, None].expand(fh, fw, len(sizes))
        c = torch.arange(fw, device=device)[None, :, None].expand(fh, fw, len(sizes))
        cells.append(torch.stack([r, c, torch.full_like(r, step)], dim=-1).reshape(-1, 3))
    return torch.cat(boxes).float(), torch.cat(cells)


def prior_boxes(
    height: int, width: int, cfg: RetinaFaceCfg = CFG_MNET, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The published ``PriorBox`` for an ``height x width`` input: ``(P, 4)`` float32
    ``(cx, cy, w, h)`` as fractions of the input size.

    For each level (stride ``s``, feature map ``ceil(H/s) x ceil(W/s)``), row ``i``, then
    column ``j``, then anchor side ``m``: ``((j + .5) s / W, (i + .5) s / H, m / W, m / H)``.
    """
    return _prior_grid(height, width, cfg, device)[0]


class _PriorCache:
    """Priors and their grid cells per ``(height, width, device)``; keeps the latest few."""

    def __init__(self, cfg: RetinaFaceCfg, capacity: int = 8) -> None:
        self.cfg = cfg
        self.capacity = capacity
        self._items: OrderedDict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor]] = (
            OrderedDict()
        )

    def __call__(
        self, height: int, width: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        key = (height, width, str(device))
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        item = _prior_grid(height, width, self.cfg, device)
        self._items[key] = item
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return item


def decode_boxes(
    loc: torch.Tensor, priors: torch.Tensor, variance: Sequence[float] = CFG_MNET.variance
) -> torch.Tensor:
    """Box offsets ``(..., P, 4)`` -> ``x1, y1, x2, y2`` in the priors' (fractional) units."""
    centre = priors[..., :2] + loc[..., :2] * variance[0] * priors[..., 2:]
    size = priors[..., 2:] * torch.exp(loc[..., 2:] * variance[1])
    top_left = centre - size / 2
    return torch.cat([top_left, top_left + size], dim=-1)


def decode_landmarks(
    landms: torch.Tensor, priors: torch.Tensor, variance: Sequence[float] = CFG_MNET.variance
) -> torch.Tensor:
    """Landmark offsets ``(..., P, 10)`` -> five ``(x, y)`` points ``(..., P, 10)``."""
    offsets = landms.unflatten(-1, (5, 2))
    points = priors[..., None, :2] + offsets * variance[0] * priors[..., None, 2:]
    return points.flatten(-2)


# --- the published checkpoint ----------------------------------------------------------------


def map_published_state(
    state: dict[str, torch.Tensor], target: nn.Module | None = None
) -> dict[str, torch.Tensor]:
    """Keys of Pytorch_Retinaface's ``mobilenet0.25_Final.pth`` -> :class:`RetinaFaceNet`'s
    (``target``, the converter's second argument, is not needed: the names are fixed).

    Unwraps a ``'state_dict'`` entry and strips the ``module.`` prefix of a DataParallel
    save; the names are otherwise the same. Missing ``num_batches_tracked`` buffers (not
    used at inference) are filled with zeros. Raises :class:`WeightsError` when the
    tensors do not fit RetinaFace-MobileNet-0.25.
    """
    inner = state.get("state_dict")
    if isinstance(inner, dict):
        state = inner
    mapped = {k.removeprefix("module."): v for k, v in state.items()}
    own = RetinaFaceNet().state_dict()
    for key, value in own.items():
        if key.endswith("num_batches_tracked") and key not in mapped:
            mapped[key] = torch.zeros_like(value)
    unexpected = sorted(set(mapped) - set(own))
    missing = sorted(set(own) - set(mapped))
    if unexpected or missing:
        what = (
            f"unexpected tensors {unexpected[:4]}"
            if unexpected
            else f"missing tensors {missing[:4]}"
        )
        raise WeightsError(
            "retinaface-mnet checkpoint",
            f"is not RetinaFace-MobileNet-0.25: {what}",
            "give Pytorch_Retinaface's mobilenet0.25_Final.pth (the ResNet-50 one does not fit)",
        )
    for key, value in own.items():
        if tuple(mapped[key].shape) != tuple(value.shape):
            raise WeightsError(
                "retinaface-mnet checkpoint",
                f"tensor {key} has shape {tuple(mapped[key].shape)}, expected {tuple(value.shape)}",
                "give Pytorch_Retinaface's mobilenet0.25_Final.pth",
            )
    return {key: mapped[key] for key in own}  # the module's order


# --- the detector ------------------------------------------------------------------------------

RETINAFACE_CFG = FaceDetectorCfg(
    name="retinaface",
    weights_format="retinaface-mnet",
    published="Pytorch_Retinaface 'mobilenet0.25_Final.pth' (state dict of RetinaFace(cfg_mnet))",
    batched=True,
)


class RetinaFaceDetector(FaceDetector):
    """RetinaFace-MobileNet-0.25 over a whole frame batch in one network pass.

    Each frame is downscaled (bilinear, antialiased) so that its longer side is at most
    ``max_side`` (0: never), the batch goes through the network once, and per frame the
    published ``detect.py`` post-processing runs: scores ``> confidence_threshold``, the
    ``top_k`` best, NMS at ``nms_iou``, the ``keep_top_k`` best. Boxes are scaled back to
    frame pixels, clipped to the frame, then the settings' limits apply (score, minimum
    size, count; ``score_threshold`` 0.5 by default, the published visualization
    threshold is 0.6).

    Without ``weights`` the network is randomly initialized (``weights_status ==
    "untrained"``) and finds no faces reliably; convert the published checkpoint with
    ``veritas convert-weights mobilenet0.25_Final.pth retinaface.safetensors --format
    retinaface-mnet --trust-pickle``.

    Example::

        detector = RetinaFaceDetector("retinaface.safetensors").to("cuda")
        boxes = detector.detect(batch.images, batch.sizes)   # [(k, 5)] per frame
    """

    cfg = RETINAFACE_CFG

    def __init__(
        self,
        weights: str | Path | None = None,
        settings: DetectionSettings | None = None,
        max_side: int = 1024,
        confidence_threshold: float = 0.02,
        nms_iou: float = 0.4,
        top_k: int = 5000,
        keep_top_k: int = 750,
    ) -> None:
        super().__init__(settings)
        for key, value, ok, expected in (
            ("max_side", max_side, max_side >= 0, "0 (never downscale) or a positive size"),
            (
                "confidence_threshold",
                confidence_threshold,
                0.0 <= confidence_threshold <= 1.0,
                "a value from 0 to 1",
            ),
            ("nms_iou", nms_iou, 0.0 < nms_iou <= 1.0, "a value above 0, at most 1"),
            ("top_k", top_k, top_k >= 1, "at least 1"),
            ("keep_top_k", keep_top_k, keep_top_k >= 1, "at least 1"),
        ):
            if not ok:
                raise ConfigError(f"retinaface.{key}", value, expected)
        self.max_side = max_side
        self.confidence_threshold = confidence_threshold
        self.nms_iou = nms_iou
        self.top_k = top_k
        self.keep_top_k = keep_top_k
        self.net = RetinaFaceNet(CFG_MNET).eval()
        self.net_cfg = self.net.cfg
        self._priors = _PriorCache(self.net_cfg)
        if weights:
            load_weights(self.net, weights, arch="retinaface")
            log.info("retinaface: loaded %s (%s)", weights, self.net.weights_status)
        # Without weights the net is random; `veritas run` warns once for every untrained part.
        self.weights_status = self.net.weights_status

    def to(self, device: torch.device | str) -> RetinaFaceDetector:
        super().to(device)
        self.net.to(self.device)
        return self

    _autocast: torch.dtype | None = None
    """The network's autocast precision (None: float32)."""
    _channels_last = False
    _compiled: nn.Module | None = None
    """``torch.compile`` of the network, for unpadded batches (fixed shapes, no mask)."""

    def with_runtime(self, settings: Any) -> RetinaFaceDetector:
        """A copy that runs the network like the pipeline's other networks: autocast to
        ``settings.precision``, channels-last weights and input, and with the ``compile``
        backend ``torch.compile`` (``compile_backend``; no CUDA graphs: frame sizes vary)
        for batches of one frame size, the number of frames dynamic. It compiles for the
        frame sizes :meth:`warm` is given (``Pipeline.warm_start``: ``faces.warm_frame_sizes``)
        and at the first batch of any other size. The original is left as it was (a
        benchmark's eager pipeline shares it)."""
        out = copy.copy(self)
        out._autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(settings.precision)
        if settings.channels_last:
            out.net = copy.deepcopy(self.net).to(memory_format=torch.channels_last)
            out._channels_last = True
        out._compiled = None
        if settings.backend == "compile":
            out._compiled = torch.compile(out.net, backend=settings.compile_backend)
        return out

    def warm(self, frame_sizes: Sequence[tuple[int, int]]) -> int:
        """Compile the network for batches of frames of each ``(height, width)``: two
        frames, then one (Dynamo gives one frame a graph of its own; two or more share the
        dynamic one). Sizes that reach the network at one size after ``max_side`` are
        built once. Nothing is done when the network is not compiled. Returns how many
        network input sizes were built."""
        if self._compiled is None:
            return 0
        built: set[tuple[int, int]] = set()
        for height, width in frame_sizes:
            (size,) = self._input_sizes([[height, width]])
            if size in built:
                continue
            built.add(size)
            frames = torch.zeros(2, height, width, 3, dtype=torch.uint8, device=self.device)
            sizes = torch.tensor([[height, width]] * 2)
            for n in (2, 1):  # through detect(): the real calls' grad mode and autocast
                self.detect(frames[:n], sizes[:n])
        return len(built)

    # -- public API --

    def detect(self, frames: torch.Tensor, sizes: torch.Tensor) -> list[torch.Tensor]:
        """Boxes ``x1, y1, x2, y2, score`` per frame: ``(k, 5)`` float32 CPU tensors."""
        return [rows[:, :5] for rows in self._detect_rows(frames, sizes)]

    def detect_with_landmarks(
        self, frames: torch.Tensor, sizes: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per frame: boxes ``(k, 5)`` as :meth:`detect` and their five landmarks
        ``(k, 5, 2)`` ``(x, y)`` in frame pixels (published order: the two eyes, the nose
        tip, the two mouth corners; not clipped to the frame)."""
        return [
            (rows[:, :5], rows[:, 5:].reshape(-1, 5, 2))
            for rows in self._detect_rows(frames, sizes)
        ]

    # -- steps --

    def _input_sizes(self, sizes: list[list[int]]) -> list[tuple[int, int]]:
        """Each frame's network-input ``(height, width)`` after the ``max_side`` limit."""
        out = []
        for h, w in sizes:
            scale = (
                self.max_side / max(h, w) if self.max_side and max(h, w) > self.max_side else 1.0
            )
            out.append((max(1, round(h * scale)), max(1, round(w * scale))))
        return out

    def _prepare(
        self, frames: torch.Tensor, sizes: list[list[int]], in_sizes: list[tuple[int, int]]
    ) -> torch.Tensor:
        """uint8 NHWC RGB frames -> normalized BGR NCHW network input (resized per frame)."""
        mean = torch.tensor(self.net_cfg.mean_bgr, device=self.device).view(1, 3, 1, 1)
        x = frames.to(self.device).permute(0, 3, 1, 2).flip(1).float() - mean  # RGB -> BGR
        if all(s == tuple(o) for s, o in zip(in_sizes, sizes, strict=True)):
            return x
        out = x.new_zeros(
            len(in_sizes), 3, max(h for h, _ in in_sizes), max(w for _, w in in_sizes)
        )
        for i, ((h, w), (nh, nw)) in enumerate(zip(sizes, in_sizes, strict=True)):
            image = x[i : i + 1, :, :h, :w]
            if (nh, nw) != (h, w):
                image = F.interpolate(
                    image, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False
                )
            out[i, :, :nh, :nw] = image[0]
        return out

    def _predict(
        self, frames: torch.Tensor, sizes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every prior's box ``(N, P, 4)`` and landmarks ``(N, P, 10)`` in frame pixels
        (not clipped), and its face score ``(N, P)`` (-1 for priors outside the frame)."""
        true_sizes = sizes.tolist()
        in_sizes = self._input_sizes(true_sizes)
        x = self._prepare(frames, true_sizes, in_sizes)
        height, width = x.shape[-2:]
        valid_sizes = torch.tensor(in_sizes, device=self.device, dtype=torch.long)
        padded = any(s != (height, width) for s in in_sizes)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        net = self.net
        if self._compiled is not None and not padded:
            net = self._compiled
            torch._dynamo.mark_dynamic(x, 0)  # one graph whatever the frames per batch
        with torch.autocast(
            self.device.type, dtype=self._autocast or torch.float32, enabled=bool(self._autocast)
        ):
            loc, conf, landms = net(x, valid_sizes if padded else None)
        loc, conf, landms = loc.float(), conf.float(), landms.float()
        priors, cells = self._priors(height, width, self.device)
        # Priors are fractions of the padded input: back to its pixels, then to each frame's.
        scale_back = torch.tensor(
            [[w / nw, h / nh] for (h, w), (nh, nw) in zip(true_sizes, in_sizes, strict=True)],
            device=self.device,
        ) * torch.tensor([width, height], device=self.device)  # (N, 2) as (x, y)
        boxes = decode_boxes(loc, priors, self.net_cfg.variance) * scale_back.repeat(1, 2)[:, None]
        points = (
            decode_landmarks(landms, priors, self.net_cfg.variance)
            * scale_back.repeat(1, 5)[:, None]
        )
        # Priors whose cell lies outside a frame's own feature map exist only in the padding.
        stride = cells[None, :, 2:]
        cells_per_side = (valid_sizes[:, None, :] + stride - 1) // stride  # (N, P, 2): ceil
        inside = (cells[None, :, :2] < cells_per_side).all(dim=-1)
        scores = conf[..., 1].masked_fill(~inside, -1.0)
        return boxes, scores, points

    def _detect_rows(self, frames: torch.Tensor, sizes: torch.Tensor) -> list[torch.Tensor]:
        """Per frame ``(k, 15)``: box, score, landmarks, after NMS and the settings' limits."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or sizes.shape != (frames.shape[0], 2):
            raise ValueError(
                f"expected frames (N, H, W, 3) and sizes (N, 2), got {tuple(frames.shape)} "
                f"and {tuple(sizes.shape)}"
            )
        if len(frames) == 0:
            return []
        with torch.no_grad():
            boxes, scores, points = self._predict(frames, sizes)
            cand, ids = self._select(boxes, scores, points)
            # torchvision's IoU uses (x2 - x1) * (y2 - y1), without the "+1" of the published
            # py_cpu_nms: negligible for faces of >= 16 px (the smallest anchor).
            kept = torchvision.ops.batched_nms(cand[:, :4], cand[:, 4], ids, self.nms_iou)
            # One transfer for the whole batch; the per-frame split is on the host.
            cand, ids = cand[kept].float().cpu(), ids[kept].cpu()  # best first
            out = []
            for i, (h, w) in enumerate(sizes.tolist()):
                found = cand[ids == i][: self.keep_top_k]
                found[:, 0:4:2] = found[:, 0:4:2].clamp(0, w)
                found[:, 1:4:2] = found[:, 1:4:2].clamp(0, h)
                # _finish selects rows by score, size and count; the landmark columns ride along.
                finished = self._finish(found)
                out.append(finished if finished.shape[1] == found.shape[1] else torch.zeros(0, 15))
            return out

    def _select(
        self, boxes: torch.Tensor, scores: torch.Tensor, points: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The NMS candidates of the whole batch at once: per frame, the priors scoring
        above ``confidence_threshold``, at most the ``top_k`` best (one batched top-k, no
        per-frame ``nonzero``); ``(M, 15)`` rows (box, score, landmarks) and their frame
        numbers ``(M,)``."""
        n, p = scores.shape
        top, index = scores.topk(min(self.top_k, p), dim=1)  # (N, K), best first
        above = top > self.confidence_threshold

        def pick(values: torch.Tensor) -> torch.Tensor:
            return values.gather(1, index[..., None].expand(-1, -1, values.shape[-1]))

        rows = torch.cat([pick(boxes), top[..., None], pick(points)], dim=2)
        frame_ids = torch.arange(n, device=scores.device)[:, None].expand_as(index)
        return rows[above], frame_ids[above]


@register_face_detector(RETINAFACE_CFG)
def retinaface(**kwargs: object) -> RetinaFaceDetector:
    return RetinaFaceDetector(**kwargs)  # type: ignore[arg-type]
