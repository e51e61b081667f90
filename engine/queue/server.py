"""An embedded ``redis-server`` for ``veritas serve`` (and the tests): a child process
on a free local port, in a private temporary folder, stopped with its owner.

It listens on 127.0.0.1 only. Its configuration (including ``requirepass`` when a
password is given) is written to a file in the private folder, never on the command
line, so it does not show in process listings. Without ``data_dir`` nothing is
persisted and the queue is gone when the server stops; with it, an append-only file
there keeps the queue across restarts. On Linux the server is told to stop if its
owner dies (``PR_SET_PDEATHSIG``), so no server outlives a killed ``veritas serve``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from engine.queue.errors import RedisUnavailableError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0
"""How long to wait for a started server to answer PING."""

STOP_TIMEOUT_S = 10.0
"""How long a server gets to exit after SIGTERM before it is killed."""

PORT_ATTEMPTS = 3
"""Free ports tried when another process takes the chosen one first."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    """``preexec_fn``: on Linux, SIGTERM this child when its parent exits."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedRedis:
    """``with EmbeddedRedis() as server: connect(server.url)``."""

    def __init__(
        self,
        port: int = 0,
        data_dir: str | os.PathLike[str] | None = None,
        password: str | None = None,
        executable: str = "redis-server",
        extra_config: str = "",
    ) -> None:
        self.port = port
        self.data_dir = Path(data_dir) if data_dir else None
        self.password = password
        self.executable = executable
        self.extra_config = extra_config
        self.process: subprocess.Popen[bytes] | None = None
        self._tmp: str | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def folder(self) -> Path:
        assert self._tmp is not None, "the server is not started"
        return Path(self._tmp)

    def start(self) -> EmbeddedRedis:
        if shutil.which(self.executable) is None:
            raise RedisUnavailableError(
                "an embedded server",
                f"{self.executable} is not installed (apt-get install redis-server), "
                "or give --redis URL",
            )
        self._tmp = tempfile.mkdtemp(prefix="veritas-redis-")
        chosen = self.port
        for attempt in range(PORT_ATTEMPTS):
            self.port = chosen or free_port()
            if self._launch():
                log.info(
                    "embedded redis-server on 127.0.0.1:%d (%s)",
                    self.port,
                    self.data_dir or "not persisted",
                )
                return self
            if chosen or attempt == PORT_ATTEMPTS - 1:
                break
        log_tail = self._log_tail()
        self.stop()
        raise RedisUnavailableError(
            f"127.0.0.1:{self.port}", f"redis-server did not start: {log_tail}"
        )

    def _launch(self) -> bool:
        folder = Path(self._tmp or ".")
        data = self.data_dir or folder
        data.mkdir(parents=True, exist_ok=True)
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            "protected-mode yes",
            "daemonize no",
            f'dir "{data}"',
            f'logfile "{folder / "redis.log"}"',
            'save ""',
            f"appendonly {'yes' if self.data_dir else 'no'}",
            "appendfsync everysec",
        ]
        if self.password:
            lines.append(f'requirepass "{self.password}"')
        conf = folder / "redis.conf"
        conf.write_text("\n".join(lines) + "\n" + self.extra_config + "\n")
        conf.chmod(0o600)
        self.process = subprocess.Popen(
            [self.executable, str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        client = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_connect_timeout=0.5,
            socket_timeout=2,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False  # e.g. the port was taken meanwhile
                try:
                    if client.ping():
                        return True
                except redis.RedisError:
                    time.sleep(0.05)
            self.process.kill()
            self.process.wait()
            return False
        finally:
            client.close()

    def _log_tail(self) -> str:
        try:
            lines = (self.folder / "redis.log").read_text(errors="replace").splitlines()
            return " | ".join(lines[-3:]) or "no log"
        except OSError:
            return "no log"

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its temporary folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
