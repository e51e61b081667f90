"""Build Detect-ResNet50's data sets: faces → deepfake detector → attacks → XAI maps → shards.

Pinhasov et al. 2024, sections 3.1 and 3.5. For every video of the input (FF++ tree or
plain ``real/`` ``fake/`` folder, :mod:`training.videos`), split by video:

1. **clean** — sampled frames go through the engine's own stages (``Pipeline.detect``,
   ``Pipeline.crop``, ``Pipeline.classify``; one face per frame, the highest-scoring
   and then largest): every face crop is stored (uint8, at the detector's input size)
   with its p_fake. The verdict and the maps of a clean face are computed on the float
   crop, exactly as the engine computes them online. Real faces the detector calls
   real are Detect-ResNet50's class 0 (``label`` 0).
2. **attacks** — the fake faces the detector catches are attacked (train split: the
   train attacks, PGD as in the paper; test split: every test attack) from their
   stored crop; the adversarial crop is quantized to 8 bits (what a video carries) and
   judged again; successful attacks (called real) are class 1. Success is recorded for
   every attacked face.
3. **XAI maps** — for every face the detector calls real: ``Pipeline.explain`` for each
   XAI method, then ``engine.xai.prepare_map`` at Detect-ResNet50's input size and
   ``map_to_uint8`` — the engine's own functions, never a copy, so a stored map equals
   the one the engine computes online for that face, bit for bit.
4. **pairs** — when the manifest is written, real faces and fooled faces are paired as
   in the paper ("pairs of real/attacked images"): per video group and attack, one
   fooled face per real face, taken in turn from the group's fake videos
   (:func:`training.data.pair_rows`; ``--pairing all`` keeps every labelled face). Each
   row's ``paired`` lists the attacks under which it is in Detect-ResNet50's sets.

Output format: :mod:`training.data`. **Resuming**: each (video, part) is written
atomically, its manifest part last; a rerun of the same command skips finished parts
and gives the same result as an uninterrupted run (attacks are seeded per video and
attack). Test attacks may be added to a finished dataset: only the new parts run.

    python -m training.build_dataset FFPP_ROOT data/xception --detector xception \\
        --detector-weights xception.safetensors --groups 30 --test-groups 5 --every 10
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from engine.cli.options import add_config_arguments, config_from_args
from engine.config import XAI_METHODS, Config
from engine.errors import VeritasError
from engine.frames import Frame, FrameBatch
from engine.pipeline import Pipeline
from engine.sources import open_source
from engine.stages.classify import FAKE
from engine.xai import map_to_uint8, prepare_map
from training.attacks import EPS_PAPER, attack_class, create_attack, list_attacks
from training.data import (
    ATTACKED_LABEL,
    PAIRINGS,
    REAL_LABEL,
    SCHEMA,
    Row,
    ShardReader,
    atomic_write_text,
    batches,
    pair_rows,
    read_jsonl,
    write_jsonl,
    write_shard,
)
from training.errors import BadOptionError, SettingsMismatchError
from training.videos import REAL, Video, discover, split_videos

log = logging.getLogger("training.build_dataset")

PAPER_TEST_ATTACKS = ("pgd", "apgd", "nes", "square")
"""The paper's test attacks; the default ``--test-attacks`` is those registered."""
DEFAULT_SHARD_SIZE = 256
DEFAULT_BATCH_SIZE = 32
CLEAN = "clean"
CONFIG_SECTIONS = ("models", "faces", "pipeline", "sources", "runtime")
"""The engine configuration sections that shape a dataset (recorded in dataset.json)."""
VOLATILE_KEYS = ("created", "device", "input", "attacks", "pairing")
"""dataset.json keys a resumed build may differ in (attacks are compared per attack; the
pairing is made anew from the parts' rows whenever the manifest is written)."""


# --- options ---------------------------------------------------------------------------------


@dataclass
class BuildOptions:
    input: Path
    out: Path
    config: Config = field(default_factory=Config)
    """The engine configuration: models and weights, face limits, box scale, threshold,
    IG steps, map quantile, frame sampling — the same file serving uses."""
    layout: str = "auto"
    compression: str = "c23"
    methods: Sequence[str] | None = None
    xai_methods: Sequence[str] = XAI_METHODS
    train_attacks: dict[str, dict[str, Any]] = field(default_factory=lambda: {"pgd": {}})
    test_attacks: dict[str, dict[str, Any]] | None = None
    """None: the paper's attacks that are registered."""
    eps: float = EPS_PAPER
    """L∞ budget given to every attack whose norm is L∞ (others keep their own)."""
    groups: int | None = None
    test_groups: int | None = None
    seed: int = 0
    max_frames: int = 0
    """Frames per video after sampling (0: all)."""
    shard_size: int = DEFAULT_SHARD_SIZE
    batch_size: int = DEFAULT_BATCH_SIZE
    pairing: str = "pairs"
    """``pairs``: the paper's real/attacked pairs; ``all``: every labelled face
    (:func:`training.data.pair_rows`)."""
    progress: bool = False


def attack_params(name: str, options: dict[str, Any], eps: float) -> dict[str, Any]:
    """The full parameters of attack ``name``: its defaults, ``eps`` (L∞ attacks) and options.

    Unknown options are refused with the list of those the attack takes.
    """
    cls = attack_class(name)
    sig = inspect.signature(cls.__init__)
    takes = [p for p in sig.parameters if p not in ("self", "model", "seed")]
    bad = sorted(set(options) - set(takes))
    if bad:
        raise BadOptionError(
            "--attack-option", f"{name}.{bad[0]}", f"one of {', '.join(takes)} for {name}"
        )
    params = {
        k: p.default
        for k, p in sig.parameters.items()
        if k in takes and p.default is not inspect.Parameter.empty
    }
    if cls.norm == "Linf" and "eps" in takes:
        params["eps"] = eps
    params.update(options)
    return {k: _jsonable(v) for k, v in params.items()}


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return v if v == v and abs(v) != float("inf") else str(v)
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return str(v)


def _attack_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if v in ("inf", "-inf", "nan") else v) for k, v in params.items()}


def stable_seed(*parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def file_digest(path: str) -> str:
    if not path:
        return ""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


# --- the engine's stages, applied to one video -----------------------------------------------


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] float images -> uint8 (round to nearest), on the CPU."""
    return torch.round(images.detach().float() * 255).clamp_(0, 255).to(torch.uint8).cpu()


@dataclass
class Faces:
    """One face per frame of a video that has one: the engine's crop, as stored."""

    frames: list[tuple[int, float]] = field(default_factory=list)
    """(frame index, pts) per face."""
    boxes: list[list[float]] = field(default_factory=list)
    crop_boxes: list[list[int]] = field(default_factory=list)
    crops: list[torch.Tensor] = field(default_factory=list)
    """uint8 (3, S, S) per face: what is stored."""
    floats: list[torch.Tensor] = field(default_factory=list)
    """float (3, S, S) per face in [0, 1], on the CPU: exactly what the engine classifies
    and explains online (the clean verdicts and maps are computed on these)."""
    frames_read: int = 0


def best_faces(frame_ids: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Index of each frame's best face: highest score, then largest area, then first."""
    best: dict[int, tuple[float, float, int]] = {}
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i, (fid, score, a) in enumerate(
        zip(frame_ids.tolist(), boxes[:, 4].tolist(), area.tolist(), strict=True)
    ):
        key = (score, a, -i)
        if fid not in best or key > best[fid]:
            best[fid] = key
    return torch.tensor(sorted(-k[2] for k in best.values()), dtype=torch.long)


def extract_faces(
    pipeline: Pipeline, video: Path, config: Config, max_frames: int, batch_size: int
) -> Faces:
    """Detect and crop the best face of each sampled frame of ``video`` (engine stages)."""
    faces = Faces()

    def run(frames: list[Frame]) -> None:
        batch = FrameBatch.from_frames(frames)
        frame_ids, boxes = pipeline.detect(batch)
        if len(boxes) == 0:
            return
        keep = best_faces(frame_ids, boxes)
        frame_ids, boxes = frame_ids[keep], boxes[keep]
        images = batch.images.to(pipeline.device)
        crop_boxes, crops = pipeline.crop(images, batch.sizes, frame_ids, boxes)
        for k, fid in enumerate(frame_ids.tolist()):
            faces.frames.append((batch.indices[fid], float(batch.pts[fid])))
            faces.boxes.append([round(v, 2) for v in boxes[k].tolist()])
            faces.crop_boxes.append(crop_boxes[k].tolist())
        faces.crops.extend(to_uint8(crops))
        faces.floats.extend(crops.detach().float().cpu())

    with open_source(str(video), config.sources) as source:
        pending: list[Frame] = []
        for frame in source:
            pending.append(frame)
            faces.frames_read += 1
            if len(pending) == batch_size:
                run(pending)
                pending = []
            if max_frames and faces.frames_read >= max_frames:
                break
        if pending:
            run(pending)
    return faces


def as_images(crops: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Float [0, 1] images on ``device`` from uint8 or float crops."""
    crops = crops.to(device)
    return crops.float() / 255 if crops.dtype == torch.uint8 else crops.float()


@torch.no_grad()
def p_fake_of(pipeline: Pipeline, crops: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The detector's p_fake (``Pipeline.classify``) for uint8 or float crops."""
    out = [
        pipeline.classify(as_images(crops[s], pipeline.device)).float().cpu()
        for s in batches(len(crops), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0)


def attributions_of(pipeline: Pipeline, crops: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Attributions of the faces ``which`` (indices) of a batch of ``crops``, taken by
    the pipeline's own classify + XAI stages, exactly as ``Pipeline.analyze`` takes them."""
    _, _, attributions = pipeline.classify_and_explain(crops, explain=which)
    assert attributions is not None, "explaining a non-empty selection gives attributions"
    return attributions


def xai_maps(
    pipeline: Pipeline,
    crops: torch.Tensor,
    which: torch.Tensor,
    methods: Sequence[str],
    batch_size: int,
) -> dict[str, torch.Tensor]:
    """uint8 maps ``(n, 3, M, M)`` per method for the faces ``which`` (bool mask) of
    ``crops`` (uint8 or float), zeros for the others.

    A map is made as the engine makes it online — the attribution of the detector's
    "real" logit (:func:`attributions_of`), then ``engine.xai.prepare_map`` at
    Detect-ResNet50's input size with the configured quantile — and stored with
    ``map_to_uint8``.
    """
    size = pipeline.adversarial.cfg.input_size
    out = {m: torch.zeros(len(crops), 3, size, size, dtype=torch.uint8) for m in methods}
    for method in methods:
        view = pipeline.with_settings(xai_method=method)
        for s in batches(len(crops), batch_size):
            rows = which[s].nonzero().flatten()
            if len(rows) == 0:
                continue
            view.runtime.begin_step()
            a = attributions_of(view, as_images(crops[s], pipeline.device), rows)
            maps = prepare_map(a, method, size, quantile=view.settings.map_quantile)
            out[method][s.start + rows] = map_to_uint8(maps).cpu()
    return out


# --- the builder ------------------------------------------------------------------------------


class DatasetBuilder:
    """Runs a build (or resumes one) into ``options.out``; see the module docstring."""

    def __init__(self, options: BuildOptions) -> None:
        self.o = options
        o = options
        if o.shard_size < 1 or o.batch_size < 1:
            raise BadOptionError("--shard-size/--batch-size", (o.shard_size, o.batch_size), ">= 1")
        if o.pairing not in PAIRINGS:
            raise BadOptionError("--pairing", o.pairing, " or ".join(PAIRINGS))
        unknown = [m for m in o.xai_methods if m not in XAI_METHODS]
        if unknown or not o.xai_methods:
            raise BadOptionError("--xai", ",".join(unknown), " or ".join(XAI_METHODS))
        test_attacks = o.test_attacks
        if test_attacks is None:
            test_attacks = {a: {} for a in PAPER_TEST_ATTACKS if a in list_attacks()}
        self.attacks = {
            "train": {a: attack_params(a, opts, o.eps) for a, opts in o.train_attacks.items()},
            "test": {a: attack_params(a, opts, o.eps) for a, opts in test_attacks.items()},
        }
        self.videos = discover(o.input, o.layout, o.compression, o.methods)
        self.splits = split_videos(self.videos, o.groups, o.test_groups, o.seed)
        self.selected = sorted(
            (v for v in self.videos if v.key in self.splits),
            key=lambda v: (self.splits[v.key] != "train", v.key),
        )
        self.pipeline = Pipeline.from_config(o.config)
        self.threshold = o.config.pipeline.fake_threshold
        self.detector_name = o.config.models.detector
        self.reader = ShardReader(o.out)

    # --- settings ----------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        o = self.o
        config = {k: v for k, v in o.config.to_dict().items() if k in CONFIG_SECTIONS}
        config["pipeline"].pop("device", None)
        settings = {
            "schema": SCHEMA,
            "format": "veritas-dataset",
            "input": str(o.input),
            "layout": o.layout,
            "compression": o.compression,
            "methods": list(o.methods) if o.methods else None,
            "config": config,
            "detector_weights_sha256": file_digest(o.config.models.detector_weights),
            "device": str(self.pipeline.device),
            "xai_methods": list(o.xai_methods),
            "crop_size": self.pipeline.detector.cfg.input_size,
            "map_size": self.pipeline.adversarial.cfg.input_size,
            "adversarial": o.config.models.adversarial,
            "attacks": self.attacks,
            "eps": o.eps,
            "seed": o.seed,
            "groups": o.groups,
            "test_groups": o.test_groups,
            "max_frames": o.max_frames,
            "shard_size": o.shard_size,
            "batch_size": o.batch_size,
            "pairing": o.pairing,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        return json.loads(json.dumps(settings))  # as it reads back (tuples become lists)

    def _check_resume(self, new: dict[str, Any]) -> None:
        path = self.o.out / "dataset.json"
        if not path.is_file():
            return
        old = json.loads(path.read_text(encoding="utf-8"))
        for key in sorted(set(old) | set(new)):
            if key not in VOLATILE_KEYS and old.get(key) != new.get(key):
                raise SettingsMismatchError(str(self.o.out), key, old.get(key), new.get(key))
        for split in ("train", "test"):
            for name, params in new["attacks"][split].items():
                before = old["attacks"][split].get(name)
                if before is not None and before != params:
                    raise SettingsMismatchError(
                        str(self.o.out), f"attacks.{split}.{name}", before, params
                    )
        if old.get("device") != new.get("device"):
            log.warning("resuming on %s a build started on %s", new["device"], old["device"])
        log.info("resuming the build in %s", self.o.out)

    # --- run -----------------------------------------------------------------------------------

    def parts(self) -> list[tuple[Video, str]]:
        todo = []
        for v in self.selected:
            todo.append((v, CLEAN))
            if v.label != REAL:
                todo += [(v, a) for a in self.attacks[self.splits[v.key]]]
        return todo

    def part_dir(self, video: Video) -> Path:
        return Path("parts") / self.splits[video.key] / video.slug

    def run(self) -> dict[str, Any]:
        o = self.o
        settings = self.settings()
        self._check_resume(settings)
        o.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(o.out / "dataset.json", json.dumps(settings, indent=2) + "\n")
        atomic_write_text(
            o.out / "splits.json", json.dumps(self.splits, indent=1, sort_keys=True) + "\n"
        )
        parts = self.parts()
        done = [self._done(v, p) for v, p in parts]
        log.info(
            "%d videos (%d test), %d parts, %d already done",
            len(self.selected),
            sum(1 for s in self.splits.values() if s == "test"),
            len(parts),
            sum(done),
        )
        from tqdm import tqdm

        bar = tqdm(
            total=len(parts),
            initial=sum(done),
            unit="part",
            desc="building",
            disable=not o.progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        try:
            for (video, part), finished in zip(parts, done, strict=True):
                if finished:
                    continue
                bar.set_postfix_str(f"{video.key} {part}", refresh=False)
                if part == CLEAN:
                    self._clean_part(video)
                else:
                    self._attack_part(video, part)
                bar.update(1)
        finally:
            bar.close()
        rows = [r for v, p in parts for r in read_jsonl(o.out / self._part_manifest(v, p))]
        pair_rows(rows, o.pairing, o.seed)
        write_jsonl(o.out / "manifest.jsonl", rows)
        return summarize(rows)

    def _part_manifest(self, video: Video, part: str) -> Path:
        return self.part_dir(video) / f"{part}.jsonl"

    def _done(self, video: Video, part: str) -> bool:
        return (self.o.out / self._part_manifest(video, part)).is_file()

    def _base_row(self, video: Video) -> Row:
        return {
            "split": self.splits[video.key],
            "video": video.key,
            "source": video.path.relative_to(self.o.input).as_posix(),
            "group": video.group,
            "video_label": "real" if video.label == REAL else "fake",
            "method": video.method,
            "detector": self.detector_name,
        }

    def _clean_part(self, video: Video) -> None:
        o = self.o
        faces = extract_faces(self.pipeline, video.path, o.config, o.max_frames, o.batch_size)
        if not faces.crops:
            log.warning("%s: no face in %d frames", video.key, faces.frames_read)
            self._write_part(video, CLEAN, [], torch.zeros(0, dtype=torch.uint8), {})
            return
        crops, floats = torch.stack(faces.crops), torch.stack(faces.floats)
        p_fake = p_fake_of(self.pipeline, floats, o.batch_size)
        called_real = p_fake < self.threshold
        is_real = video.label == REAL
        rows = []
        for i, (frame, pts) in enumerate(faces.frames):
            real_face = bool(called_real[i])
            rows.append(
                {
                    **self._base_row(video),
                    "id": f"{video.key}#{frame}:{CLEAN}",
                    "frame": frame,
                    "pts": round(pts, 6),
                    "box": faces.boxes[i],
                    "crop_box": faces.crop_boxes[i],
                    "kind": "real" if is_real else "fake",
                    "attack": None,
                    "attack_params": None,
                    "success": None,
                    "attack_success": None,
                    "queries": None,
                    "linf": 0.0,
                    "p_fake": round(float(p_fake[i]), 6),
                    "called": "real" if real_face else "fake",
                    "label": REAL_LABEL if is_real and real_face else None,
                    "maps": list(o.xai_methods) if is_real and real_face else [],
                }
            )
        with_maps = torch.tensor([bool(r["maps"]) for r in rows])
        self._write_part(video, CLEAN, rows, crops, self._maps(floats, with_maps))
        log.info(
            "%s: %d frames, %d faces, %d called real",
            video.key,
            faces.frames_read,
            len(rows),
            int(called_real.sum()),
        )

    def _attack_part(self, video: Video, name: str) -> None:
        o = self.o
        clean = read_jsonl(o.out / self._part_manifest(video, CLEAN))
        targets = [r for r in clean if r["called"] == "fake"]
        params = self.attacks[self.splits[video.key]][name]
        if not targets:
            self._write_part(video, name, [], torch.zeros(0, dtype=torch.uint8), {})
            return
        clean_crops = self.reader.read(targets, "crops")
        attack = create_attack(
            name,
            self.pipeline.detector,
            seed=stable_seed(o.seed, video.key, name),
            **_attack_kwargs(params),
        )
        adv_parts, success, queries = [], [], []
        for s in batches(len(clean_crops), o.batch_size):
            x = clean_crops[s].to(self.pipeline.device).float() / 255
            labels = torch.full((len(x),), FAKE, dtype=torch.long, device=x.device)
            result = attack.run(x, labels)
            adv_parts.append(to_uint8(result.adv))
            success.append(result.success.cpu())
            queries.append(result.queries.cpu())
        adv = torch.cat(adv_parts)
        attack_success, spent = torch.cat(success), torch.cat(queries)
        p_fake = p_fake_of(self.pipeline, adv, o.batch_size)
        linf = (adv.int() - clean_crops.int()).abs().flatten(1).amax(1).float() / 255
        rows = []
        for i, t in enumerate(targets):
            called_real = bool(p_fake[i] < self.threshold)
            rows.append(
                {
                    **t,
                    "id": f"{video.key}#{t['frame']}:{name}",
                    "kind": "attacked",
                    "attack": name,
                    "attack_params": params,
                    "success": called_real,
                    "attack_success": bool(attack_success[i]),
                    "queries": int(spent[i]),
                    "linf": round(float(linf[i]), 6),
                    "p_fake": round(float(p_fake[i]), 6),
                    "called": "real" if called_real else "fake",
                    "label": ATTACKED_LABEL if called_real else None,
                    "maps": list(o.xai_methods) if called_real else [],
                }
            )
        with_maps = torch.tensor([bool(r["maps"]) for r in rows])
        self._write_part(video, name, rows, adv, self._maps(adv, with_maps))
        log.info(
            "%s: %s fooled the detector on %d of %d", video.key, name, sum(with_maps), len(rows)
        )

    def _maps(self, crops: torch.Tensor, which: torch.Tensor) -> dict[str, torch.Tensor]:
        return xai_maps(self.pipeline, crops, which, self.o.xai_methods, self.o.batch_size)

    def _write_part(
        self,
        video: Video,
        part: str,
        rows: list[Row],
        crops: torch.Tensor,
        maps: dict[str, torch.Tensor],
    ) -> None:
        folder = self.part_dir(video)
        for k, s in enumerate(batches(len(rows), self.o.shard_size)):
            shard = folder / f"{part}-{k:05d}.safetensors"
            write_shard(
                self.o.out / shard,
                crops[s],
                {m: t[s] for m, t in maps.items()},
                {"video": video.key, "part": part},
            )
            for j, r in enumerate(rows[s]):
                r["shard"] = shard.as_posix()
                r["index"] = j
        write_jsonl(self.o.out / self._part_manifest(video, part), rows)


def summarize(rows: Sequence[Row]) -> dict[str, Any]:
    """Counts per split: faces per kind, Detect-ResNet50 samples per class, attack success,
    and the real/attacked pairs per attack."""
    out: dict[str, Any] = {}
    for split in ("train", "test"):
        sel = [r for r in rows if r["split"] == split]
        attacks: dict[str, list[int]] = {}
        for r in sel:
            if r["kind"] == "attacked":
                hit = attacks.setdefault(r["attack"], [0, 0])
                hit[0] += int(r["success"])
                hit[1] += 1
        out[split] = {
            "faces": dict(Counter(r["kind"] for r in sel)),
            "real_called_real": sum(1 for r in sel if r["label"] == REAL_LABEL),
            "attacked_called_real": sum(1 for r in sel if r["label"] == ATTACKED_LABEL),
            "attack_success": {a: f"{h}/{n}" for a, (h, n) in sorted(attacks.items())},
            "pairs": {
                a: sum(
                    1
                    for r in sel
                    if r["label"] == ATTACKED_LABEL and r["attack"] == a and r.get("paired")
                )
                for a in sorted(attacks)
            },
        }
    return out


# --- command line ------------------------------------------------------------------------------


def parse_eps(text: str) -> float:
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError) as e:
        raise BadOptionError("--eps", text, "a number or fraction such as 16/255") from e


def parse_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_attack_options(items: Sequence[str], known: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["pgd.steps=100", ...]`` -> ``{"pgd": {"steps": 100}}`` (values parsed as JSON)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, _, rest = item.partition(".")
        key, eq, value = rest.partition("=")
        if not (name and key and eq):
            raise BadOptionError("--attack-option", item, "ATTACK.KEY=VALUE, e.g. pgd.steps=100")
        if name not in known:
            raise BadOptionError(
                "--attack-option", item, f"an option of a chosen attack ({', '.join(known)})"
            )
        try:
            parsed: Any = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(name, {})[key] = parsed
    return out


def check_attack_names(names: Sequence[str], option: str) -> None:
    known = list_attacks()
    for n in names:
        if n not in known:
            raise BadOptionError(option, n, f"registered attacks: {', '.join(known)}")


MODEL_FLAGS = (
    "--detector",
    "--detector-weights",
    "--face-detector",
    "--face-detector-weights",
    "--adversarial",
    "--device",
)
"""The engine's shortcut flags (``engine.cli.options``) the builder takes, beside
``--config``/``--set``, ``--fps`` and ``--every``."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.build_dataset",
        description="Build Detect-ResNet50 train/test sets: faces, attacks, XAI maps, shards. "
        "Rerun the same command to resume an interrupted build.",
    )
    p.add_argument(
        "input", help="FF++ root, or a folder with real/ and fake/ (videos or image folders)"
    )
    p.add_argument("out", help="output dataset folder (created; resumed if it exists)")
    g = p.add_argument_group("input")
    g.add_argument("--layout", default="auto", choices=["auto", "ffpp", "plain"])
    g.add_argument("--compression", default="c23", help="FF++ compression: raw, c23, c40")
    g.add_argument("--methods", type=parse_list, help="FF++ manipulations (default: all five)")
    g.add_argument("--groups", type=int, help="use this many video groups (default: all)")
    g.add_argument("--test-groups", type=int, help="groups in the test split (default: 1 in 6)")
    g.add_argument(
        "--max-frames", type=int, default=0, help="frames per video after sampling (0: all)"
    )
    add_config_arguments(g, ("--fps", "--every"), files=False)
    g = p.add_argument_group("models (the engine's configuration)")
    add_config_arguments(g, MODEL_FLAGS)
    g = p.add_argument_group("attacks and maps")
    g.add_argument("--xai", type=parse_list, default=list(XAI_METHODS), help="XAI methods")
    g.add_argument("--train-attacks", type=parse_list, default=["pgd"])
    g.add_argument(
        "--test-attacks",
        type=parse_list,
        help=f"default: those of {','.join(PAPER_TEST_ATTACKS)} registered",
    )
    g.add_argument("--attack-option", action="append", default=[], metavar="ATTACK.KEY=VALUE")
    g.add_argument("--eps", type=parse_eps, default=EPS_PAPER, help="L∞ budget (16/255)")
    g.add_argument(
        "--pairing",
        default="pairs",
        choices=PAIRINGS,
        help="pairs: the paper's real/attacked pairs, one fooled face per real face per "
        "video group and attack (balanced sets); all: every labelled face",
    )
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE)
    g.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    g.add_argument("--no-progress", action="store_true")
    g.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    return p


def options_from_args(args: argparse.Namespace) -> BuildOptions:
    config = config_from_args(args, (*MODEL_FLAGS, "--fps", "--every"))
    check_attack_names(args.train_attacks, "--train-attacks")
    test = args.test_attacks
    if test is not None:
        check_attack_names(test, "--test-attacks")
    chosen = sorted(set(args.train_attacks) | set(test or list_attacks()))
    options = parse_attack_options(args.attack_option, chosen)
    return BuildOptions(
        input=Path(args.input),
        out=Path(args.out),
        config=config,
        layout=args.layout,
        compression=args.compression,
        methods=args.methods,
        xai_methods=args.xai,
        train_attacks={a: options.get(a, {}) for a in args.train_attacks},
        test_attacks=None if test is None else {a: options.get(a, {}) for a in test},
        eps=args.eps,
        groups=args.groups,
        test_groups=args.test_groups,
        seed=args.seed,
        max_frames=args.max_frames,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        pairing=args.pairing,
        progress=not args.no_progress and sys.stderr.isatty(),
    )


def setup_logging(prog: str, quiet: bool = False) -> None:
    """Log the ``training`` modules to stderr (INFO, or WARNING with ``quiet``): the one
    log set-up of every command (:func:`engine.logs.setup_logging`)."""
    from engine.logs import setup_logging as setup

    setup("plain", logging.WARNING if quiet else logging.INFO, prog=prog, logger="training")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging("build_dataset", args.quiet)
    try:
        options = options_from_args(args)
        started = time.perf_counter()
        summary = DatasetBuilder(options).run()
    except VeritasError as e:
        print(f"build_dataset: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "build_dataset: interrupted; finished parts are kept, run the same command to resume",
            file=sys.stderr,
        )
        return 130
    print(f"dataset {options.out} built in {time.perf_counter() - started:.1f} s")
    for split, s in summary.items():
        print(
            f"  {split}: faces {s['faces']}; Detect-ResNet50 samples: "
            f"{s['real_called_real']} real, {s['attacked_called_real']} attacked; "
            f"attack success {s['attack_success']}; real/attacked pairs {s['pairs']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
