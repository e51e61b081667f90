"""DALI decoding costs: why files share one pipeline of stateful decoders.

``python -m benchmarks.dali_decode`` (needs ``nvidia-dali-cuda130`` and PyAV) encodes one
VP9 clip and measures, on DALI's CPU decoder (or ``--device cuda``: NVDEC):

* **stateless windows** — ``fn.decoders.video`` given the whole file and a start frame,
  the way one pipeline could batch windows of many files: the time of one 8-frame window
  at several positions in the file;
* **shared pipeline** — ``engine.sources.dali.DaliStreamGroup`` with ``--streams`` files
  read at once, each in its own thread: wall time, pipeline runs, time per run;
* **one pipeline per file** — the same files, each in a group of one slot (what the DALI
  source did before the group): wall time.

It prints a Markdown table; ``--json FILE`` also writes the figures. A benchmark, not a
test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.synthetic import stream_frames
from engine.sources.dali import SEQUENCE_LENGTH, DaliStreamGroup, DaliVideoSource


def encode_clip(path: Path, frames: int, size: int, keyframe_every: int) -> Path:
    from engine.video import VideoWriter  # PyAV encodes it

    with VideoWriter(path, 25, codec="libvpx-vp9", options={"g": str(keyframe_every)}) as out:
        for image in stream_frames(frames, size, size):
            out.write(image)
    return path


def window_ms(path: Path, starts: list[int], placement: str, repeats: int = 3) -> dict[int, float]:
    """Best time of one stateless ``fn.decoders.video`` window at each start frame."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(
        batch_size=1,
        num_threads=2,
        device_id=0 if placement == "gpu" else None,
        prefetch_queue_depth=1,
        exec_async=False,
        exec_pipelined=False,
    )
    def graph():  # type: ignore[no-untyped-def]
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, no_copy=True)
        start = fn.external_source(name="start", dtype=types.INT32)
        device = "mixed" if placement == "gpu" else "cpu"
        return fn.decoders.video(
            encoded, device=device, start_frame=start, sequence_length=SEQUENCE_LENGTH
        )

    pipe = graph()
    pipe.build()
    data = np.fromfile(path, dtype=np.uint8)
    best: dict[int, float] = {}
    for start in starts:
        times = []
        for _ in range(repeats):
            pipe.feed_input("encoded", [data])
            pipe.feed_input("start", [np.array(start, dtype=np.int32)])
            began = time.perf_counter()
            pipe.run()
            times.append(time.perf_counter() - began)
        best[start] = min(times) * 1000
    return best


def read_all(paths: list[Path], groups: list[DaliStreamGroup], device: str) -> float:
    """Seconds to read every file to its end, each in its own thread."""
    sources = [
        DaliVideoSource(p, device=device, group=g) for p, g in zip(paths, groups, strict=True)
    ]

    def drain(source: DaliVideoSource) -> None:
        with source:
            for _ in source:
                pass

    threads = [threading.Thread(target=drain, args=(s,)) for s in sources]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=600, help="frames in the clip")
    parser.add_argument("--size", type=int, default=256, help="frame side in pixels")
    parser.add_argument("--keyframe-every", type=int, default=25, help="frames per keyframe")
    parser.add_argument("--streams", type=int, default=4, help="files read at once")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    placement = "gpu" if args.device.startswith("cuda") else "cpu"
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        clip = encode_clip(Path(folder) / "clip.webm", args.frames, args.size, args.keyframe_every)
        n = args.frames
        starts = sorted({0, n // 4, n // 2, max(0, n - 2 * SEQUENCE_LENGTH)})
        windows = window_ms(clip, starts, placement)
        paths = [clip] * args.streams
        shared = DaliStreamGroup(placement, device, slots=args.streams)
        shared_s = read_all(paths, [shared] * args.streams, args.device)
        alone = [DaliStreamGroup(placement, device, slots=1) for _ in paths]
        alone_s = read_all(paths, alone, args.device)
    figures = {
        "clip": {"frames": n, "size": args.size, "keyframe_every": args.keyframe_every},
        "device": args.device,
        "stateless_window_ms": windows,
        "streams": args.streams,
        "shared_pipeline_s": shared_s,
        "shared_pipeline_runs": shared.runs,
        "shared_ms_per_run": shared_s / shared.runs * 1000,
        "one_pipeline_per_file_s": alone_s,
    }
    print(
        f"VP9 {args.size}x{args.size}, {n} frames, a keyframe every {args.keyframe_every}, "
        f"DALI on {args.device}\n"
    )
    print("| stateless window (8 frames) at frame | ms |\n| ---: | ---: |")
    for start, ms in windows.items():
        print(f"| {start} | {ms:.1f} |")
    frames_total = n * args.streams
    print(
        f"\n| {args.streams} files read at once | s | frames/s | runs |\n"
        "| --- | ---: | ---: | ---: |"
    )
    print(f"| shared pipeline | {shared_s:.2f} | {frames_total / shared_s:.0f} | {shared.runs} |")
    runs_alone = sum(g.runs for g in alone)
    print(
        f"| one pipeline per file | {alone_s:.2f} | {frames_total / alone_s:.0f} | {runs_alone} |"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
