"""Fixtures for the queue tests: a real redis-server per test, worker processes, feeds.

``redis_server`` starts ``redis-server`` on a free port in the test's temporary folder,
with a password (so every test also shows that passwords work and never reach a log),
and stops it after the test. ``tls_redis_server`` does the same over TLS with a
throw-away certificate authority made by ``openssl``. ``worker`` starts real worker
processes (``python -m engine.cli worker``) with the tiny models; their logs go to a
file that the test can read.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.servers import free_port

REPO = Path(__file__).resolve().parents[3]

WORKER_MODEL_FLAGS = [
    "--detector",
    "xception_tiny",
    "--adversarial",
    "detect_resnet50_tiny",
    "--device",
    "cpu",
]
"""The tiny models on the CPU (tests/conftest.py's TINY_FLAGS, for ``veritas worker``)."""

FAST_QUEUE = [
    "--set",
    "queue.poll_s=0.2",
    "--set",
    "queue.claim_idle_s=2.0",
    "--set",
    "queue.heartbeat_s=0.3",
    "--set",
    "queue.trim_interval_s=0.5",
    "--set",
    "pipeline.batch_size=4",
    "--set",
    "pipeline.max_batch_latency_ms=20",
]
"""Short timings so that reclaiming and polling happen within a test's patience."""


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll ``condition()`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class RedisServer:
    """A redis-server child process; ``url`` carries the password (and TLS options)."""

    def __init__(self, folder: Path, password: str, tls: dict[str, Path] | None = None) -> None:
        self.folder = folder
        self.password = password
        self.tls = tls
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.tls:
            return (
                f"rediss://:{self.password}@127.0.0.1:{self.port}/0"
                f"?ssl_ca_certs={self.tls['ca']}&ssl_cert_reqs=required"
            )
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def start(self, appendonly: bool = False) -> RedisServer:
        lines = [
            "bind 127.0.0.1",
            f'dir "{self.folder}"',
            f'logfile "{self.folder / "redis.log"}"',
            'save ""',
            f"appendonly {'yes' if appendonly else 'no'}",
            "appendfsync always",
            f'requirepass "{self.password}"',
        ]
        if self.tls:
            lines += [
                "port 0",
                f"tls-port {self.port}",
                f'tls-cert-file "{self.tls["cert"]}"',
                f'tls-key-file "{self.tls["key"]}"',
                f'tls-ca-cert-file "{self.tls["ca"]}"',
                "tls-auth-clients no",
            ]
        else:
            lines.append(f"port {self.port}")
        conf = self.folder / "redis.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen(["redis-server", str(conf)])
        client = self.client()
        try:
            wait_for(lambda: self._ping(client), 15, "redis-server to answer")
        finally:
            client.close()
        return self

    def _ping(self, client: redis.Redis) -> bool:
        assert self.process is not None and self.process.poll() is None, (
            self.folder / "redis.log"
        ).read_text()[-2000:]
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.fail(
            "redis-server is not installed: run the suite with 'make test', which installs it"
        )
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder, f"pw-{secrets.token_hex(8)}").start()
    yield server
    server.stop()


@pytest.fixture
def tls_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None or shutil.which("openssl") is None:
        pytest.fail("redis-server or openssl is not installed: 'make test' installs redis-server")
    folder = tmp_path / "redis-tls"
    folder.mkdir()
    tls = _make_certificates(folder)
    server = RedisServer(folder, f"pw-{secrets.token_hex(8)}", tls)
    try:
        server.start()
    except AssertionError as error:
        if "tls" in str(error).lower():
            pytest.fail(f"this redis-server has no TLS support (Debian's has): {error}")
        raise
    yield server
    server.stop()


def _make_certificates(folder: Path) -> dict[str, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
            "-out", "ca.crt", "-days", "2", "-subj", "/CN=veritas-test-ca")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
            "-out", "server.csr", "-subj", "/CN=127.0.0.1")  # fmt: skip
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2",
            "-extfile", "ext.cnf")  # fmt: skip
    return {"ca": folder / "ca.crt", "cert": folder / "server.crt", "key": folder / "server.key"}


class WorkerProcess:
    """A ``veritas worker`` subprocess; its stderr (the logs) goes to ``log_path``."""

    def __init__(self, url: str, log_path: Path, args: list[str], env: dict[str, str]) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "worker", *args],
            cwd=REPO,
            env={**os.environ, **env, "VERITAS_REDIS_URL": url},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            tail = self.logs()[-3000:]
            raise AssertionError(f"worker did not exit within {timeout} s:\n{tail}") from None

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self._log.close()


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``worker(server, "--name", "a", ...)`` starts a worker process on ``server``."""
    started: list[WorkerProcess] = []

    def start(
        server: RedisServer, *args: str, name: str | None = None, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        name = name or f"w{len(started)}"
        w = WorkerProcess(
            server.url,
            tmp_path / f"{name}.log",
            [
                "--name",
                name,
                "--allow-root",
                str(tmp_path),
                *WORKER_MODEL_FLAGS,
                *FAST_QUEUE,
                *args,
            ],
            env={"PYTHONUNBUFFERED": "1", **(env or {})},
        )
        started.append(w)
        return w

    yield start
    for w in started:
        w.close()


def consumers_ready(client: redis.Redis, names: list[str], prefix: str = "veritas:") -> bool:
    """Whether every named worker has joined the consumer group (it is taking jobs)."""
    try:
        present = {
            c["name"].decode() for c in client.xinfo_consumers(f"{prefix}jobs", "veritas-workers")
        }
    except redis.ResponseError:
        return False
    return set(names) <= present


class FeedSender:
    """``python -m tests.engine.queue.feed URL``: a live MPEG-TS sender process."""

    def __init__(self, url: str, fps: int = 25, size: int = 64, faces: bool = False) -> None:
        self.url = url
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.engine.queue.feed", url, "--fps", str(fps),
             "--size", str(size), *(["--faces"] if faces else [])],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def wait_listening(self, timeout: float = 60) -> None:
        """For ``tcp://...?listen=1``: wait until the sender accepts connections (a probe
        connection that closes at once; the sender then waits for the next one)."""
        host, port = self.url.split("://")[1].split("?")[0].rsplit(":", 1)

        def accepts() -> bool:
            assert self.process.poll() is None, "the feed sender exited"
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(accepts, timeout, f"the feed sender on {self.url}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def feed() -> Iterator[Callable[..., FeedSender]]:
    """``feed(url)`` starts a live sender; every sender is killed after the test."""
    senders: list[FeedSender] = []

    def start(url: str, fps: int = 25, size: int = 64, faces: bool = False) -> FeedSender:
        s = FeedSender(url, fps, size, faces)
        senders.append(s)
        return s

    yield start
    for s in senders:
        s.kill()
