"""Finetune Detect-ResNet50 on a built dataset: real faces (0) vs attacked faces (1).

Pinhasov et al. 2024, section 4: cross-entropy, Adam (lr 1e-3, betas 0.9/0.999, eps
1e-8), minibatch 16, decision threshold 0.5, in two configurations (``--mode``):

``full``  the ResNet50 backbone and the head are trained (BatchNorm: ``--bn``, below);
``head``  the backbone is frozen (no gradients, BatchNorm statistics fixed: eval mode)
          and only the head ``4096 → 512 → ReLU → 2`` is trained. The frozen backbone's
          embeddings of every sample are computed once and the head is trained on
          them — the same computation as running the frozen backbone at every step,
          without repeating it.

**BatchNorm** (``--bn``, full mode). The backbone embeds a crop and its XAI map, two
very different kinds of image, with the same BatchNorm layers. ``joint`` (the default)
normalizes crops and maps in one pass over the concatenated batch, in training as in
evaluation: the statistics a layer trains with (the mixed batch's) are the ones its
running averages hold, so the evaluated model is the trained one. ``frozen`` keeps the
starting weights' statistics (BatchNorm in eval mode; its scale and shift still train):
sound from a pretrained backbone, not from ``--init random``. ``separate`` is the
earlier rule: crops and maps in separate train-mode passes, each normalized by its own
batch statistics while the running averages mix both, so evaluation normalizes each
modality with statistics it was not trained with. The record's ``bn_shift`` measures
that gap: the relative distance between the train-mode and eval-mode embeddings of a
validation batch, for crops and maps (README gives the proxy run's figures).

``--no-maps`` trains the no-maps model: the same model with every XAI map rendered
black (zeros) at training and test time, so it sees the face crop only. (The paper's
PGD-B is not this model: it is a model trained *with* maps, tested with them blacked
out, which ``training.evaluate`` does for every XAI model.)

**Data.** The training rows of the dataset (train split, ``label`` 0 or 1, attacks of
the dataset's train attacks — PGD in the paper). A validation split is held out **by
video group** (``--val-fraction`` of the groups, seeded), so no face of a validation
video is trained on.

**Checkpoint choice.** After every epoch (and every ``--eval-every`` steps) the model is
scored on the validation split; the kept checkpoint has the best *mean validation
metric*: for each train attack A, the balanced accuracy (mean of the per-class
accuracies at threshold 0.5) on the validation real faces and the faces attacked by
A, averaged over the attacks (with PGD only: the balanced accuracy). Ties go to the
lower validation loss, then to the earlier checkpoint. Training stops after
``--epochs``, ``--max-steps`` or ``--patience`` epochs without improvement.

**Precision.** On CUDA, ``--amp auto`` trains under autocast in bfloat16 (float16 with a
gradient scaler where bfloat16 is unsupported); on CPU it trains in float32 (``--amp
bf16`` forces CPU autocast).

**Output.** ``OUT/<name>.safetensors`` in the engine's weights format (``arch`` =
Detect-ResNet50's registry name, ``source`` = ``veritas``, ``complete``), which
``veritas run --adversarial-weights`` loads directly, and ``OUT/<name>.json``: the
options, the data counts, the validation history and the chosen checkpoint.

``--init`` is required: the paper starts from an ImageNet-pretrained ResNet50 (a
converted backbone file); ``--init random`` starts from the seeded random
initialization, and says so in the record and the evaluation tables.

    python -m training.finetune data/xception models/xception --init resnet50.safetensors
    python -m training.finetune data/xception models/xception --init resnet50.safetensors \
        --xai guided_backprop --mode head
    python -m training.finetune data/xception models/xception --init random --no-maps
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.device import resolve_device
from engine.errors import VeritasError
from engine.models import create_model, model_cfg
from engine.models.weights import load_weights, save_weights
from training.data import (
    ATTACKED_LABEL,
    REAL_LABEL,
    Dataset,
    Row,
    adversarial_inputs,
    atomic_write_text,
    batches,
    in_set,
)
from training.errors import BadOptionError, EmptyDatasetError
from training.metrics import balanced_accuracy
from training.videos import seeded_order

log = logging.getLogger("training.finetune")

CONFIGS = ("full", "head")
AMP_MODES = ("auto", "off", "bf16", "fp16")
BN_RULES = ("joint", "frozen", "separate")
"""BatchNorm in full finetuning (module docstring, "BatchNorm")."""
NO_MAPS = "no-maps"
"""The name of the model trained and tested with black maps, in file names and tables."""
RANDOM_INIT = "random"
"""``--init random``: start from the seeded random initialization (not the paper's)."""
THRESHOLD = 0.5
"""The paper's decision threshold on p_attacked."""


@dataclass
class FinetuneOptions:
    dataset: Path
    out: Path
    xai: str | None = "guided_backprop"
    """XAI method whose maps are used; None: the no-maps model (maps rendered black)."""
    config: str = "full"
    arch: str | None = None
    """Detect-ResNet50 architecture (default: the one the dataset's maps were made for)."""
    init: str | None = None
    """Required. Weights to start from: a converted ImageNet ``resnet50`` backbone
    (partial; the paper's start) or a complete Detect-ResNet50 file, or ``random`` for
    the registry's seeded random initialization (recorded, and named in the tables)."""
    bn: str = "joint"
    """BatchNorm rule in full mode: joint | frozen | separate (module docstring)."""
    epochs: int = 100
    """The paper's "100 iterations", read as epochs (``max_steps`` caps steps instead)."""
    max_steps: int = 0
    patience: int = 10
    eval_every: int = 0
    batch_size: int = 16
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    eval_batch_size: int = 64
    name: str | None = None
    progress: bool = False

    @property
    def maps_name(self) -> str:
        return self.xai or NO_MAPS


@dataclass
class Checkpoint:
    epoch: float
    step: int
    val_metric: float
    val_loss: float
    per_attack: dict[str, float] = field(default_factory=dict)

    def better_than(self, other: Checkpoint | None) -> bool:
        if other is None:
            return True
        return (self.val_metric, -self.val_loss) > (other.val_metric, -other.val_loss)


def default_name(arch: str, maps: str, config: str) -> str:
    return f"{arch}.{maps}.{config}"


# --- metrics ----------------------------------------------------------------------------------


def mean_validation_metric(
    p_attacked: torch.Tensor, rows: Sequence[Row], attacks: Sequence[str]
) -> tuple[float, dict[str, float]]:
    """Mean over ``attacks`` of the balanced accuracy on real rows + rows of that attack."""
    labels = np.array([r["label"] for r in rows])
    predicted = p_attacked.numpy() >= THRESHOLD
    real = labels == REAL_LABEL
    per = {}
    for a in attacks:
        sel = real | np.array([r["attack"] == a for r in rows])
        if (sel & ~real).any():
            per[a] = balanced_accuracy(predicted[sel], labels[sel])
    return (sum(per.values()) / len(per) if per else float("nan")), per


# --- the data -------------------------------------------------------------------------------


def split_train_val(rows: Sequence[Row], fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """Hold out ``fraction`` of the video groups (at least one) for validation.

    Groups are taken in a seeded order, stratified by class: a group is passed over when
    taking it would leave the training part without a class the rows have, and once
    the fraction is reached, groups that bring a class validation still lacks are taken
    until it has every class (when the groups allow). Which class a video's faces land
    in depends on the deepfake detector's verdicts, so a plain random pick of a few
    groups could hold out only attacked faces.
    """
    if not 0.0 < fraction < 1.0:
        raise BadOptionError("--val-fraction", fraction, "a number between 0 and 1")
    order = seeded_order((r["group"] for r in rows), seed, "val")
    if len(order) < 2:
        raise EmptyDatasetError(
            "validation videos", f"the training split has {len(order)} video group; need 2+"
        )
    labels: dict[str, set[Any]] = {}
    for r in rows:
        labels.setdefault(r["group"], set()).add(r.get("label"))
    every = set().union(*labels.values())

    def classes(groups: Iterable[str]) -> set[Any]:
        return set().union(*(labels[g] for g in groups))

    want = max(1, round(fraction * len(order)))
    val: list[str] = []
    for group in order:
        missing = every - classes(val)
        if len(val) >= want:
            if not missing:
                break
            if not labels[group] & missing:
                continue  # the fraction is reached: only groups that bring a missing class
        if classes(g for g in order if g != group and g not in val) != every:
            continue  # training would lose a class
        val.append(group)
    held = set(val or order[:want])  # none could go: check_classes names the lost class
    return (
        [r for r in rows if r["group"] not in held],
        [r for r in rows if r["group"] in held],
    )


def training_rows(dataset: Dataset, attacks: Sequence[str]) -> list[Row]:
    """The train split's rows in the sets of real faces + faces each train attack fooled
    (the paper's pairs when the dataset was built with them)."""
    return [r for r in dataset.select(split="train") if any(in_set(r, a) for a in attacks)]


def check_classes(rows: Sequence[Row], what: str) -> None:
    labels = {r["label"] for r in rows}
    for c, name in ((REAL_LABEL, "real faces called real"), (ATTACKED_LABEL, "attacked faces")):
        if c not in labels:
            raise EmptyDatasetError(
                f"{name} in the {what} set",
                "build a larger dataset (more videos or frames), or check that the deepfake "
                "detector calls real faces real and that the attacks succeed",
            )


class Samples:
    """Rows with their tensors, read lazily from the shards batch by batch."""

    def __init__(self, dataset: Dataset, rows: Sequence[Row], xai: str | None) -> None:
        self.dataset, self.rows, self.xai = dataset, list(rows), xai
        self.labels = torch.tensor([r["label"] for r in self.rows], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.rows)

    def tensors(self, idx: Sequence[int], size: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.rows[i] for i in idx]
        crops = self.dataset.crops(rows)
        maps = None if self.xai is None else self.dataset.maps(rows, self.xai)
        return adversarial_inputs(crops, maps, size)


# --- training --------------------------------------------------------------------------------


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    if mode not in AMP_MODES:
        raise BadOptionError("--amp", mode, " or ".join(AMP_MODES))
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "fp16":
        if device.type != "cuda":
            raise BadOptionError("--amp", mode, "bf16 or off on a CPU (fp16 needs CUDA)")
        return torch.float16
    if mode == "auto" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


class Finetuner:
    def __init__(self, options: FinetuneOptions) -> None:
        o = self.o = options
        if o.config not in CONFIGS:
            raise BadOptionError("--mode", o.config, " or ".join(CONFIGS))
        if o.bn not in BN_RULES:
            raise BadOptionError("--bn", o.bn, " or ".join(BN_RULES))
        if not o.init:
            raise BadOptionError(
                "--init",
                o.init,
                "the weights to start from (the paper finetunes an ImageNet-pretrained "
                f"ResNet50), or {RANDOM_INIT!r} for a seeded random initialization",
            )
        for flag, value in (("--batch-size", o.batch_size), ("--epochs", o.epochs)):
            if value < 1:
                raise BadOptionError(flag, value, ">= 1")
        self.dataset = Dataset(o.dataset)
        if o.xai is not None and o.xai not in self.dataset.xai_methods:
            raise BadOptionError(
                "--xai",
                o.xai,
                f"one of the dataset's methods: {', '.join(self.dataset.xai_methods)}",
            )
        self.arch = o.arch or self.dataset.info["adversarial"]
        cfg = model_cfg(self.arch, "adversarial")
        if cfg.input_size != self.dataset.map_size:
            raise BadOptionError(
                "--arch",
                self.arch,
                f"an architecture of input size {self.dataset.map_size} (the dataset's maps)",
            )
        self.attacks = sorted(self.dataset.info["attacks"]["train"])
        rows = training_rows(self.dataset, self.attacks)
        check_classes(rows, "training")
        train, val = split_train_val(rows, o.val_fraction, o.seed)
        check_classes(train, "training (after holding out validation videos)")
        check_classes(val, "validation")
        self.train = Samples(self.dataset, train, o.xai)
        self.val = Samples(self.dataset, val, o.xai)
        self.device = resolve_device(o.device)
        self.amp = resolve_amp(o.amp, self.device)
        self.name = o.name or default_name(self.arch, o.maps_name, o.config)
        self.size = cfg.input_size

    # --- model ----------------------------------------------------------------------------

    def make_model(self) -> nn.Module:
        model = create_model(self.arch, kind="adversarial", seed=self.o.seed)
        if self.o.init != RANDOM_INIT:
            load_weights(model, self.o.init)
        model.to(self.device)
        if self.o.config == "head":
            for p in model.backbone.parameters():
                p.requires_grad_(False)
        return model

    def set_train_mode(self, model: nn.Module) -> None:
        """Train mode for a full finetune; ``--bn frozen`` keeps BatchNorm in eval mode."""
        model.train()
        if self.o.bn == "frozen":
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def train_forward(self, model: nn.Module, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Training logits under the ``--bn`` rule (``joint`` and ``frozen``: the model's own
        single pass; ``separate``: one train-mode pass per modality)."""
        if self.o.bn == "separate":
            return model.head(torch.cat([model.embed(x), model.embed(m)], dim=1))
        return model(x, m)

    @torch.no_grad()
    def bn_shift(self, model: nn.Module) -> dict[str, float]:
        """Relative distance ``‖e_train − e_eval‖ / ‖e_eval‖`` between the embeddings a
        validation batch gets in training (under the ``--bn`` rule) and in evaluation, for
        crops and for maps: 0 when evaluation normalizes as training did."""
        probe = copy.deepcopy(model)  # train-mode passes move the running statistics
        idx = list(range(min(len(self.val), 4 * self.o.batch_size)))
        x, m = (t.to(self.device) for t in self.val.tensors(idx, self.size))
        probe.eval()
        e_eval = probe.embed(torch.cat([x, m])).float().chunk(2)
        self.set_train_mode(probe)
        if self.o.bn == "separate":
            e_train = (probe.embed(x).float(), probe.embed(m).float())
        else:
            e_train = probe.embed(torch.cat([x, m])).float().chunk(2)
        return {
            name: round(float((t - e).norm() / e.norm().clamp_min(1e-12)), 4)
            for name, t, e in zip(("crops", "maps"), e_train, e_eval, strict=True)
        }

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    @torch.no_grad()
    def embed(self, model: nn.Module, samples: Samples) -> torch.Tensor:
        """Frozen-backbone features ``(n, 2·D)`` = [embed(crop), embed(map)] per sample."""
        model.eval()
        out = []
        bar = self._bar(len(samples), f"embedding {len(samples)}", "face")
        for s in batches(len(samples), self.o.eval_batch_size):
            x, m = samples.tensors(range(s.start, s.stop), self.size)
            with self.autocast():
                e = model.embed(torch.cat([x, m]).to(self.device)).float()
            out.append(torch.cat(e.chunk(2), dim=1).cpu())
            bar.update(s.stop - s.start)
        bar.close()
        return torch.cat(out)

    def _bar(self, total: int, desc: str, unit: str) -> Any:
        from tqdm import tqdm

        return tqdm(
            total=total,
            desc=desc,
            unit=unit,
            disable=not self.o.progress,
            file=sys.stderr,
            dynamic_ncols=True,
            leave=False,
        )

    # --- run --------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        o = self.o
        torch.manual_seed(o.seed)
        started = time.perf_counter()
        model = self.make_model()
        if o.config == "head":
            train_f, val_f = self.embed(model, self.train), self.embed(model, self.val)

            def train_logits(idx: torch.Tensor) -> torch.Tensor:
                return model.head(train_f[idx].to(self.device))

            def val_probs() -> tuple[torch.Tensor, float]:
                with torch.no_grad():
                    logits = model.head(val_f.to(self.device)).float().cpu()
                return logits.softmax(1)[:, 1], F.cross_entropy(logits, self.val.labels).item()

            params = list(model.head.parameters())
        else:

            def train_logits(idx: torch.Tensor) -> torch.Tensor:
                x, m = self.train.tensors(idx.tolist(), self.size)
                return self.train_forward(model, x.to(self.device), m.to(self.device))

            def val_probs() -> tuple[torch.Tensor, float]:
                return self.evaluate(model, self.val)

            params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=o.lr, betas=o.betas, eps=o.adam_eps)
        scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        history, best = self._loop(model, opt, scaler, train_logits, val_probs)
        seconds = time.perf_counter() - started
        record = self._record(history, best, seconds)
        if o.config == "full":
            record["bn_shift"] = self.bn_shift(model)
        atomic_write_text(o.out / f"{self.name}.json", json.dumps(record, indent=2) + "\n")
        return record

    def _loop(
        self,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        train_logits: Callable[[torch.Tensor], torch.Tensor],
        val_probs: Callable[[], tuple[torch.Tensor, float]],
    ) -> tuple[list[dict[str, Any]], Checkpoint]:
        o = self.o
        n = len(self.train)
        per_epoch = -(-n // o.batch_size)
        total = o.epochs * per_epoch
        if o.max_steps:
            total = min(total, o.max_steps)
        g = torch.Generator().manual_seed(o.seed)
        history: list[dict[str, Any]] = []
        best: Checkpoint | None = None
        stale, step, losses = 0, 0, []
        bar = self._bar(total, f"finetuning {self.name}", "step")
        for epoch in range(o.epochs):
            best_at_start = best
            order = torch.randperm(n, generator=g)
            for s in batches(n, o.batch_size):
                idx = order[s]
                if o.config == "full":
                    self.set_train_mode(model)
                with self.autocast():
                    logits = train_logits(idx)
                loss = F.cross_entropy(logits.float(), self.train.labels[idx].to(self.device))
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                losses.append(loss.item())
                step += 1
                bar.update(1)
                last = step == total
                if (o.eval_every and step % o.eval_every == 0 and s.stop < n) or last:
                    best = self._validate(
                        model, val_probs, epoch + s.stop / n, step, losses, history, best
                    )
                if last:
                    break
            if step == total:
                break
            best = self._validate(model, val_probs, epoch + 1.0, step, losses, history, best)
            stale = 0 if best is not best_at_start else stale + 1
            if o.patience and stale >= o.patience:
                log.info("%s: no improvement for %d epochs, stopping", self.name, stale)
                break
        bar.close()
        assert best is not None
        return history, best

    def _validate(
        self,
        model: nn.Module,
        val_probs: Callable[[], tuple[torch.Tensor, float]],
        epoch: float,
        step: int,
        losses: list[float],
        history: list[dict[str, Any]],
        best: Checkpoint | None,
    ) -> Checkpoint:
        p, val_loss = val_probs()
        metric, per = mean_validation_metric(p, self.val.rows, self.attacks)
        train_loss = sum(losses) / len(losses) if losses else float("nan")
        losses.clear()
        point = Checkpoint(round(epoch, 4), step, metric, val_loss, per)
        history.append({**asdict(point), "train_loss": train_loss})
        log.info(
            "%s: epoch %.2f step %d: train loss %.4f, val loss %.4f, val metric %.4f",
            self.name,
            epoch,
            step,
            train_loss,
            val_loss,
            metric,
        )
        if point.better_than(best):
            save_weights(
                model.state_dict(),
                self.o.out / f"{self.name}.safetensors",
                arch=self.arch,
                source="veritas",
                complete=True,
            )
            return point
        assert best is not None
        return best

    @torch.no_grad()
    def evaluate(self, model: nn.Module, samples: Samples) -> tuple[torch.Tensor, float]:
        """p_attacked and mean cross-entropy of ``samples`` (model in eval mode)."""
        model.eval()
        logits = []
        for s in batches(len(samples), self.o.eval_batch_size):
            x, m = samples.tensors(range(s.start, s.stop), self.size)
            with self.autocast():
                logits.append(model(x.to(self.device), m.to(self.device)).float().cpu())
        out = torch.cat(logits)
        return out.softmax(1)[:, 1], F.cross_entropy(out, samples.labels).item()

    def _record(
        self, history: list[dict[str, Any]], best: Checkpoint, seconds: float
    ) -> dict[str, Any]:
        o = self.o

        def counts(s: Samples) -> dict[str, int]:
            return {
                "real": int((s.labels == REAL_LABEL).sum()),
                "attacked": int((s.labels == ATTACKED_LABEL).sum()),
                "groups": len({r["group"] for r in s.rows}),
            }

        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(o).items()}
        return {
            "name": self.name,
            "weights": f"{self.name}.safetensors",
            "arch": self.arch,
            "dataset": str(o.dataset),
            "detector": self.dataset.detector,
            "xai": o.xai,
            "maps": "zero" if o.xai is None else "xai",
            "config": o.config,
            "bn": o.bn if o.config == "full" else "frozen",
            "init": o.init,
            "train_attacks": self.attacks,
            "train": counts(self.train),
            "val": counts(self.val),
            "val_groups": sorted({r["group"] for r in self.val.rows}),
            "best": asdict(best),
            "history": history,
            "device": str(self.device),
            "amp": str(self.amp).replace("torch.", "") if self.amp else "off",
            "seconds": round(seconds, 2),
            "options": options,
        }


# --- command line -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.finetune",
        description="Finetune Detect-ResNet50 (paper settings by default) on a built dataset.",
    )
    p.add_argument("dataset", help="folder written by python -m training.build_dataset")
    p.add_argument("out", help="folder for the checkpoint (.safetensors) and its record (.json)")
    maps = p.add_mutually_exclusive_group()
    maps.add_argument("--xai", default="guided_backprop", help="XAI method of the maps")
    maps.add_argument(
        "--no-maps",
        action="store_true",
        help="train the no-maps model: maps are zeros in training and test (crop only)",
    )
    p.add_argument(
        "--mode",
        default="full",
        choices=CONFIGS,
        help="the paper's configuration: full finetune, or frozen backbone and head trained",
    )
    p.add_argument("--arch", help="Detect-ResNet50 architecture (default: the dataset's)")
    p.add_argument(
        "--init",
        required=True,
        help="weights to start from: a converted ImageNet resnet50 backbone (the paper's "
        "start) or a Detect-ResNet50 file; 'random' for a seeded random initialization "
        "(not the paper's setting; recorded and named in the tables)",
    )
    p.add_argument(
        "--bn",
        default="joint",
        choices=BN_RULES,
        help="BatchNorm in --mode full: joint (crops and maps in one pass, as evaluated), "
        "frozen (the starting weights' statistics), separate (one train pass per modality)",
    )
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: off)")
    p.add_argument("--patience", type=int, default=10, help="epochs without improvement (0: off)")
    p.add_argument("--eval-every", type=int, default=0, help="also validate every N steps")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.999))
    p.add_argument("--adam-eps", type=float, default=1e-8)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="auto", choices=AMP_MODES)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--name", help="file name stem (default: ARCH.XAI.CONFIG)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from training.build_dataset import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging("finetune", args.quiet)
    options = FinetuneOptions(
        dataset=Path(args.dataset),
        out=Path(args.out),
        xai=None if args.no_maps else args.xai,
        config=args.mode,
        arch=args.arch,
        init=args.init,
        bn=args.bn,
        epochs=args.epochs,
        max_steps=args.max_steps,
        patience=args.patience,
        eval_every=args.eval_every,
        batch_size=args.batch_size,
        lr=args.lr,
        betas=tuple(args.betas),
        adam_eps=args.adam_eps,
        val_fraction=args.val_fraction,
        seed=args.seed,
        device=args.device,
        amp=args.amp,
        eval_batch_size=args.eval_batch_size,
        name=args.name,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    try:
        record = Finetuner(options).run()
    except VeritasError as e:
        print(f"finetune: error: {e}", file=sys.stderr)
        return 2
    b = record["best"]
    print(
        f"{options.out / record['weights']}: best at epoch {b['epoch']} (step {b['step']}): "
        f"mean validation metric {b['val_metric']:.4f}, val loss {b['val_loss']:.4f} "
        f"({record['seconds']:.1f} s on {record['device']})"
    )
    return 0


def iter_records(folder: Path) -> Iterator[dict[str, Any]]:
    """The finetune records (``*.json`` next to their weights) in ``folder``."""
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if "weights" in record and (folder / record["weights"]).is_file():
            record["path"] = str(folder / record["weights"])
            yield record


if __name__ == "__main__":
    sys.exit(main())
