"""Events to a webhook: a real HTTP server on loopback that fails, refuses and accepts."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.webhook import WebhookSender


class Receiver:
    """An HTTP server whose answers are scripted: ``codes`` in turn, then 200."""

    def __init__(self, codes: list[int]) -> None:
        self.codes = list(codes)
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    code = receiver.codes.pop(0) if receiver.codes else 200
                    if code == 200:
                        assert self.headers["Content-Type"] == "application/json"
                        receiver.bodies.append(json.loads(body))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[callable]:
    made: list[Receiver] = []

    def make(codes: list[int]) -> Receiver:
        made.append(Receiver(codes))
        return made[-1]

    yield make
    for r in made:
        r.server.shutdown()
        r.server.server_close()


def test_events_are_delivered_in_order_through_server_errors(receiver, monkeypatch) -> None:
    monkeypatch.setattr("engine.webhook.BACKOFF_MIN_S", 0.01)
    r = receiver([503, 500, 429])
    sender = WebhookSender(r.url, retries=5, timeout_s=2)
    for i in range(5):
        sender.send({"event": "start", "n": i})
    sender.close(drain_s=10)
    assert [b["n"] for b in r.bodies] == [0, 1, 2, 3, 4]  # each once, in order
    assert (sender.delivered, sender.failed, sender.dropped) == (5, 0, 0)


def test_a_refusal_is_not_retried_and_the_next_event_goes(receiver) -> None:
    r = receiver([400])
    sender = WebhookSender(r.url, retries=5)
    sender.send({"n": 0})
    sender.send({"n": 1})
    sender.close(drain_s=10)
    assert [b["n"] for b in r.bodies] == [1]
    assert (sender.delivered, sender.failed) == (1, 1)


def test_a_full_queue_drops_the_oldest_and_counts_it(monkeypatch) -> None:
    monkeypatch.setattr("engine.webhook.BACKOFF_MIN_S", 0.01)
    # Nothing listens: every POST fails; the queue of 3 keeps the newest events.
    sender = WebhookSender("http://127.0.0.1:9/hook", queue_size=3, retries=1, timeout_s=0.5)
    for i in range(20):
        sender.send({"n": i})
    sender.close(drain_s=5)
    assert sender.delivered == 0
    assert sender.dropped + sender.failed == 20
    assert sender.dropped >= 20 - 3 - 1  # at most the queue and the one in hand were tried


def test_only_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookSender("file:///etc/passwd")


def test_veritas_run_posts_its_events_to_the_webhook(receiver, face_clip, tmp_path) -> None:
    from engine.cli import main
    from tests.conftest import TINY_FLAGS

    r = receiver([503])
    out = tmp_path / "r.jsonl"
    code = main(
        ["run", str(face_clip), "--out", str(out), "--events", "--fake-threshold", "0",
         "--set", "events.window_s=0.2", "--set", "events.min_frames=3",
         "--set", f'events.webhook_url="{r.url}"', *TINY_FLAGS]
    )  # fmt: skip
    assert code == 0
    written = [json.loads(x) for x in out.read_text().splitlines()]
    events = [e for e in written if e.get("type") == "event"]
    assert [e["event"] for e in events] == ["start", "end"]
    assert r.bodies == events  # the same events, the first after a retry
