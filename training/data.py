"""Detect-ResNet50 data sets on disk: safetensors shards and a JSONL manifest.

A dataset folder (written by ``python -m training.build_dataset``)::

    dataset.json                 the settings it was built with (see build_dataset)
    splits.json                  {video key: "train" | "test"}
    parts/<split>/<video>/<part>-00000.safetensors   samples of one video and one part
    parts/<split>/<video>/<part>.jsonl               the part's manifest rows; written
                                                     last, so it marks the part done
    manifest.jsonl               every row, in build order (written when the build ends)

A *part* is ``clean`` (the detected faces of a video) or an attack name (the fake
faces of a video, attacked). Shards hold at most ``shard_size`` samples of one part:

``crops``          uint8 (n, 3, S, S): the face crop at the deepfake detector's input
                   size (``engine.faces`` crop, quantized to 8 bits)
``maps.<method>``  uint8 (n, 3, M, M): ``map_to_uint8(prepare_map(...))`` at
                   Detect-ResNet50's input size, for each XAI method; zeros in rows
                   whose ``maps`` list is empty (faces the detector calls fake)

Manifest rows (one JSON object per sample, :data:`ROW_KEYS`): ``id``, ``shard``,
``index`` (row in the shard), ``split``, ``video`` (key), ``source`` (the video file or
image folder, relative to the input folder), ``group``, ``video_label``
(``real``/``fake``), ``method`` (FF++ manipulation), ``frame``, ``pts``, ``box``
(x1, y1, x2, y2, score), ``crop_box``, ``kind`` (``real``, ``fake`` or ``attacked``),
``attack`` and ``attack_params`` (null for clean rows), ``success`` (the stored attacked
crop is called real), ``attack_success`` (the attack's own verdict, before 8-bit
quantization), ``queries``, ``linf`` (of the stored perturbation), ``p_fake`` (the
detector on the stored crop), ``called`` (``real``/``fake`` at the detector's
threshold), ``label`` (Detect-ResNet50's target: 0 = real face called real, 1 =
successfully attacked face; null for rows it never sees), ``maps`` (XAI methods stored
for this row), ``detector``, ``paired`` (the attacks under which this labelled row is in
the paper's real/attacked pairs, :func:`pair_rows`; empty for rows outside them).

Everything is read without pickle: safetensors and JSON only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from engine.faces import resize_images
from engine.xai import uint8_to_map
from training.errors import DatasetNotFoundError, EmptyDatasetError

SCHEMA = 1
SHARD_FORMAT = "veritas-dataset-shard"
ROW_KEYS = (
    "id",
    "shard",
    "index",
    "split",
    "video",
    "source",
    "group",
    "video_label",
    "method",
    "frame",
    "pts",
    "box",
    "crop_box",
    "kind",
    "attack",
    "attack_params",
    "success",
    "attack_success",
    "queries",
    "linf",
    "p_fake",
    "called",
    "label",
    "maps",
    "detector",
    "paired",
)
REAL_LABEL, ATTACKED_LABEL = 0, 1
PAIRINGS = ("pairs", "all")
"""``pairs``: the paper's real/attacked pairs (one attacked face per real face, per video
group and attack); ``all``: every labelled row (≈5 attacked per real face on FF++)."""

Row = dict[str, Any]


# --- writing ------------------------------------------------------------------------------


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` so that ``path`` is either absent or complete, even after a kill."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def write_jsonl(path: Path, rows: Iterable[Row]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[Row]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_shard(
    path: Path, crops: torch.Tensor, maps: dict[str, torch.Tensor], metadata: dict[str, str]
) -> None:
    """One shard: ``crops`` and ``maps.<method>`` (uint8), written atomically."""
    tensors = {"crops": crops.contiguous()}
    tensors.update({f"maps.{m}": t.contiguous() for m, t in maps.items()})
    for name, t in tensors.items():
        if t.dtype != torch.uint8 or t.dim() != 4 or len(t) != len(crops):
            raise ValueError(f"shard tensor {name}: {t.dtype} {tuple(t.shape)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": SHARD_FORMAT, **metadata})
    tmp.replace(path)


# --- reading ------------------------------------------------------------------------------


class ShardReader:
    """Rows of shards, read lazily (safetensors memory-maps; only asked rows are copied)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._open: dict[str, Any] = {}

    def _file(self, shard: str) -> Any:
        if shard not in self._open:
            path = self.root / shard
            if not path.is_file():
                raise DatasetNotFoundError(str(self.root), f"shard {shard} is missing")
            self._open[shard] = safe_open(str(path), framework="pt")
        return self._open[shard]

    def read(self, rows: Sequence[Row], tensor: str) -> torch.Tensor:
        """``tensor`` (``crops`` or ``maps.<method>``) of ``rows``, stacked in their order."""
        if not rows:
            raise EmptyDatasetError("rows to read", "select a non-empty set of samples")
        out: list[torch.Tensor | None] = [None] * len(rows)
        by_shard: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            by_shard.setdefault(r["shard"], []).append(i)
        for shard, positions in by_shard.items():
            f = self._file(shard)
            if tensor not in f.keys():
                raise DatasetNotFoundError(str(self.root), f"shard {shard} has no {tensor}")
            sl = f.get_slice(tensor)
            for i, (lo, hi) in _runs(positions, [rows[i]["index"] for i in positions]):
                block = sl[lo:hi]
                for j, pos in enumerate(i):
                    out[pos] = block[j]
        return torch.stack(out)  # type: ignore[arg-type]


def _runs(positions: list[int], indices: list[int]) -> Iterator[tuple[list[int], tuple[int, int]]]:
    """Group row ``indices`` into runs of consecutive shard rows: ``(positions, (lo, hi))``."""
    order = sorted(range(len(indices)), key=lambda j: indices[j])
    run: list[int] = []
    for j in order:
        if run and indices[j] != indices[run[-1]] + 1:
            yield [positions[k] for k in run], (indices[run[0]], indices[run[-1]] + 1)
            run = []
        run.append(j)
    if run:
        yield [positions[k] for k in run], (indices[run[0]], indices[run[-1]] + 1)


class Dataset:
    """A built dataset: its settings (``info``), manifest ``rows`` and the shard tensors."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        info = self.root / "dataset.json"
        manifest = self.root / "manifest.jsonl"
        if not info.is_file():
            raise DatasetNotFoundError(str(self.root))
        if not manifest.is_file():
            raise DatasetNotFoundError(
                str(self.root), "has no manifest.jsonl (the build did not finish; run it again)"
            )
        self.info: dict[str, Any] = json.loads(info.read_text(encoding="utf-8"))
        self.rows = read_jsonl(manifest)
        self.reader = ShardReader(self.root)

    @property
    def detector(self) -> str:
        return str(self.info["config"]["models"]["detector"])

    @property
    def xai_methods(self) -> list[str]:
        return list(self.info["xai_methods"])

    @property
    def map_size(self) -> int:
        return int(self.info["map_size"])

    def select(self, **where: object) -> list[Row]:
        """Rows whose fields equal ``where`` (a callable value is used as a predicate)."""

        def match(r: Row) -> bool:
            for k, v in where.items():
                if callable(v):
                    if not v(r[k]):
                        return False
                elif r[k] != v:
                    return False
            return True

        return [r for r in self.rows if match(r)]

    def crops(self, rows: Sequence[Row]) -> torch.Tensor:
        return self.reader.read(rows, "crops")

    def maps(self, rows: Sequence[Row], method: str) -> torch.Tensor:
        missing = [r["id"] for r in rows if method not in r["maps"]]
        if missing:
            raise EmptyDatasetError(
                f"{method} maps for {missing[:3]}",
                f"this dataset has maps for {', '.join(self.xai_methods)} of faces called real",
            )
        return self.reader.read(rows, f"maps.{method}")


# --- the paper's real/attacked pairs --------------------------------------------------------


def pair_rows(rows: Sequence[Row], pairing: str, seed: int) -> None:
    """Set each row's ``paired``: the attacks under which it is in Detect-ResNet50's sets.

    ``pairs`` (Pinhasov et al. 2024, section 3.5: "pairs of real/attacked images"): in each
    video group (the split's unit, so a pair never straddles train and validation) and for
    each attack, ``n = min(real, attacked)`` real faces called real are paired with ``n``
    faces that attack fooled. When a group has more fooled faces than real ones (FF++:
    five manipulated videos per source video), they are taken in turn from each of the
    group's fake videos (so every manipulation is represented), in a seeded order within
    a video; when it has fewer, a seeded choice of the real faces is paired. Each set
    (real + one attack) is then balanced, and plain accuracy is the paper's accuracy.
    A real face may pair under several attacks (one partner per attack).

    ``all``: every labelled row is in (real faces under every attack of their split).
    """
    if pairing not in PAIRINGS:
        from training.errors import BadOptionError

        raise BadOptionError("--pairing", pairing, " or ".join(PAIRINGS))
    by_group: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        r["paired"] = []
        if r.get("label") is not None:
            by_group.setdefault((r["split"], r["group"]), []).append(r)
    for (split, group), members in sorted(by_group.items()):
        real = [r for r in members if r["label"] == REAL_LABEL]
        attacks = sorted({r["attack"] for r in members if r["label"] == ATTACKED_LABEL})
        for attack in attacks:
            fooled = [r for r in members if r["label"] == ATTACKED_LABEL and r["attack"] == attack]
            if pairing == "all":
                chosen_real, chosen_fooled = real, fooled
            else:
                n = min(len(real), len(fooled))
                chosen_real = _seeded_pick(real, n, seed, split, group, attack, "real")
                chosen_fooled = _round_robin(fooled, n, seed, split, group, attack)
            for r in [*chosen_real, *chosen_fooled]:
                r["paired"].append(attack)


def _seeded_key(seed: int, *parts: object) -> Callable[[Row], str]:
    import hashlib

    def key(r: Row) -> str:
        text = ":".join(str(p) for p in (seed, *parts, r["id"]))
        return hashlib.sha256(text.encode()).hexdigest()

    return key


def _seeded_pick(rows: list[Row], n: int, seed: int, *parts: object) -> list[Row]:
    return sorted(rows, key=_seeded_key(seed, *parts))[:n]


def _round_robin(rows: list[Row], n: int, seed: int, *parts: object) -> list[Row]:
    """``n`` rows taken in turn from each video (videos in name order), seeded within one."""
    per_video: dict[str, list[Row]] = {}
    for r in sorted(rows, key=_seeded_key(seed, *parts)):
        per_video.setdefault(r["video"], []).append(r)
    queues = [per_video[v] for v in sorted(per_video)]
    out: list[Row] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def in_set(row: Row, attack: str) -> bool:
    """Whether a labelled row belongs to the set of real faces + faces ``attack`` fooled
    (datasets built before pairing was recorded hold every labelled row)."""
    if row.get("label") is None:
        return False
    if row["label"] == ATTACKED_LABEL and row["attack"] != attack:
        return False
    paired = row.get("paired")
    return paired is None or attack in paired


# --- Detect-ResNet50 inputs ---------------------------------------------------------------


def adversarial_inputs(
    crops: torch.Tensor, maps: torch.Tensor | None, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Detect-ResNet50's ``(crops, maps)`` from stored uint8 tensors.

    The crop goes through the engine's own resize to ``size`` (what ``Pipeline.check``
    does with the detector-size crop); maps are decoded with ``uint8_to_map``.
    ``maps=None`` gives black maps (zeros): the PGD-B test and the no-maps model.
    """
    x = resize_images(crops.float() / 255.0, size)
    m = torch.zeros_like(x) if maps is None else uint8_to_map(maps).to(x.device)
    return x, m


def batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@torch.no_grad()
def predict_attacked(
    model: nn.Module,
    crops: torch.Tensor,
    maps: torch.Tensor | None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """p_attacked (softmax of logit 1) for stored uint8 crops and maps (None: zeros)."""
    model.eval()
    size = model.cfg.input_size
    out = []
    for s in batches(len(crops), batch_size):
        x, m = adversarial_inputs(crops[s].to(device), None if maps is None else maps[s], size)
        out.append(model(x, m.to(device)).float().softmax(dim=1)[:, 1].cpu())
        if progress:
            progress(s.stop - s.start)
    return torch.cat(out) if out else torch.zeros(0)
