"""Configuration: defaults, a TOML file, then command-line overrides — validated.

Sections and keys (see README "Configuration" and ``engine/configs/default.toml``):

``[models]``    which detector, face detector and Detect-ResNet50, and their weights
``[faces]``     face-detection limits (``engine.faces.base.DetectionSettings``)
``[pipeline]``  device, batch size, thresholds, XAI method and map settings
``[sources]``   sampling and input limits (``engine.sources.SourceSettings``)

Every value is checked for its key, type and range; a bad one raises
:class:`~engine.errors.ConfigError` naming the key, the value and what is expected.
Overrides are ``section.key=value`` strings whose value is parsed as TOML
(``pipeline.batch_size=16``, ``models.detector="efficientnet_b4st"``; bare words are
taken as strings).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.faces.base import DetectionSettings
from engine.sources import SourceSettings

XAI_METHODS = ("guided_backprop", "saliency", "input_x_gradient", "integrated_gradients")


@dataclass(frozen=True)
class ModelsConfig:
    detector: str = "xception"
    """Deepfake detector g: ``xception`` or ``efficientnet_b4st`` (``veritas --list-models``)."""
    detector_weights: str = ""
    """Veritas safetensors file for the detector; empty = untrained (random init)."""
    face_detector: str = "haar"
    """Face detector f: ``haar`` (CPU default) or ``retinaface`` (batched network)."""
    face_detector_weights: str = ""
    adversarial: str = "detect_resnet50"
    """Adversarial detector d (Detect-ResNet50)."""
    adversarial_weights: str = ""

    def __post_init__(self) -> None:
        # Imported here: the registries pull in torch models, config stays light to import.
        from engine.faces import face_detector_cfg
        from engine.models import model_cfg

        _wrap("models.detector", self.detector, lambda: model_cfg(self.detector, "deepfake"))
        _wrap(
            "models.adversarial",
            self.adversarial,
            lambda: model_cfg(self.adversarial, "adversarial"),
        )
        _wrap(
            "models.face_detector",
            self.face_detector,
            lambda: face_detector_cfg(self.face_detector),
        )


@dataclass(frozen=True)
class PipelineConfig:
    device: str = "auto"
    """``auto`` (first CUDA GPU, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    batch_size: int = 8
    """Frames per batch (from one or several sources)."""
    max_batch_latency_ms: float = 50.0
    """Send a partial batch when its oldest frame has waited this long."""
    box_scale: float = 1.3
    """Crop side = longest box side x this (FaceForensics++ convention)."""
    fake_threshold: float = 0.5
    """A face is ``fake`` when p_fake >= this."""
    attacked_threshold: float = 0.5
    """A face the detector calls real is ``attacked`` when p_attacked >= this."""
    xai_method: str = "guided_backprop"
    ig_steps: int = 50
    """Integrated Gradients steps (one batch of steps per face batch)."""
    ig_internal_batch_size: int = 0
    """Rows per Integrated Gradients forward pass; 0 = all steps of the batch at once."""
    map_quantile: float = 0.995
    """XAI maps are scaled by this quantile of |attribution| (``engine.xai.prepare_map``)."""

    def __post_init__(self) -> None:
        if not (self.device in ("auto", "cpu", "cuda") or _is_cuda_index(self.device)):
            raise ConfigError("pipeline.device", self.device, "auto, cpu, cuda or cuda:N")
        _check_range("pipeline.batch_size", self.batch_size, 1, 4096)
        _check_range("pipeline.max_batch_latency_ms", self.max_batch_latency_ms, 0, 60_000)
        _check_range("pipeline.box_scale", self.box_scale, 1.0, 4.0)
        _check_range("pipeline.fake_threshold", self.fake_threshold, 0.0, 1.0)
        _check_range("pipeline.attacked_threshold", self.attacked_threshold, 0.0, 1.0)
        if self.xai_method not in XAI_METHODS:
            raise ConfigError("pipeline.xai_method", self.xai_method, " or ".join(XAI_METHODS))
        _check_range("pipeline.ig_steps", self.ig_steps, 1, 1024)
        _check_range("pipeline.ig_internal_batch_size", self.ig_internal_batch_size, 0, 1 << 20)
        _check_range("pipeline.map_quantile", self.map_quantile, 0.5, 1.0)


@dataclass(frozen=True)
class Config:
    models: ModelsConfig = field(default_factory=ModelsConfig)
    faces: DetectionSettings = field(default_factory=DetectionSettings)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    sources: SourceSettings = field(default_factory=SourceSettings)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {f.name: dataclasses.asdict(getattr(self, f.name)) for f in dataclasses.fields(self)}


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Defaults, then the TOML file at ``path`` (if any), then ``section.key=value`` overrides."""
    tables: dict[str, dict[str, Any]] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("--config", str(path), "an existing TOML file")
        try:
            tables = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError("--config", str(path), f"valid TOML ({e})") from e
    for item in overrides:
        section, key, value = _parse_override(item)
        tables.setdefault(section, {})[key] = value
    return build_config(tables)


def build_config(tables: Mapping[str, Any]) -> Config:
    sections = {f.name: f for f in dataclasses.fields(Config)}
    for name in tables:
        if name not in sections:
            raise ConfigError(name, tables[name], f"one of the sections {', '.join(sections)}")
    built = {}
    for name, f in sections.items():
        table = tables.get(name, {})
        if not isinstance(table, Mapping):
            raise ConfigError(name, table, "a table of keys")
        built[name] = _build_section(_section_type(f), name, table)
    return Config(**built)


# --- helpers ------------------------------------------------------------------------------


def _section_type(f: dataclasses.Field) -> type:
    return typing.get_type_hints(Config)[f.name]


def _build_section(cls: type, section: str, table: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in table.items():
        if key not in hints:
            raise ConfigError(f"{section}.{key}", value, f"one of the keys {', '.join(names)}")
        values[key] = _coerce(f"{section}.{key}", value, hints[key])
    return cls(**values)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against a field's type hint (int, float, str, bool, X | None)."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        inner = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "")):
            return None
        return _coerce(key, value, inner[0])
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, value, "true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, value, "an integer")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(key, value, "a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, value, "a string")
    return value


def _parse_override(item: str) -> tuple[str, str, Any]:
    name, sep, raw = item.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not key:
        raise ConfigError("--set", item, "section.key=value, e.g. pipeline.batch_size=16")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word: take it as a string
    return section, key, value


def _check_range(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(key, value, f"a value from {low} to {high}")


def _is_cuda_index(device: str) -> bool:
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


def _wrap(key: str, value: object, check: typing.Callable[[], object]) -> None:
    from engine.errors import UnknownModelError

    try:
        check()
    except UnknownModelError as e:
        raise ConfigError(key, value, str(e).split(": ", 1)[1]) from e
