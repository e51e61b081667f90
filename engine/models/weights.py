"""The project's weights format: safetensors with a small metadata header.

A weights file holds one model's state dict (the keys of the registered module, e.g.
``net.conv1.weight``) and string metadata:

``format``   ``"veritas-weights"``
``version``  ``"1"``
``arch``     the registry name it was made for (``xception``, ``detect_resnet50``...)
``source``   the published layout it was converted from (``ffpp-xception``...), or
             ``"veritas"`` for weights trained here
``complete`` ``"true"`` when every tensor of the model is in the file. A partial file
             (e.g. an ImageNet ResNet50 backbone without the Detect-ResNet50 head)
             loads, but the model stays ``weights_status == "untrained"``.

Pickled checkpoints are never read here: see ``engine.convert`` and
``veritas convert-weights --trust-pickle``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from engine.errors import UntrustedPickleError, WeightsError

log = logging.getLogger(__name__)

FORMAT = "veritas-weights"
VERSION = "1"
PICKLE_SUFFIXES = (".p", ".pt", ".pth", ".pkl", ".pickle", ".bin", ".tar", ".ckpt")


def is_pickle_path(path: str | Path) -> bool:
    """True for the suffixes published PyTorch pickles use (``torch.save`` output)."""
    return Path(path).suffix.lower() in PICKLE_SUFFIXES


def save_weights(
    state_dict: dict[str, torch.Tensor],
    path: str | Path,
    arch: str,
    source: str = "veritas",
    complete: bool = True,
) -> Path:
    """Write ``state_dict`` as a Veritas weights file; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "source": source,
        "complete": "true" if complete else "false",
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)  # a crash never leaves a half-written weights file behind
    return path


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a Veritas weights file, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(str(path), "no such weights file", "check the path in the config")
    if is_pickle_path(path):
        raise UntrustedPickleError(str(path))
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(
            str(path),
            f"is not a safetensors file ({e})",
            "convert published checkpoints with 'veritas convert-weights'",
        ) from e
    if metadata.get("format") != FORMAT:
        raise WeightsError(
            str(path),
            "is a safetensors file without Veritas metadata",
            "convert it with 'veritas convert-weights SRC DST --format ...'",
        )
    return tensors, metadata


def load_weights(model: nn.Module, path: str | Path, arch: str | None = None) -> nn.Module:
    """Load a Veritas weights file into ``model``; set ``model.weights_status``.

    ``arch`` is the name the file must have been made for (default: ``model.cfg.name``).
    """
    tensors, meta = read_weights(path)
    arch = arch or model.cfg.name
    if meta.get("arch") != arch:
        raise WeightsError(
            str(path),
            f"was made for the architecture {meta.get('arch')!r}, not {arch!r}",
            "choose the matching model in the config, or convert weights for this one",
        )
    complete = meta.get("complete") == "true"
    own = model.state_dict()
    unexpected = sorted(set(tensors) - set(own))
    missing = sorted(set(own) - set(tensors))
    if unexpected or (complete and missing):
        keys = (unexpected or missing)[:4]
        what = "unexpected" if unexpected else "missing"
        raise WeightsError(
            str(path),
            f"does not fit {arch}: {what} tensors {keys}",
            "re-convert the checkpoint with the matching --format",
        )
    for key, tensor in tensors.items():
        if tensor.shape != own[key].shape:
            raise WeightsError(
                str(path),
                f"tensor {key} has shape {tuple(tensor.shape)}, "
                f"{arch} needs {tuple(own[key].shape)}",
                "re-convert the checkpoint with the matching --format",
            )
    model.load_state_dict(tensors, strict=complete)
    model.weights_status = "trained" if complete else "untrained"
    if not complete:
        log.warning(
            "%s: partial weights for %s (%d of %d tensors): it stays untrained",
            path,
            arch,
            len(tensors),
            len(own),
        )
    return model


def strip_prefixes(state: dict[str, torch.Tensor], *prefixes: str) -> dict[str, torch.Tensor]:
    """``state`` with the first of ``prefixes`` that each key starts with removed."""
    out = {}
    for k, v in state.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p) :]
                break
        out[k] = v
    return out
