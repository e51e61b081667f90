"""Job payloads and the source policy: every malformed or refused job has its reason."""

from __future__ import annotations

import os

import msgpack
import pytest

from engine.config import QueueConfig, load_config
from engine.errors import ConfigError
from engine.queue.errors import InvalidJobError, JobRefusedError
from engine.queue.job import JobSpec, Mode
from engine.queue.policy import SourcePolicy
from engine.queue.schema import decode_payload, encode_payload

LIMIT = 4096


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


GOOD = {"schema": 1, "id": "job-1", "source": "/data/clip.mp4"}

MALFORMED = [
    ("no payload field", None, "no 'payload' field"),
    ("not bytes", "a string", "must be bytes"),
    ("huge payload", pack({**GOOD, "source": "x" * 10_000}), "over the limit of 4096"),
    ("not msgpack", b"\xc1\xc1\xc1", "not valid msgpack"),
    ("trailing bytes", pack(GOOD) + b"\x00", "not valid msgpack"),
    ("too deep", b"\x91" * 3000 + b"\x00", "not valid msgpack"),
    ("a list", pack([1, 2, 3]), "must be a msgpack map, got a list"),
    ("an extension", pack({**GOOD, "x": msgpack.ExtType(5, b"x")}), "extension type"),
    ("no schema", pack({"id": "a", "source": "/x"}), "missing field 'schema'"),
    ("schema as text", pack({**GOOD, "schema": "1"}), "'schema' must be an integer"),
    ("unknown schema", pack({**GOOD, "schema": 99}), "unsupported schema version 99"),
    ("unknown field", pack({**GOOD, "command": "rm -rf /"}), "unknown field 'command'"),
    ("missing source", pack({"schema": 1, "id": "a"}), "missing field 'source'"),
    ("missing id", pack({"schema": 1, "source": "/x"}), "missing field 'id'"),
    ("id as number", pack({**GOOD, "id": 7}), "'id' must be a string"),
    ("id with a path", pack({**GOOD, "id": "../../etc"}), "is not a job id"),
    ("id too long", pack({**GOOD, "id": "a" * 65}), "is not a job id"),
    ("source as number", pack({**GOOD, "source": 12}), "'source' must be a string"),
    ("source as binary", pack({**GOOD, "source": b"/x"}), "'source' must be a string, got binary"),
    ("empty source", pack({**GOOD, "source": ""}), "1 to 4096 characters"),
    ("control characters", pack({**GOOD, "source": "/x\n/y"}), "control characters"),
    ("mode unknown", pack({**GOOD, "mode": "fast"}), "'mode' = 'fast' is not one of"),
    ("mode as number", pack({**GOOD, "mode": 1}), "'mode' must be a string"),
    ("fps as text", pack({**GOOD, "fps": "5"}), "'fps' must be a number"),
    ("fps negative", pack({**GOOD, "fps": -1.0}), "'fps' = -1.0 must be a finite number > 0"),
    ("fps NaN", pack({**GOOD, "fps": float("nan")}), "'fps' = nan"),
    ("fps huge", pack({**GOOD, "fps": 1e308}), "'fps' = 1e+308 must be from 0.001 to 1000"),
    ("fps subnormal", pack({**GOOD, "fps": 5e-324}), "'fps' = 5e-324 must be from 0.001"),
    ("duration huge", pack({**GOOD, "max_duration_s": 1e308}), "must be at most 31622400"),
    ("every zero", pack({**GOOD, "every": 0}), "'every' = 0 must be from 1"),
    ("every as bool", pack({**GOOD, "every": True}), "'every' must be an integer, got a boolean"),
    ("fps and every", pack({**GOOD, "fps": 5.0, "every": 3}), "exclude each other"),
    ("duration inf", pack({**GOOD, "max_duration_s": float("inf")}), "'max_duration_s' = inf"),
]


@pytest.mark.parametrize("data,reason", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_every_malformed_payload_is_refused_with_its_reason(data, reason):
    with pytest.raises(InvalidJobError) as e:
        decode_payload(data, LIMIT)
    assert reason in e.value.reason
    assert "\n" not in str(e.value)


def test_the_job_id_is_named_when_it_can_be_trusted():
    with pytest.raises(InvalidJobError) as e:
        decode_payload(pack({**GOOD, "fps": "x"}), LIMIT)
    assert e.value.job_id == "job-1"
    with pytest.raises(InvalidJobError) as e:
        decode_payload(pack({**GOOD, "id": "../x", "fps": "x"}), LIMIT)
    assert e.value.job_id is None


def test_payloads_round_trip_with_every_field():
    spec = JobSpec("abc", "rtsp://cam/1", Mode.REALTIME, 5.0, None, 60.0, 1.5)
    assert decode_payload(encode_payload(spec), LIMIT) == spec
    assert decode_payload(pack(GOOD), LIMIT) == JobSpec("job-1", "/data/clip.mp4")


def policy(tmp_path, **kw) -> SourcePolicy:
    roots = kw.pop("roots", [str(tmp_path / "media")])
    schemes = kw.pop("schemes", ("file", "tcp", "rtsp"))
    return SourcePolicy(roots, schemes, **kw)


def test_paths_must_lie_inside_an_allowed_root_after_resolving_links(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    (media / "ok.mp4").write_bytes(b"")
    os.symlink("/etc/passwd", media / "escape.mp4")
    p = policy(tmp_path)
    p.check(JobSpec("a", str(media / "ok.mp4")))
    p.check(JobSpec("a", f"file://{media}/ok.mp4"))
    refused = {
        "/etc/passwd": "outside the allowed roots",
        f"{media}/../media/../../etc/passwd": "outside the allowed roots",
        str(media / "escape.mp4"): "outside the allowed roots",
        "file:///etc/passwd": "outside the allowed roots",
        "relative/clip.mp4": "relative paths are ambiguous",
    }
    for source, reason in refused.items():
        with pytest.raises(JobRefusedError, match=reason):
            p.check(JobSpec("a", source))


def test_no_allowed_root_means_no_local_files(tmp_path):
    with pytest.raises(JobRefusedError, match="--allow-root"):
        policy(tmp_path, roots=[]).check(JobSpec("a", "/data/x.mp4"))


def test_url_schemes_must_be_allowed_and_readable(tmp_path):
    p = policy(tmp_path)
    p.check(JobSpec("a", "tcp://127.0.0.1:9/"))
    with pytest.raises(JobRefusedError, match="udp:// sources are not allowed"):
        p.check(JobSpec("a", "udp://127.0.0.1:9"))
    with pytest.raises(JobRefusedError, match="gopher:// sources cannot be read"):
        policy(tmp_path, schemes=("gopher",)).check(JobSpec("a", "gopher://x/"))


def test_credentials_never_appear_in_a_refusal(tmp_path):
    with pytest.raises(JobRefusedError) as e:
        policy(tmp_path).check(JobSpec("a", "rtmp://user:hunter2@host/app/key"))
    assert "hunter2" not in str(e.value)


def test_a_job_may_not_ask_for_more_than_the_duration_limit(tmp_path):
    p = policy(tmp_path, max_job_duration_s=60.0)
    p.check(JobSpec("a", "tcp://h:1", max_duration_s=30.0))
    with pytest.raises(JobRefusedError, match="over this worker's limit of 60 s"):
        p.check(JobSpec("a", "tcp://h:1", max_duration_s=61.0))


@pytest.mark.parametrize(
    "override,key",
    [
        ("queue.heartbeat_s=40.0", "queue.heartbeat_s"),  # over claim_idle_s / 2
        ("queue.concurrency=0", "queue.concurrency"),
        ('queue.live_mode="fast"', "queue.live_mode"),
        ('queue.allowed_roots=["relative"]', "queue.allowed_roots"),
        ('queue.allowed_roots="/data"', "queue.allowed_roots"),
        ('queue.allowed_schemes=["RTSP"]', "queue.allowed_schemes"),
        ('queue.prefix=""', "queue.prefix"),
        ("queue.live_reconnect_max_s=0.1", "queue.live_reconnect_max_s"),
    ],
)
def test_bad_queue_settings_name_their_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert e.value.key == key


def test_queue_settings_accept_lists():
    cfg = load_config(None, ['queue.allowed_roots=["/data", "/media"]'])
    assert cfg.queue.allowed_roots == ("/data", "/media")
    assert QueueConfig().allowed_roots == ()
