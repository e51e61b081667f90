"""Configuration: defaults, a TOML file, then command-line overrides — validated.

Sections and keys (see README "Configuration" and ``engine/configs/default.toml``):

``[models]``    which detector, face detector and Detect-ResNet50, and their weights
``[faces]``     face-detection limits (``engine.faces.base.DetectionSettings``)
``[pipeline]``  device, batch size, thresholds, XAI method and map settings
``[sources]``   sampling, decoder and input limits (``engine.sources.SourceSettings``)
``[runtime]``   how the networks run: eager, torch.compile, ONNX Runtime or TensorRT, precision,
                batch buckets (``engine.runtime``); never what the stages compute
``[queue]``     the Redis job queue, its workers and their live feeds (:class:`QueueConfig`)

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

from engine.catalog import is_bundled_face_detector, is_bundled_model
from engine.errors import ConfigError
from engine.faces.settings import DetectionSettings
from engine.sources.settings import SourceSettings

XAI_METHODS = ("guided_backprop", "saliency", "input_x_gradient", "integrated_gradients")
GUIDED_RULES = ("auto", "captum", "textbook")
"""Guided Backprop rules (``engine.xai.GUIDED_RULES``; config stays torch-free)."""

LIVE_MODES = ("realtime", "lossless")
"""How a worker reads live feeds: drop frames when behind, or never drop (see README)."""

DEFAULT_ALLOWED_SCHEMES = (
    "file",
    "http",
    "https",
    "rtmp",
    "rtmps",
    "rtsp",
    "rtsps",
    "srt",
    "tcp",
    "udp",
)
"""URL schemes a worker opens by default; ``file`` URLs are also held to ``allowed_roots``."""
RUNTIME_BACKENDS = ("eager", "compile", "onnx", "tensorrt")
PRECISIONS = ("fp32", "bf16", "fp16")
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")


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
        _check_model("models.detector", self.detector, "deepfake")
        _check_model("models.adversarial", self.adversarial, "adversarial")
        if not is_bundled_face_detector(self.face_detector):
            from engine.faces import face_detector_cfg  # plugins, or the error naming all

            _wrap(
                "models.face_detector",
                self.face_detector,
                lambda: face_detector_cfg(self.face_detector),
            )


def _check_model(key: str, name: str, kind: str) -> None:
    """A bundled name is checked without torch (``engine.catalog``); others by the registry."""
    if is_bundled_model(name, kind):
        return
    from engine.models import model_cfg

    _wrap(key, name, lambda: model_cfg(name, kind))  # type: ignore[arg-type]


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
    guided_rule: str = "auto"
    """Guided Backprop's rule (``engine.xai.GUIDED_RULES``): ``captum`` is Captum's
    ``GuidedBackprop`` (the paper code's maps: on EfficientNet the plain gradient),
    ``textbook`` clamps each activation's own branch (every rectifier, SiLU included);
    ``auto`` is captum on ReLU networks (XceptionNet), textbook otherwise."""
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
        if self.guided_rule not in GUIDED_RULES:
            raise ConfigError("pipeline.guided_rule", self.guided_rule, " or ".join(GUIDED_RULES))
        _check_range("pipeline.ig_steps", self.ig_steps, 1, 1024)
        _check_range("pipeline.ig_internal_batch_size", self.ig_internal_batch_size, 0, 1 << 20)
        _check_range("pipeline.map_quantile", self.map_quantile, 0.5, 1.0)


@dataclass(frozen=True)
class RuntimeConfig:
    """How the networks run (``engine.runtime``): settings of speed, never of results.

    Every backend computes the same stages; they differ in float rounding only (ONNX and
    TensorRT are checked against eager when they are built).
    """

    backend: str = "eager"
    """``eager`` (PyTorch), ``compile`` (torch.compile; forward and XAI backward),
    ``onnx`` (ONNX Runtime; forward-only passes) or ``tensorrt`` (optional extra)."""
    precision: str = "fp32"
    """``fp32``, or autocast to ``bf16``/``fp16`` for the PyTorch passes (TensorRT: fp16
    kernels allowed for both)."""
    channels_last: bool = True
    """Run convolutions in NHWC memory format (tensor-core kernels on GPUs; on a CPU,
    oneDNN's NHWC kernels: measured 1.3-2x faster for XceptionNet, ``benchmarks/``)."""
    cuda_graphs: bool = True
    """``compile`` on CUDA: replay each batch bucket as a CUDA graph (mode reduce-overhead)."""
    compile_backend: str = "inductor"
    """``compile``: torch.compile backend (``aot_eager``/``eager`` are for debugging and tests)."""
    batch_buckets: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    """``compile``/``tensorrt``: faces per pass are padded up to the next bucket (fixed shapes:
    one compiled graph per bucket); larger batches run in chunks of the largest bucket."""
    fuse_classify_xai: bool = True
    """One forward of the detector with gradients gives p_fake and, by one backward, the
    XAI map (saliency, input x gradient, guided backprop; eager and compile backends)."""
    export_dir: str = ""
    """Where ONNX and TensorRT files are written and reused; empty = a temporary folder."""
    check_tolerance: float = 1e-3
    """ONNX/TensorRT: largest |logit difference| to eager accepted when a pass is built."""

    def __post_init__(self) -> None:
        if self.backend not in RUNTIME_BACKENDS:
            raise ConfigError("runtime.backend", self.backend, " or ".join(RUNTIME_BACKENDS))
        if self.precision not in PRECISIONS:
            raise ConfigError("runtime.precision", self.precision, " or ".join(PRECISIONS))
        if self.compile_backend not in COMPILE_BACKENDS:
            raise ConfigError(
                "runtime.compile_backend", self.compile_backend, " or ".join(COMPILE_BACKENDS)
            )
        buckets = self.batch_buckets
        if (
            not isinstance(buckets, list | tuple)
            or not buckets
            or not all(isinstance(b, int) and not isinstance(b, bool) for b in buckets)
            or list(buckets) != sorted(set(buckets))
            or not 1 <= buckets[0] <= buckets[-1] <= 4096
        ):
            raise ConfigError(
                "runtime.batch_buckets",
                buckets,
                "increasing integers from 1 to 4096, e.g. [1, 2, 4, 8, 16, 32, 64]",
            )
        object.__setattr__(self, "batch_buckets", tuple(buckets))
        _check_range("runtime.check_tolerance", self.check_tolerance, 0.0, 1.0)


@dataclass(frozen=True)
class QueueConfig:
    """The Redis job queue (``engine.queue``): keys, delivery, limits, live feeds."""

    prefix: str = "veritas:"
    """Prefix of every Redis key (``veritas:jobs``, ``veritas:job:<id>``, ...)."""
    concurrency: int = 4
    """Jobs one worker holds at once; their frames share batches."""
    claim_idle_s: float = 60.0
    """A job whose worker has not renewed its claim for this long is reclaimed."""
    heartbeat_s: float = 10.0
    """Workers renew the claims of their jobs this often (at most claim_idle_s / 2)."""
    max_attempts: int = 3
    """A job that fails this many times (an error its worker reported) goes to the dead
    stream."""
    max_worker_losses: int = 5
    """A job whose workers stop without reporting (killed, crashed, cut off) this many
    times in a row, with no frame recorded in between, goes to the dead stream: it may be
    what kills them. Losses in attempts that recorded frames are not counted."""
    max_queue_length: int = 10_000
    """``submit`` refuses new jobs while this many are waiting or running."""
    max_payload_bytes: int = 16_384
    """Job payloads over this size are refused without being decoded."""
    results_max_len: int = 100_000
    """Frame records kept per job; older ones are trimmed as new ones arrive."""
    results_ttl_s: float = 604_800.0
    """A finished job's hash and results expire this long after it ends (7 days)."""
    dead_max_len: int = 10_000
    """Entries kept in the dead-letter stream (oldest trimmed first)."""
    allowed_roots: tuple[str, ...] = ()
    """Folders whose files jobs may read; empty: no local files (URLs only)."""
    allowed_schemes: tuple[str, ...] = DEFAULT_ALLOWED_SCHEMES
    """URL schemes jobs may use."""
    max_job_duration_s: float = 0.0
    """Longest stream time a job may ask for; 0: no limit (live feeds run until cancelled)."""
    live_mode: str = "realtime"
    """Default mode of URL sources: ``realtime`` (drop frames when behind) or ``lossless``."""
    live_buffer_frames: int = 16
    """Frames a live feed buffers; in real-time mode the oldest is dropped beyond this."""
    live_max_lag_s: float = 2.0
    """Real-time mode's lag budget: a frame that arrived longer ago than this when it
    would be batched is dropped (and counted); 0: only the buffer bounds the lag."""
    live_open_timeout_s: float = 10.0
    """Give up connecting to a feed after this long (then back off and retry)."""
    live_read_timeout_s: float = 5.0
    """A feed that sends nothing for this long is dropped and reconnected."""
    live_reconnect_min_s: float = 0.5
    """First wait before reconnecting a dropped feed; doubles on each failure."""
    live_reconnect_max_s: float = 10.0
    """Longest wait between reconnection attempts."""
    live_give_up_s: float = 120.0
    """A feed that yields no frame for this long (reconnecting all along) fails its job."""
    live_first_frame_s: float = 30.0
    """Until a feed's first frame of an attempt, it fails after this long instead: a feed
    that never works holds a slot for at most this long per attempt."""
    live_max_clock_lead_s: float = 30.0
    """A feed timestamp further than this ahead of wall time (a timestamp wrap, an
    encoder restarted with another clock) is a discontinuity: the feed clock is
    re-anchored. Keep it above the burst a live HLS reader reads ahead (its first
    segments)."""
    live_stall_s: float = 1.5
    """A wait this long for a frame whose timestamp advanced by less (the publisher away
    behind a server that keeps the connection) is a stall: re-anchored and its frames
    counted as lost (not for live HLS); 0: off."""
    poll_s: float = 1.0
    """Longest a worker blocks waiting for jobs; also its reaction time to signals."""
    trim_interval_s: float = 30.0
    """How often a worker trims acknowledged jobs from the jobs stream."""
    stall_timeout_s: float = 300.0
    """A worker whose loop has not turned for this long stops renewing claims and
    reports unhealthy, so its jobs go to other workers."""
    consumer_ttl_s: float = 3_600.0
    """Consumers idle this long with no pending job are removed from the group."""
    metrics_port: int = 0
    """Port of a worker's /metrics and /healthz HTTP endpoint; 0: off."""

    def __post_init__(self) -> None:
        if not self.prefix or any(c.isspace() for c in self.prefix):
            raise ConfigError("queue.prefix", self.prefix, "a non-empty string without spaces")
        _check_range("queue.concurrency", self.concurrency, 1, 1024)
        _check_range("queue.claim_idle_s", self.claim_idle_s, 0.5, 86_400)
        _check_range("queue.heartbeat_s", self.heartbeat_s, 0.05, self.claim_idle_s / 2)
        _check_range("queue.max_attempts", self.max_attempts, 1, 1000)
        _check_range("queue.max_worker_losses", self.max_worker_losses, 1, 1000)
        _check_range("queue.max_queue_length", self.max_queue_length, 1, 1 << 40)
        _check_range("queue.max_payload_bytes", self.max_payload_bytes, 256, 1 << 26)
        _check_range("queue.results_max_len", self.results_max_len, 1, 1 << 40)
        _check_range("queue.results_ttl_s", self.results_ttl_s, 1, 10 * 365 * 86_400)
        _check_range("queue.dead_max_len", self.dead_max_len, 1, 1 << 40)
        for root in self.allowed_roots:
            if not root or not Path(root).is_absolute():
                raise ConfigError("queue.allowed_roots", root, "absolute folder paths")
        for scheme in self.allowed_schemes:
            if not scheme.isascii() or not scheme.isalnum() or scheme != scheme.lower():
                raise ConfigError("queue.allowed_schemes", scheme, "lower-case URL schemes")
        _check_range("queue.max_job_duration_s", self.max_job_duration_s, 0, 1e12)
        if self.live_mode not in LIVE_MODES:
            raise ConfigError("queue.live_mode", self.live_mode, " or ".join(LIVE_MODES))
        _check_range("queue.live_buffer_frames", self.live_buffer_frames, 1, 4096)
        _check_range("queue.live_max_lag_s", self.live_max_lag_s, 0, 3600)
        _check_range("queue.live_open_timeout_s", self.live_open_timeout_s, 0.1, 3600)
        _check_range("queue.live_read_timeout_s", self.live_read_timeout_s, 0.1, 3600)
        _check_range("queue.live_reconnect_min_s", self.live_reconnect_min_s, 0.01, 3600)
        _check_range(
            "queue.live_reconnect_max_s",
            self.live_reconnect_max_s,
            self.live_reconnect_min_s,
            3600,
        )
        _check_range("queue.live_give_up_s", self.live_give_up_s, 0.1, 1e9)
        _check_range("queue.live_first_frame_s", self.live_first_frame_s, 0.1, 1e9)
        _check_range("queue.live_max_clock_lead_s", self.live_max_clock_lead_s, 1, 1e9)
        _check_range("queue.live_stall_s", self.live_stall_s, 0, 3600)
        _check_range("queue.poll_s", self.poll_s, 0.05, 10)
        _check_range("queue.trim_interval_s", self.trim_interval_s, 0.1, 86_400)
        _check_range("queue.stall_timeout_s", self.stall_timeout_s, 1, 86_400)
        _check_range("queue.consumer_ttl_s", self.consumer_ttl_s, 1, 1e9)
        _check_range("queue.metrics_port", self.metrics_port, 0, 65_535)


@dataclass(frozen=True)
class EventsConfig:
    """``[events]``: when a verdict counts as persisting on a stream (engine.events)."""

    window_s: float = 3.0
    """A verdict persists when, over this many seconds of the stream, ..."""
    min_frames: int = 5
    """... at least this many frames ..."""
    ratio: float = 0.5
    """... and at least this share of the frames have it; the event ends when no frame
    had it for ``window_s``."""
    update_s: float = 10.0
    """An event in progress sends an update this often (stream seconds)."""
    max_len: int = 10_000
    """Events kept in the ``veritas:events`` stream (oldest trimmed first)."""
    maps: bool = True
    """Thumbnails show the face's XAI map beside it; the pipeline then hands every
    batch's maps to the host (on a GPU a device-to-host copy per batch: set false
    there to save it, and thumbnails show the face only)."""
    webhook_url: str = ""
    """Also POST each event as JSON here (http or https); empty: no webhook."""
    webhook_queue: int = 100
    """Events waiting for the webhook at most (the oldest dropped beyond, counted)."""
    webhook_retries: int = 5
    """Retries of an event after a connection error, a timeout, a 5xx or a 429."""
    webhook_timeout_s: float = 5.0
    """Timeout of one POST."""

    def __post_init__(self) -> None:
        _check_range("events.window_s", self.window_s, 0.04, 3600)
        _check_range("events.min_frames", self.min_frames, 1, 100_000)
        _check_range("events.ratio", self.ratio, 0.01, 1.0)
        _check_range("events.update_s", self.update_s, 0.1, 86_400)
        _check_range("events.max_len", self.max_len, 1, 10_000_000)
        if self.webhook_url and not self.webhook_url.startswith(("http://", "https://")):
            raise ConfigError("events.webhook_url", self.webhook_url, "an http(s):// URL")
        _check_range("events.webhook_queue", self.webhook_queue, 1, 1_000_000)
        _check_range("events.webhook_retries", self.webhook_retries, 0, 100)
        _check_range("events.webhook_timeout_s", self.webhook_timeout_s, 0.1, 600)


@dataclass(frozen=True)
class Config:
    models: ModelsConfig = field(default_factory=ModelsConfig)
    faces: DetectionSettings = field(default_factory=DetectionSettings)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    sources: SourceSettings = field(default_factory=SourceSettings)
    queue: QueueConfig = field(default_factory=QueueConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    events: EventsConfig = field(default_factory=EventsConfig)

    def __post_init__(self) -> None:
        limit = self.sources.max_frame_pixels
        for (height, width), size in zip(
            self.faces.warm_sizes, self.faces.warm_frame_sizes, strict=True
        ):
            if height * width > limit:  # a frame the sources would refuse
                raise ConfigError(
                    "faces.warm_frame_sizes", size, f"sizes within sources.max_frame_pixels {limit}"
                )

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
    """Check ``value`` against a field's type hint (int, float, str, bool, X | None,
    tuple[str, ...])."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(key, value, "a list of strings")
        return tuple(_coerce(key, v, args[0]) for v in value)
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
