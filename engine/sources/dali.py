"""Video files decoded with NVIDIA DALI, every open file in one pipeline (batched across streams).

DALI decodes:

* on a GPU (``"mixed"`` placement: compressed data in host memory, frames out in device
  memory, NVDEC): H.264, HEVC, AV1, MPEG-4, VP8, VP9, MJPEG. Frames stay on the GPU as
  uint8 torch tensors, so a batch never crosses to the host;
* on the CPU (libavcodec): VP8, VP9 and MJPEG only (the CPU build refuses
  H.264/HEVC/MPEG-4 for licensing reasons). This is how CI tests the DALI path.

**One pipeline for all the streams.** A :class:`DaliStreamGroup` (one per placement and
device, shared by every :class:`DaliVideoSource` of the process) owns one DALI pipeline
of :data:`SLOTS` stateful ``fn.experimental.inputs.video`` decoders. Each open file takes
a slot: its bytes (memory-mapped, not read into memory) are fed to the slot's decoder,
and every pipeline run decodes the next :data:`SEQUENCE_LENGTH` frames of *every*
stream in one step. The group's own thread (``veritas-dali``) runs the pipeline ahead of
the sources' reader threads, which take their sequences as they come. A run waits
while a stream that is still being read holds :data:`AHEAD` undelivered sequences, so
memory stays bounded. Files beyond :data:`SLOTS` wait for a free slot.

A pipeline run must find input in every slot, so an idle slot — and the place behind
each file — is fed :data:`FILLER`, a one-frame 144×144 VP9 clip (decodable by NVDEC
and the CPU decoder alike) whose output is thrown away. Which output belongs to which
file is known by counting: each file's frames are counted (by demuxing, no decoding)
when it is opened, and every sequence is checked against the expected count and frame
size. A slot whose decoder disagrees with the count is retired and its stream fails
with :class:`~engine.errors.CorruptStreamError`.

Why not a stateless batch decoder: ``fn.decoders.video(start_frame=...)`` decodes a batch
of windows from many files in one run, but measured on DALI 2.4's CPU decoder each run
costs time proportional to the window's position in the file, whatever the keyframe
spacing, so a long file would cost quadratic time (``python -m benchmarks.dali_decode``;
the figures are in README). A stateful decoder goes through its file once.

Before decoding, the file is probed with PyAV (container, codec, frame rate, frame-size
limit), so errors for unreadable files and oversized frames are the same as
:class:`~engine.sources.video.VideoFileSource`'s. Timestamps are ``index / fps``: DALI's
decoders assume a constant frame rate. A source closed before its end keeps its slot
until the decoder has passed the file's end (the pipeline cannot cancel one input), its
frames thrown away; when no stream being read is left, the pipeline is dropped.

``sources.decoder = "dali"`` reads files with it (GPU when CUDA is available, else the
CPU decoder; an error for a codec it cannot decode); what ``auto`` picks is
:func:`engine.sources.decoders.choose_decoder`'s rule.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import threading
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch

from engine.errors import CorruptStreamError, EmptySourceError, SourceError
from engine.sources.base import DecodedFrame, DecodingSource
from engine.sources.decoders import DALI_GPU_CODECS, installed
from engine.sources.settings import SourceSettings
from engine.sources.video import VideoFileSource

log = logging.getLogger(__name__)

CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
"""Codecs (FFmpeg names) DALI's CPU video decoder accepts."""

GPU_CODECS = DALI_GPU_CODECS
"""Codecs DALI decodes on a GPU (NVDEC)."""

SEQUENCE_LENGTH = 8
"""Frames per stream a pipeline run decodes."""

SLOTS = 16
"""Streams one pipeline decodes at once; more wait for a free slot."""

AHEAD = 2
"""Sequences a stream may hold decoded and not yet read before the runs wait for it."""

FILLER = base64.b64decode(
    "GkXfo59ChoEBQveBAULygQRC84EIQoKEd2VibUKHgQJChYECGFOAZwEAAAAAAAIBEU2bdLpNu4tTq4QV"
    "SalmU6yBoU27i1OrhBZUrmtTrIHYTbuMU6uEElTDZ1OsggEbTbuMU6uEHFO7a1OsggHr7AEAAAAAAABZ"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAVSalmsirXsYMPQkBNgI1MYXZmNjIuMTIuMTAyV0GN"
    "TGF2ZjYyLjEyLjEwMkSJiEBEAAAAAAAAFlSua76uAQAAAAAAADXXgQFzxYg9Wv9qKXHpR5yBACK1nIN1"
    "bmSIgQCGhVZfVlA5g4EBI+ODhAJiWgDghrCBkLqBkBJUw2fYc3OgY8CAZ8iaRaOHRU5DT0RFUkSHjUxh"
    "dmY2Mi4xMi4xMDJzc7JjwItjxYg9Wv9qKXHpR2fIoUWjiERVUkFUSU9ORIeTMDA6MDA6MDAuMDQwMDAw"
    "MDAwAB9DtnXu54EAo+mBAACAgkmDQgAI8Aj2BDgkHBgeAADAR9j9Ygzb6T1+pAAAa0AeAZ9Di0KLH+GJ"
    "A5+R156eEboD/qNAyEFoT+lmeHsdO4deKU3BnbTBidKtdy1JAehnUzFmQAnBTgN1U0pkaIyXa7lKaQAc"
    "U7trkbuPs4EAt4r3gQHxggF48IED"
)
"""A one-frame 144×144 black VP9 WebM clip (561 bytes, encoded with libvpx-vp9): the input
of idle slots. 144 px is above NVDEC's smallest VP9/HEVC picture."""

FILLER_SHAPE = (1, 144, 144, 3)
"""The decoded filler: one sequence of one frame."""


class DaliUnavailableError(SourceError):
    def __init__(self, source: str, reason: str) -> None:
        super().__init__(source, f"DALI cannot decode it: {reason}", 'set sources.decoder = "pyav"')


def dali_available() -> bool:
    """Whether the ``nvidia.dali`` package is installed (``nvidia-dali-cuda130``)."""
    return installed("nvidia.dali")


@dataclass(eq=False)
class _Ticket:
    """One file's place in a group: what it is, what has been decoded for it."""

    name: str
    path: str
    frames: int
    """Frames in the file (counted at open)."""
    size: tuple[int, int]
    """(height, width) of its frames."""
    sequences: deque = field(default_factory=deque)
    """Decoded sequences not yet read: numpy (F, H, W, 3) or a CUDA tensor."""
    decoded: int = 0
    """Frames decoded for it so far."""
    slot: int | None = None
    thread: int = field(default_factory=threading.get_ident)
    """The thread reading it (the one that opened it)."""
    closed: bool = False
    error: SourceError | None = None

    @property
    def finished(self) -> bool:
        return self.decoded >= self.frames or self.error is not None

    @property
    def live(self) -> bool:
        """Being read: decoding for it is of use."""
        return not (self.closed or self.finished)


@dataclass
class _Entry:
    """One input queued in a slot's decoder: a file (its ticket) or the filler (None)."""

    ticket: _Ticket | None
    left: int
    """Sequences the decoder still owes for it."""
    data: np.ndarray
    """The bytes fed (DALI reads them in place: kept alive until it has moved past them)."""


@dataclass
class _Slot:
    entries: deque = field(default_factory=deque)
    """The slot decoder's inputs, oldest first, as fed (a mirror of DALI's own queue)."""
    retired: bool = False
    """Its decoder disagreed with the count: fed the filler each run, outputs ignored."""

    def holds_file(self) -> bool:
        return any(e.ticket is not None for e in self.entries)


class DaliStreamGroup:
    """One DALI pipeline decoding the files of up to ``slots`` streams (see the module doc).

    Args:
        placement: ``"cpu"`` or ``"gpu"``.
        device: where the frames come out (the GPU's torch device, or CPU).
        slots: streams decoded at once.
        threads: DALI's CPU threads.
    """

    def __init__(
        self, placement: str, device: torch.device, slots: int = SLOTS, threads: int = 2
    ) -> None:
        self.placement = placement
        self.device = device
        self.threads = threads
        self.runs = 0
        """Pipeline runs so far (each decodes one sequence of every slot)."""
        self._slots = [_Slot() for _ in range(slots)]
        self._waiting: deque[_Ticket] = deque()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None  # runs the pipeline while files are read
        self._pipe = None  # nvidia.dali.Pipeline, built at the first run
        self._spent: list[np.ndarray] = []  # inputs finished at the last run
        self._retained: list[np.ndarray] = []  # inputs of retired slots: kept to the reset

    # --- the sources' side --------------------------------------------------------------

    def open(self, name: str, path: str, frames: int, size: tuple[int, int]) -> _Ticket:
        """Queue a file of ``frames`` frames of ``size`` (height, width) for decoding."""
        ticket = _Ticket(name, path, frames, size)
        with self._cv:
            self._waiting.append(ticket)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._decode_loop, name="veritas-dali", daemon=True
                )
                self._thread.start()
            self._cv.notify_all()
        return ticket

    def read(self, ticket: _Ticket) -> np.ndarray | torch.Tensor | None:
        """The ticket's next sequence ``(F, H, W, 3)``, or None after its last frame.

        Raises:
            SourceError: its decoding failed.
        """
        with self._cv:
            while True:
                if ticket.sequences:
                    self._cv.notify_all()  # a run may have waited for this read
                    return ticket.sequences.popleft()
                if ticket.error is not None:
                    raise ticket.error
                if ticket.finished:
                    return None
                if ticket.slot is None and not any(not s.retired for s in self._slots):
                    raise DaliUnavailableError(ticket.name, "every DALI decoder slot is retired")
                held = [t for t in self._blocking() if t.thread == threading.get_ident()]
                if held:  # only this thread could read it: waiting would never end
                    raise SourceError(
                        ticket.name,
                        f"its DALI decoding waits for {held[0].name}, which this same "
                        "thread does not read (the streams share one pipeline)",
                        "read DALI sources one after another, or each in its own thread",
                    )
                self._cv.wait(0.5)  # the decode thread notifies after each run

    def leave(self, ticket: _Ticket) -> None:
        """The source is done with ``ticket`` (read to its end, failed or closed)."""
        with self._cv:
            ticket.closed = True
            ticket.sequences.clear()
            if ticket in self._waiting:
                self._waiting.remove(ticket)
            self._cv.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is read and the pipeline is dropped; whether it is."""
        with self._cv:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self._thread is None

    # --- the decode thread --------------------------------------------------------------

    def _decode_loop(self) -> None:
        """Run the pipeline while a file is read and no reader is AHEAD sequences behind;
        when nothing is read any more, free the decoders (and their device memory)."""
        with self._cv:
            while True:
                if not self._waiting and not any(self._live_slots()):
                    self._reset()
                    self._thread = None
                    return
                if self._blocking():
                    self._cv.wait(0.5)  # a read notifies
                    continue
                self._run()

    # --- the runs (in the decode thread, with the lock held) ----------------------------

    def _live_slots(self) -> Generator[_Slot, None, None]:
        return (s for s in self._slots if any(e.ticket and e.ticket.live for e in s.entries))

    def _blocking(self) -> list[_Ticket]:
        """The streams still read that hold AHEAD sequences: runs wait for their readers
        (bounded memory)."""
        return [
            entry.ticket
            for slot in self._slots
            for entry in slot.entries
            if entry.ticket is not None
            and not entry.ticket.closed
            and len(entry.ticket.sequences) >= AHEAD
        ]

    def _run(self) -> None:
        """Feed every slot, run the pipeline once, hand each sequence to its stream."""
        feeds = self._plan()
        outputs: list | None = None
        failure: Exception | None = None
        self._cv.release()
        try:
            pipe = self._pipeline()
            for k, inputs in feeds:
                for data in inputs:
                    pipe.feed_input(f"slot{k}", [data])
            outputs = [self._take(out) for out in pipe.run()]
            if self.placement == "gpu":  # the copies are done before a reader uses them
                torch.cuda.current_stream(self.device).synchronize()
        except Exception as error:  # DALI reports decoding failures as RuntimeError
            failure = error
        finally:
            pipe = None  # a reset below must destroy the pipeline before its inputs
            self._cv.acquire()
            self.runs += 1
            self._cv.notify_all()
        if outputs is None:
            assert failure is not None
            self._fail_all(failure)
        else:
            self._distribute(outputs)

    def _plan(self) -> list[tuple[int, list]]:
        """What to feed each slot before a run: waiting files take free slots (those
        whose decoder holds no file), files get the filler behind them, and a slot
        with nothing queued gets the filler."""
        feeds: list[tuple[int, list]] = []
        for k, slot in enumerate(self._slots):
            inputs: list = []
            if slot.retired:
                inputs.append(_filler())
            else:
                if not slot.holds_file() and self._waiting:
                    ticket = self._waiting.popleft()
                    ticket.slot = k
                    data = np.memmap(ticket.path, dtype=np.uint8, mode="r")
                    sequences = math.ceil(ticket.frames / SEQUENCE_LENGTH)
                    slot.entries.append(_Entry(ticket, sequences, data))
                    slot.entries.append(_Entry(None, 1, _filler()))
                    inputs += [e.data for e in list(slot.entries)[-2:]]
                if not slot.entries:
                    slot.entries.append(_Entry(None, 1, _filler()))
                    inputs.append(slot.entries[-1].data)
            if inputs:
                feeds.append((k, inputs))
        return feeds

    def _take(self, output: object) -> tuple[tuple[int, ...], object]:
        """A slot's output: its shape, and the sequence copied out of DALI's buffer (DALI
        reuses it at the next run); the copy is made where the frames are kept."""
        if self.placement == "gpu":
            from nvidia.dali.plugin.pytorch import feed_ndarray

            tensor = output.as_tensor()  # type: ignore[attr-defined]
            shape = tuple(tensor.shape())[1:]
            if shape == FILLER_SHAPE:
                return shape, None
            out = torch.empty(tensor.shape(), dtype=torch.uint8, device=self.device)
            stream = torch.cuda.current_stream(self.device).cuda_stream
            feed_ndarray(tensor, out, cuda_stream=stream)
            return shape, out[0]
        tensor = output.at(0)  # type: ignore[attr-defined]
        shape = tuple(tensor.shape)
        return shape, None if shape == FILLER_SHAPE else np.array(tensor, copy=True)

    def _distribute(self, outputs: list[tuple[tuple[int, ...], object]]) -> None:
        self._spent = []  # the run just made has moved past the inputs finished before it
        for slot, (shape, frames) in zip(self._slots, outputs, strict=True):
            if slot.retired:
                continue
            entry = slot.entries[0]
            ticket = entry.ticket
            if ticket is None:
                if shape != FILLER_SHAPE:
                    self._retire(slot, f"a sequence {shape} where the filler was due")
                    continue
            else:
                expected = (min(SEQUENCE_LENGTH, ticket.frames - ticket.decoded), *ticket.size, 3)
                if shape != expected:
                    self._retire(slot, f"a sequence {shape} where {expected} was due", ticket)
                    continue
                ticket.decoded += shape[0]
                if not ticket.closed:
                    ticket.sequences.append(frames)
            entry.left -= 1
            if entry.left == 0:
                self._spent.append(slot.entries.popleft().data)

    def _retire(self, slot: _Slot, detail: str, ticket: _Ticket | None = None) -> None:
        """The slot's decoder and our count disagree: its queue is no longer known."""
        log.warning("DALI decoder slot retired: %s", detail)
        slot.retired = True
        for entry in slot.entries:
            other = entry.ticket
            if other is None or other.finished:
                continue
            if other is ticket or other.decoded:
                other.error = CorruptStreamError(
                    other.name, other.decoded - 1, f"DALI's decoder disagrees: {detail}"
                )
            else:  # queued behind, not started: it goes back to wait for another slot
                other.slot = None
                self._waiting.appendleft(other)
        self._retained += [entry.data for entry in slot.entries]  # still in DALI's queue
        slot.entries.clear()

    def _fail_all(self, error: Exception) -> None:
        """A failed run leaves every decoder's state unknown: each stream in a slot fails,
        and the next run starts a new pipeline."""
        detail = str(error).strip().splitlines()[-1][:200] if str(error).strip() else repr(error)
        log.warning("DALI pipeline run failed: %s", detail)
        for slot in self._slots:
            for entry in slot.entries:
                ticket = entry.ticket
                if ticket is None or ticket.finished:
                    continue
                if ticket.decoded == 0:
                    ticket.error = EmptySourceError(
                        ticket.name, f"no decodable video frame ({detail})"
                    )
                else:
                    ticket.error = CorruptStreamError(ticket.name, ticket.decoded - 1, detail)
        self._reset()

    def _reset(self) -> None:
        self._pipe = None  # destroyed here (the only reference), before the inputs it reads
        self._spent, self._retained = [], []
        for slot in self._slots:
            slot.entries.clear()
            slot.retired = False

    def _pipeline(self):  # -> nvidia.dali.Pipeline; imported lazily (DALI is optional)
        if self._pipe is not None:
            return self._pipe
        from nvidia.dali import fn, pipeline_def

        @pipeline_def(
            batch_size=1,
            num_threads=self.threads,
            device_id=(self.device.index or 0) if self.placement == "gpu" else None,
            prefetch_queue_depth=1,
            exec_async=False,
            exec_pipelined=False,
        )
        def graph():  # type: ignore[no-untyped-def]
            return tuple(
                fn.experimental.inputs.video(
                    name=f"slot{k}",
                    device="mixed" if self.placement == "gpu" else "cpu",
                    sequence_length=SEQUENCE_LENGTH,
                    last_sequence_policy="partial",
                    no_copy=True,
                )
                for k in range(len(self._slots))
            )

        pipe = graph()
        pipe.build()
        self._pipe = pipe
        return pipe


def _filler() -> np.ndarray:
    return np.frombuffer(FILLER, dtype=np.uint8)


_groups: dict[tuple[str, int], DaliStreamGroup] = {}
_groups_lock = threading.Lock()


def stream_group(placement: str, device: torch.device, threads: int = 2) -> DaliStreamGroup:
    """The process's group for a placement and device (created at first use)."""
    key = (placement, (device.index or 0) if placement == "gpu" else -1)
    with _groups_lock:
        group = _groups.get(key)
        if group is None:
            group = _groups[key] = DaliStreamGroup(placement, device, threads=threads)
        return group


class DaliVideoSource(DecodingSource):
    """A video file decoded by DALI, in the process's shared pipeline (see the module doc).

    Args:
        path: the file.
        settings: sampling and limits (``decoder`` is not consulted here).
        name: the input as the user gave it (default: ``path``).
        device: ``"auto"`` (the GPU when CUDA is available), ``"cpu"`` or ``"cuda[:N]"``.
        group: the pipeline to decode in (default: the process's for that device).

    Raises:
        NotAVideoError, FrameTooLargeError: as :class:`VideoFileSource` (PyAV probe).
        EmptySourceError: the file holds no video frames.
        DaliUnavailableError: DALI is not installed, cannot decode the codec there, or the
            file declares no frame rate.
    """

    decoder = "dali"

    def __init__(
        self,
        path: str | os.PathLike[str],
        settings: SourceSettings | None = None,
        name: str | None = None,
        device: str | torch.device = "auto",
        group: DaliStreamGroup | None = None,
    ) -> None:
        settings = settings or SourceSettings()
        super().__init__(name if name is not None else str(path), settings)
        self.path = os.fspath(path)
        probe = VideoFileSource(path, settings, name=self.name)
        try:
            self.codec = _codec(probe)
            self.nominal_fps = probe.nominal_fps
            context = probe._stream.codec_context
            self._size = (int(context.height), int(context.width))
            self._count = _count_frames(probe)
        finally:
            probe.close()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        placement = "gpu" if self.device.type == "cuda" else "cpu"
        if not dali_available():
            raise DaliUnavailableError(self.name, "nvidia-dali-cuda130 is not installed")
        supported = GPU_CODECS if placement == "gpu" else CPU_CODECS
        if self.codec not in supported:
            raise DaliUnavailableError(
                self.name,
                f"its codec {self.codec} needs a GPU (the CPU decoder takes "
                f"{', '.join(sorted(CPU_CODECS))})",
            )
        if not self.nominal_fps:
            raise DaliUnavailableError(self.name, "it declares no frame rate")
        if self._count == 0:
            raise EmptySourceError(self.name, "the video stream holds no frames")
        self.placement = placement
        self.group = group or stream_group(
            placement, self.device, max(1, settings.decode_threads or 2)
        )
        self._ticket: _Ticket | None = None
        log.info(
            "%s: DALI %s decoder, %s, %d frames", self.name, placement, self.codec, self._count
        )

    def _declared_extent(self) -> tuple[int | None, float | None]:
        assert self.nominal_fps
        return self._count, self._count / self.nominal_fps

    def _decode(self) -> Generator[DecodedFrame, None, None]:
        assert self.nominal_fps
        ticket = self._ticket = self.group.open(self.name, self.path, self._count, self._size)
        height, width = self._size
        index = 0
        while (frames := self.group.read(ticket)) is not None:
            for j in range(len(frames)):
                yield DecodedFrame(
                    index, index / self.nominal_fps, width, height, partial(_frame, frames, j)
                )
                index += 1

    def _release(self) -> None:
        if self._ticket is not None:
            self.group.leave(self._ticket)


def _frame(frames: np.ndarray | torch.Tensor, j: int) -> np.ndarray | torch.Tensor:
    return frames[j]  # a view of the sequence's own copy


def _codec(probe: VideoFileSource) -> str:
    """FFmpeg's name of the probed file's video codec (``h264``, ``vp9``, ...)."""
    return str(probe._stream.codec_context.name)


def _count_frames(probe: VideoFileSource) -> int:
    """The video stream's frames, counted by demuxing the whole file (no decoding)."""
    assert probe._container is not None
    return sum(1 for packet in probe._container.demux(probe._stream) if packet.size)
