"""Real streaming servers on loopback for the live-feed tests.

Each class starts real third-party software as child processes and stops it in
``stop()`` (the fixtures call it after every test): GStreamer's RTSP server (scripted
from the system Python, where Debian's ``python3-gi`` lives) fed RTP by an ``ffmpeg``
publisher, nginx with the RTMP module (a private configuration, ``daemon off``) fed by
an ``ffmpeg`` publisher, ``srt-live-transmit`` relaying an ``ffmpeg`` SRT publisher
(encrypted), and ``ffmpeg`` writing a sliding live HLS playlist behind ``python3 -m
http.server``. ``make test`` installs the Debian packages (``make live-servers``).
Publishers send a clip made by the test (a real face photo, a keyframe every second)
in a loop, in real time, with timestamps starting at 0 on every start, as an encoder
does; each can be killed and restarted behind a server that stays up.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from engine.video import VideoWriter
from tests.media import face_frames

SYSTEM_PYTHON = "/usr/bin/python3"
NGINX_RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")


def free_port() -> int:
    """A loopback port free for TCP *and* UDP: SRT, RTP and MPEG-TS over UDP listen on
    UDP, where a port the kernel just called free for TCP may be taken (a flake seen
    once: the SRT listener test's port was in use for UDP)."""
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def missing(*programs: str) -> list[str]:
    return [p for p in programs if shutil.which(p) is None and not Path(p).exists()]


CLIP_SIZE = 160
"""Frame size of the face the servers send (Haar finds it in every frame)."""


def face_clip(folder: Path, seconds: float = 4.0, size: int = CLIP_SIZE, fps: int = 25) -> Path:
    """An H.264 clip of a moving face, a keyframe every second (what publishers loop)."""
    path = folder / "face.mp4"
    if not path.exists():
        frames = face_frames(int(seconds * fps), size)
        with VideoWriter(path, fps, keyframe_s=1.0, options={"tune": "zerolatency"}) as out:
            for frame in frames:
                out.write(frame)
    return path


class Process:
    """A child process whose output goes to a log file in the test's folder;
    ``respawn``: started again whenever it exits, until stopped (an SRT listener serves
    one caller and exits when it leaves; a contribution encoder listens again)."""

    def __init__(self, name: str, argv: list[str], log: Path, respawn: bool = False) -> None:
        self.name, self.argv, self.log_path, self.respawn = name, argv, log, respawn
        self.process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._wanted = False

    def start(self) -> Process:
        self.stop()
        with self._lock:
            self._wanted = True
            self._spawn()
        if self.respawn:
            threading.Thread(target=self._watch, daemon=True).start()
        return self

    def _spawn(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def _watch(self) -> None:
        while True:
            time.sleep(0.2)
            with self._lock:
                if not self._wanted:
                    return
                if self.process is not None and self.process.poll() is not None:
                    self._spawn()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        with self._lock:
            self._wanted = False
            p, self.process = self.process, None
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(10)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


def publisher(
    clip: Path, url: str, fmt: str, log: Path, *extra: str, respawn: bool = False
) -> Process:
    """``ffmpeg`` sending ``clip`` in a loop, in real time, to ``url``."""
    argv = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "warning", "-re",
            "-stream_loop", "-1", "-i", str(clip), "-map", "0:v:0", "-c", "copy",
            *extra, "-f", fmt, url]  # fmt: skip
    return Process(f"ffmpeg -> {fmt}", argv, log, respawn)


def wait_port(port: int, timeout: float, process: Process) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.alive(), f"{process.name} exited:\n{process.logs()}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{process.name} did not listen on {port} in {timeout} s")


class Server:
    """A protocol's server and its publisher ``pub``: ``url`` for Veritas to read;
    ``restart_server`` kills and restarts what Veritas connects to; ``stop_publisher``
    and ``start_publisher`` kill and restart only the encoder behind a server that
    stays up (where the two are apart)."""

    protocol = ""
    publisher_apart = True
    """Whether the publisher is a process apart from the server Veritas connects to."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.clip = face_clip(folder)
        self.processes: list[Process] = []
        self.pub: Process | None = None
        """The encoder (set by each server)."""

    url = ""

    def start(self) -> Server:
        raise NotImplementedError

    def stop_server(self) -> None:
        for p in self.processes:
            p.stop()

    def restart_server(self, down_s: float) -> None:
        self.stop_server()
        time.sleep(down_s)
        self.start()

    def stop_publisher(self) -> None:
        assert self.pub is not None
        self.pub.stop()

    def start_publisher(self) -> None:
        assert self.pub is not None
        self.pub.start()

    def stop(self) -> None:
        """Everything this server started (the publisher too, wherever it runs)."""
        for p in self.processes:
            p.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.logs()}" for p in self.processes)


class RtmpServer(Server):
    """nginx + the RTMP module on a free port; ``ffmpeg`` publishes to it."""

    protocol = "rtmp"

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.port = free_port()
        self.url = f"rtmp://127.0.0.1:{self.port}/live/feed"
        conf = folder / "nginx.conf"
        conf.write_text(
            textwrap.dedent(f"""\
                load_module {NGINX_RTMP_MODULE};
                master_process off;
                pid {folder}/nginx.pid;
                error_log {folder}/nginx-error.log info;
                events {{ worker_connections 64; }}
                rtmp {{
                    server {{
                        listen 127.0.0.1:{self.port};
                        application live {{ live on; record off; }}
                    }}
                }}
            """)
        )
        self.nginx = Process(
            "nginx", ["nginx", "-p", str(folder), "-c", str(conf), "-g", "daemon off;"],
            folder / "nginx.log",
        )  # fmt: skip
        self.pub = publisher(self.clip, self.url, "flv", folder / "publisher.log")
        self.processes = [self.pub, self.nginx]

    def start(self) -> RtmpServer:
        self.nginx.start()
        wait_port(self.port, 15, self.nginx)
        self.pub.start()
        return self


RTSP_SCRIPT = """
import sys, gi
gi.require_version("Gst", "1.0"); gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer, GLib
Gst.init(None)
port, rtp = sys.argv[1], sys.argv[2]
server = GstRtspServer.RTSPServer(); server.set_address("127.0.0.1"); server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f"( udpsrc address=127.0.0.1 port={rtp} "
    "caps=application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,payload=96 "
    "! rtph264depay ! h264parse config-interval=-1 "
    "! rtph264pay name=pay0 pt=96 config-interval=1 )")
factory.set_shared(True)
server.get_mount_points().add_factory("/feed", factory)
server.attach(None)
print("serving", flush=True)
GLib.MainLoop().run()
"""


class RtspServer(Server):
    """GStreamer's RTSP server (``GstRtspServer``) re-serving the H.264 RTP stream an
    ``ffmpeg`` publisher sends it over UDP (a camera or encoder pushing RTP to a media
    server): a live stream (no declared duration), and a publisher apart from the
    server, which keeps its readers connected while the publisher goes and comes back."""

    protocol = "rtsp"

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.port, rtp = free_port(), free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/feed"
        script = folder / "rtsp_server.py"
        script.write_text(RTSP_SCRIPT)
        # MPEG-TS carries the parameter sets in-band before every keyframe, as the RTP
        # depayloader needs them (an MP4's are in its header only).
        ts = folder / "face.ts"
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(self.clip),
             "-c", "copy", str(ts)],
            check=True,
        )  # fmt: skip
        self.server = Process(
            "gst-rtsp-server",
            [SYSTEM_PYTHON, str(script), str(self.port), str(rtp)],
            folder / "rtsp.log",
        )
        self.pub = publisher(ts, f"rtp://127.0.0.1:{rtp}", "rtp", folder / "publisher.log",
                             respawn=True)  # fmt: skip
        self.processes = [self.pub, self.server]

    def start(self) -> RtspServer:
        self.server.start()
        wait_port(self.port, 20, self.server)
        if not self.pub.alive():
            self.pub.start()
        return self

    def stop_server(self) -> None:
        self.server.stop()  # the publisher goes on sending, as a camera would


class SrtServer(Server):
    """Encrypted SRT, by how Veritas connects (``veritas_mode``):

    * ``caller`` (default): a live relay apart from its publisher, as a contribution
      gateway: ``srt-live-transmit`` (the SRT library's own tool) listens for the
      encoder (an ``ffmpeg`` caller) and for Veritas, which calls (``pbkeylen`` 16, a
      ``latency``, a ``streamid``), and passes the stream on, keeping Veritas connected
      while the encoder goes and comes back;
    * ``listener``: no relay; the encoder calls Veritas, which listens (``pbkeylen`` 32,
      the encoder sends a ``streamid``), calling again until someone listens.

    Rendezvous mode is not here: SRT 1.5.1 refuses a rendezvous between two sockets of
    one host ("COOKIE CONTEST UNRESOLVED: can't assign connection roles").
    """

    protocol = "srt"
    passphrase = "veritas-test-passphrase"

    def __init__(self, folder: Path, veritas_mode: str = "caller") -> None:
        super().__init__(folder)
        self.port = free_port()
        at = f"srt://127.0.0.1:{self.port}"
        self.veritas_mode = veritas_mode
        self.relay: Process | None = None
        if veritas_mode == "listener":
            self.protocol, self.publisher_apart = "srt-listener", False
            options = f"pbkeylen=32&passphrase={self.passphrase}"
            self.url = f"{at}?mode=listener&{options}"
            target = f"{at}?mode=caller&{options}&streamid=studio-cam-1"
        else:
            options = f"pbkeylen=16&passphrase={self.passphrase}"
            # FFmpeg's latency is in microseconds, srt-live-transmit's in milliseconds.
            self.url = f"{at}?mode=caller&{options}&latency=200000&streamid=veritas-monitor"
            ingest = f"srt://127.0.0.1:{free_port()}"
            target = f"{ingest}?mode=caller&{options}"
            self.relay = Process(
                "srt-live-transmit",
                ["srt-live-transmit", "-loglevel:note", f"{ingest}?mode=listener&{options}",
                 f"{at}?mode=listener&{options}&latency=200"],
                folder / "relay.log",
            )  # fmt: skip
        # A caller gives up when nobody listens (the relay restarting), a listener serves
        # one caller and exits when it leaves: either way the encoder starts again.
        self.pub = publisher(self.clip, target, "mpegts", folder / "srt.log", respawn=True)
        self.processes = [self.pub] + ([self.relay] if self.relay else [])

    def start(self) -> SrtServer:
        if self.relay is not None:
            self.relay.start()
            time.sleep(0.5)  # UDP: nothing to probe; the listeners bind at once
            assert self.relay.alive(), self.relay.logs()
        self.pub.start()
        return self


class HlsServer(Server):
    """``ffmpeg`` writing a sliding live playlist (5 segments of 1 s, old ones deleted),
    served by ``python3 -m http.server``: the writer is the publisher."""

    protocol = "hls"

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.port = free_port()
        self.www = folder / "www"
        self.www.mkdir(exist_ok=True)
        self.url = f"http://127.0.0.1:{self.port}/live.m3u8"
        self.pub = publisher(
            self.clip, str(self.www / "live.m3u8"), "hls", folder / "hls-writer.log",
            "-hls_time", "1", "-hls_list_size", "5", "-hls_flags", "delete_segments",
        )  # fmt: skip
        self.http = Process(
            "http.server",
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(self.port),
             "--directory", str(self.www)],
            folder / "http.log",
        )  # fmt: skip
        self.processes = [self.pub, self.http]

    def start(self) -> HlsServer:
        self.http.start()
        wait_port(self.port, 15, self.http)
        self.pub.start()
        deadline = time.monotonic() + 15
        while not (self.www / "live.m3u8").exists():
            assert self.pub.alive(), self.pub.logs()
            assert time.monotonic() < deadline, "no live playlist after 15 s"
            time.sleep(0.1)
        return self


SERVERS = {"rtsp": RtspServer, "rtmp": RtmpServer, "srt": SrtServer, "hls": HlsServer}

PACKAGES = {
    "rtsp": [SYSTEM_PYTHON, "ffmpeg"],
    "rtmp": ["nginx", str(NGINX_RTMP_MODULE), "ffmpeg"],
    "srt": ["ffmpeg", "srt-live-transmit"],
    "hls": ["ffmpeg"],
}
