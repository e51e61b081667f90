"""Configuration: defaults, TOML files, overrides, and a clear error for each bad value."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import engine
from engine.cli import build_parser, config_from_args
from engine.config import Config, load_config
from engine.errors import ConfigError

DEFAULT_TOML = Path(engine.__file__).parent / "configs" / "default.toml"


def test_documented_default_file_equals_built_in_defaults():
    assert load_config(DEFAULT_TOML) == Config()


def test_every_key_is_documented_in_the_default_file():
    text = DEFAULT_TOML.read_text()
    for section in dataclasses.fields(Config):
        for key in dataclasses.fields(getattr(Config(), section.name)):
            assert f"{key.name} =" in text, f"{section.name}.{key.name} is not documented"


def test_file_then_overrides_take_precedence(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[pipeline]\nbatch_size = 4\nxai_method = "saliency"\n[sources]\nfps = 5\n')
    cfg = load_config(path, ["pipeline.batch_size=16", "models.detector=efficientnet_b4st"])
    assert cfg.pipeline.batch_size == 16
    assert cfg.pipeline.xai_method == "saliency"
    assert cfg.sources.fps == 5.0
    assert cfg.models.detector == "efficientnet_b4st"  # a bare word is a string


@pytest.mark.parametrize(
    "override,key",
    [
        ("pipeline.batch_size=0", "pipeline.batch_size"),
        ("pipeline.batch_size=2.5", "pipeline.batch_size"),
        ("pipeline.fake_threshold=1.5", "pipeline.fake_threshold"),
        ('pipeline.xai_method="lime"', "pipeline.xai_method"),
        ('pipeline.device="tpu"', "pipeline.device"),
        ("pipeline.ig_steps=0", "pipeline.ig_steps"),
        ('models.detector="resnet9000"', "models.detector"),
        ('models.adversarial="xception"', "models.adversarial"),
        ('models.face_detector="dlib"', "models.face_detector"),
        ("faces.max_faces=0", "faces.max_faces"),
        ('faces.warm_frame_sizes=["1080p"]', "faces.warm_frame_sizes"),
        ('faces.warm_frame_sizes=["0x1080"]', "faces.warm_frame_sizes"),
        ("faces.warm_frame_sizes=[1920]", "faces.warm_frame_sizes"),
        ('faces.warm_frame_sizes="1920x1080"', "faces.warm_frame_sizes"),
        ('faces.warm_frame_sizes=["8000x8000"]', "faces.warm_frame_sizes"),  # > max pixels
        ("sources.every=0", "sources.every"),
        ("pipeline.nonsense=1", "pipeline.nonsense"),
        ("colour.red=1", "colour"),
        ("pipeline.batch_size", "--set"),
    ],
)
def test_bad_values_name_their_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert e.value.key == key
    assert "\n" not in str(e.value)
    assert "expected" in str(e.value)


def test_warm_frame_sizes_are_width_by_height_within_the_frame_limit():
    assert load_config().faces.warm_sizes == [(1080, 1920)]
    cfg = load_config(None, ['faces.warm_frame_sizes=["1280x720", "720x576"]'])
    assert cfg.faces.warm_frame_sizes == ("1280x720", "720x576")
    assert cfg.faces.warm_sizes == [(720, 1280), (576, 720)]
    assert load_config(None, ["faces.warm_frame_sizes=[]"]).faces.warm_sizes == []
    big = ['faces.warm_frame_sizes=["8000x8000"]', "sources.max_frame_pixels=64000000"]
    assert load_config(None, big).faces.warm_sizes == [(8000, 8000)]  # the limit raised
    with pytest.raises(ConfigError, match="at most 8"):
        load_config(None, [f"faces.warm_frame_sizes={['64x64'] * 9}".replace("'", '"')])


def test_unknown_model_error_lists_the_choices():
    with pytest.raises(ConfigError, match="efficientnet_b4st"):
        load_config(None, ['models.detector="resnet9000"'])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="an existing TOML file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[pipeline\nbatch_size = ")
    with pytest.raises(ConfigError, match="valid TOML"):
        load_config(bad)


def test_cli_shortcut_flags_become_config_keys():
    args = build_parser().parse_args(
        [
            "run",
            "x.mp4",
            "--detector",
            "efficientnet_b4st",
            "--xai",
            "saliency",
            "--batch-size",
            "3",
            "--fps",
            "2.5",
            "--set",
            "pipeline.ig_steps=7",
        ]
    )
    cfg = config_from_args(args)
    assert cfg.models.detector == "efficientnet_b4st"
    assert cfg.pipeline.xai_method == "saliency"
    assert cfg.pipeline.batch_size == 3
    assert cfg.sources.fps == 2.5
    assert cfg.pipeline.ig_steps == 7


def test_the_torch_free_catalog_of_names_is_what_the_registries_hold():
    """The config checks bundled names in ``engine.catalog`` without importing torch; the
    catalog must list exactly the networks the registries get from the bundled modules."""
    from engine.catalog import BUNDLED_FACE_DETECTORS, BUNDLED_MODELS
    from engine.faces.base import FACE_DETECTORS
    from engine.models.registry import MODELS

    models = {name: cfg.kind for name, (factory, cfg) in MODELS.items()
              if factory.__module__.startswith("engine.")}  # fmt: skip
    assert models == BUNDLED_MODELS
    faces = {name for name, (factory, _) in FACE_DETECTORS.items()
             if factory.__module__.startswith("engine.")}  # fmt: skip
    assert faces == BUNDLED_FACE_DETECTORS
    # A wrong kind for a bundled name still goes to the registry's error.
    with pytest.raises(ConfigError, match="detect_resnet50"):
        load_config(None, ['models.adversarial="xception_tiny"'])
