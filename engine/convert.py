"""``veritas convert-weights``: published checkpoints → the project's safetensors format.

Formats (``--format``), each a renaming of the published state dict onto a registered
architecture, checked tensor by tensor (names and shapes) before anything is written.
Each renaming lives beside its model (``engine.models.xception.from_ffpp``,
``engine.models.efficientnet.from_icpr``, ``engine.models.detect_resnet.from_resnet50``,
``engine.faces.retinaface.map_published_state``); this module holds the table, the
checkpoint reader and the checks:

``ffpp-xception``    FaceForensics++ ``full_c23.p``: a pickled whole ``TransferModel``
                     (keys ``model.*``; head ``model.last_linear`` as Linear or as
                     Sequential(Dropout, Linear)); timm ``legacy_xception`` state dicts
                     (head ``fc``) are accepted too
``icpr-effnetb4st``  icpr2020dfdc ``EfficientNetB4ST_*.pth``: a plain state dict
                     (``feat_ext.efficientnet._blocks.N...``), or a training checkpoint
                     ``{"net": state_dict, ...}``
``resnet50``         torchvision ``resnet50-*.pth`` or timm ``resnet50`` (``.pth`` or
                     ``model.safetensors``): Detect-ResNet50's backbone; the head stays
                     untrained, so the file is marked partial
``retinaface-mnet``  Pytorch_Retinaface ``mobilenet0.25_Final.pth`` (with or without a
                     ``module.`` prefix)

Reading pickles: unpickling can run arbitrary code, so ``.p``/``.pth`` files are read
only with ``trust_pickle=True`` (``--trust-pickle``), and even then through a
restricted unpickler: torch's tensor/storage rebuild functions and plain containers
are the only callables it resolves; every other class the pickle names (the
checkpoint's own ``network.models.TransferModel``, torch modules, ...) becomes an inert
stub that only records its attributes. A whole pickled module is then walked through
its ``_parameters``/``_buffers``/``_modules`` to recover the state dict, without the
original code.
"""

from __future__ import annotations

import importlib
import logging
import pickle
import types
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import UntrustedPickleError, WeightsError
from engine.registry import Registry

if TYPE_CHECKING:  # torch is imported where tensors are handled: the format table is light
    from torch import nn

log = logging.getLogger(__name__)

StateDict = "dict[str, torch.Tensor]"

# --- the restricted unpickler -----------------------------------------------------------

# Callables a checkpoint pickle may resolve for real: tensor/storage rebuilding and
# plain containers. Everything else resolves to an inert stub.
_ALLOWED = {
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("__builtin__", "set"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch", "dtype"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch.nn.parameter", "Parameter"),
}
_DTYPES = {
    "float32",
    "float16",
    "bfloat16",
    "float64",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "bool",
}


class _Stub:
    """Stands in for any class a checkpoint names: accepts anything, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) form
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and (name.endswith("Storage") or name in _DTYPES):
            return super().find_class(module, name)  # storage types, dtypes
        return type(name, (_Stub,), {"__module__": f"stub.{module}"})


# torch.load takes a module-like object with Unpickler (and load for old files).
_restricted_pickle = types.SimpleNamespace(
    Unpickler=_RestrictedUnpickler,
    load=lambda f, **kw: _RestrictedUnpickler(f, **kw).load(),
    __name__="veritas_restricted_pickle",
)


def _walk_module(obj: Any, prefix: str, out: StateDict) -> StateDict:
    """State dict of a stubbed, unpickled ``nn.Module`` (parameters, persistent buffers)."""
    d = obj.__dict__
    skip = d.get("_non_persistent_buffers_set", set())
    for k, v in d.get("_parameters", {}).items():
        if v is not None:
            out[prefix + k] = v
    for k, v in d.get("_buffers", {}).items():
        if v is not None and k not in skip:
            out[prefix + k] = v
    for k, v in d.get("_modules", {}).items():
        if v is not None:
            _walk_module(v, f"{prefix}{k}.", out)
    return out


def _as_state_dict(obj: Any, path: str) -> StateDict:
    """Find the state dict inside whatever a checkpoint holds."""
    import torch

    if isinstance(obj, _Stub) and "_modules" in obj.__dict__:
        return _walk_module(obj, "", OrderedDict())
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
        for key in ("state_dict", "net", "model", "model_state_dict"):
            if key in obj:
                return _as_state_dict(obj[key], path)
    raise WeightsError(
        path,
        f"holds a {type(obj).__name__}, not a model or state dict",
        "check that this is the published checkpoint for --format",
    )


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> StateDict:
    """The tensors of a published checkpoint (safetensors, or a pickle if trusted)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from torch import nn

    path = Path(path)
    if not path.is_file():
        raise WeightsError(str(path), "no such checkpoint file", "check the path")
    if path.suffix.lower() == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise WeightsError(
                str(path), f"is not a readable safetensors file ({e})", "check the file"
            ) from e
    if not trust_pickle:
        raise UntrustedPickleError(str(path))
    try:
        # Reached only with trust_pickle (--trust-pickle); objects are then allowed, but
        # through the restricted unpickler, which resolves no class of the file's own.
        obj = torch.load(
            str(path),
            map_location="cpu",
            pickle_module=_restricted_pickle,
            weights_only=not trust_pickle,
        )
    except Exception as e:  # torch raises many types for a file it cannot read
        raise WeightsError(
            str(path),
            f"is not a readable PyTorch checkpoint ({e})",
            "check that the download is complete",
        ) from e
    tensors = _as_state_dict(obj, str(path))
    return {k: (v.detach() if isinstance(v, nn.Parameter) else v) for k, v in tensors.items()}


# --- formats ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightsFormat:
    name: str
    description: str
    archs: tuple[str, ...]
    """Architectures this layout converts to; the first is the default."""
    converter: str
    """``"module:function"``, beside the model: ``function(published_state, target_module)
    -> target_state`` (imported when a file is converted; the table itself stays light)."""
    complete: bool = True
    """False: the published file holds only part of the target (e.g. a backbone)."""

    def rename(self, state: StateDict, target: nn.Module) -> StateDict:
        """The published ``state`` under ``target``'s names, by the converter."""
        module, function = self.converter.split(":")
        return getattr(importlib.import_module(module), function)(state, target)


FORMATS: Registry[str, WeightsFormat] = Registry(
    "weights format",
    unknown=lambda fmt, known: WeightsError(
        "--format", f"unknown format {fmt!r}", f"choose one of {', '.join(sorted(known))}"
    ),
)
"""Format name (``--format``) -> its :class:`WeightsFormat`."""


def register_format(fmt: WeightsFormat) -> WeightsFormat:
    return FORMATS.add(fmt.name, fmt)


register_format(
    WeightsFormat(
        "ffpp-xception",
        "FaceForensics++ XceptionNet full_c23.p (pickled TransferModel)",
        ("xception", "xception_tiny"),
        "engine.models.xception:from_ffpp",
    )
)
register_format(
    WeightsFormat(
        "icpr-effnetb4st",
        "icpr2020dfdc EfficientNetB4ST state dict",
        ("efficientnet_b4st", "efficientnet_b4st_tiny"),
        "engine.models.efficientnet:from_icpr",
    )
)
register_format(
    WeightsFormat(
        "resnet50",
        "torchvision/timm ResNet50 (the Detect-ResNet50 backbone; head untrained)",
        ("detect_resnet50", "detect_resnet50_tiny"),
        "engine.models.detect_resnet:from_resnet50",
        complete=False,
    )
)
register_format(
    WeightsFormat(
        "retinaface-mnet",
        "Pytorch_Retinaface mobilenet0.25_Final.pth",
        ("retinaface",),
        "engine.faces.retinaface:map_published_state",
    )
)


def build_target(arch: str) -> nn.Module:
    """The module a converted file is for (a registered model, or a face detector's net)."""
    from torch import nn

    from engine.faces import create_face_detector, list_face_detectors
    from engine.models import create_model, list_models

    if arch in list_models():
        return create_model(arch)
    if arch in list_face_detectors():
        net = getattr(create_face_detector(arch), "net", None)
        if isinstance(net, nn.Module):
            return net
    raise WeightsError(
        arch,
        "is not an architecture with convertible weights",
        f"choose one of {', '.join(list_models())}, retinaface",
    )


def convert_weights(
    src: str | Path,
    dst: str | Path,
    fmt: str,
    arch: str | None = None,
    trust_pickle: bool = False,
) -> tuple[Path, str]:
    """Convert ``src`` in layout ``fmt`` to a Veritas weights file for ``arch``.

    Every tensor is checked (name and shape) before ``dst`` is written. Returns the
    written path and a one-line report.
    """
    spec = FORMATS.get(fmt)
    arch = arch or spec.archs[0]
    if arch not in spec.archs:
        raise WeightsError(
            str(src),
            f"format {fmt} converts to {', '.join(spec.archs)}, not {arch!r}",
            "pick one of those with --arch",
        )
    state = read_checkpoint(src, trust_pickle=trust_pickle)
    target = build_target(arch)
    mapped = spec.rename(state, target)
    own = target.state_dict()
    # Old checkpoints (torch < 0.4.1) have no BatchNorm counters; they are not weights.
    for k in own:
        if k.endswith("num_batches_tracked") and k not in mapped:
            mapped[k] = own[k].clone()
    unexpected = sorted(set(mapped) - set(own))
    missing = sorted(set(own) - set(mapped))
    if unexpected:
        raise WeightsError(
            str(src),
            f"has tensors that {arch} does not: {unexpected[:4]}",
            f"check that it is a {spec.description} checkpoint",
        )
    if missing and spec.complete:
        raise WeightsError(
            str(src),
            f"lacks tensors that {arch} needs: {missing[:4]}",
            f"check that it is a {spec.description} checkpoint",
        )
    for k, v in mapped.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise WeightsError(
                str(src),
                f"tensor {k} has shape {tuple(v.shape)}, {arch} needs {tuple(own[k].shape)}",
                f"check that it is a {spec.description} checkpoint",
            )
    mapped = {k: v.to(own[k].dtype) for k, v in mapped.items()}
    complete = spec.complete and not missing
    from engine.models.weights import save_weights

    path = save_weights(mapped, dst, arch=arch, source=fmt, complete=complete)
    report = f"{len(mapped)} tensors for {arch} from {fmt}" + (
        "" if complete else f"; {len(missing)} tensors not in the source (untrained)"
    )
    log.info("converted %s → %s: %s", src, path, report)
    return path, report
