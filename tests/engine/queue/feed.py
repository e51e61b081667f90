"""A live MPEG-TS feed for tests: ``python -m tests.engine.queue.feed URL [--fps 25]``.

Encodes a moving pattern (H.264, a keyframe every 10 frames, no encoder delay) and sends
it to ``URL`` in real time, paced by the clock, until killed: ``tcp://HOST:PORT?listen=1``
waits for a receiver to connect, as a broadcast server does, and waits for the next one
when a receiver goes away; ``udp://HOST:PORT`` sends datagrams whether anyone listens or
not. ``--faces`` sends a real face photo instead (slow to analyse: a real-time job falls
behind and drops frames).
"""

from __future__ import annotations

import argparse
import sys
import time

import av
import av.error
import numpy as np

from tests.media import face_frames, moving_pattern


def send(url: str, frames: list[np.ndarray], fps: int) -> None:
    """Send until the receiver goes away (an error) or forever."""
    size = frames[0].shape[0]
    with av.open(url, "w", format="mpegts", container_options={"flush_packets": "1"}) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "tune": "zerolatency", "g": "10"}
        start = None
        i = 0
        while True:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i % len(frames)]))
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)  # the first mux opens the output (and waits for a receiver)
            start = start if start is not None else time.monotonic()
            i += 1
            delay = start + i / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # real-time pacing, as a broadcast


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--faces", action="store_true", help="a real face instead")
    args = parser.parse_args(argv)
    if args.faces:
        frames = face_frames(50, args.size)
    else:
        frames = moving_pattern(50, args.size, args.size)
    while True:
        try:
            send(args.url, frames, args.fps)
        except (av.error.FFmpegError, OSError):
            time.sleep(0.05)  # the receiver left: serve the next one


if __name__ == "__main__":
    sys.exit(main())
