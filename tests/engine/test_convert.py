"""``veritas convert-weights``: synthetic checkpoints laid out exactly as the published ones.

The key lists in ``tests/fixtures/layouts/`` are the published state dicts' names and
shapes, in order (read off the publishers' model definitions). Each test builds a
checkpoint from them with random values, in the container the publisher used
(a pickled whole module for FaceForensics++, plain state dicts otherwise), converts
it, loads it into the engine's model and checks that every tensor arrived where it
belongs.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from engine.cli import main
from engine.convert import convert_weights, read_checkpoint
from engine.errors import UntrustedPickleError, WeightsError
from engine.models import create_model
from engine.models.xception import Xception

LAYOUTS = Path(__file__).parent.parent / "fixtures" / "layouts"


def published_keys(name: str) -> list[tuple[str, list[int]]]:
    return [(k, shape) for k, shape in json.loads((LAYOUTS / f"{name}.json").read_text())]


def synthetic_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in published_keys(name):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(*shape, generator=g) + 0.5  # a variance is positive
        else:
            state[key] = torch.randn(*shape, generator=g) * 0.1
    return state


# --- FaceForensics++ XceptionNet: a pickled whole TransferModel ----------------------------


@pytest.fixture
def ffpp_network_package():
    """Classes named as the FF++ code names them (network.models.TransferModel, ...).

    They exist only while the checkpoint is written; the converter must read it without
    them, as a user without the FF++ code would.
    """
    pkg = types.ModuleType("network")
    models = types.ModuleType("network.models")
    xmod = types.ModuleType("network.xception")

    class TransferModel(nn.Module):
        def __init__(self, dropout_head: bool) -> None:
            super().__init__()
            self.modelchoice = "xception"
            self.model = Xception(num_classes=2)
            if dropout_head:
                self.model.last_linear = nn.Sequential(nn.Dropout(0.5), nn.Linear(2048, 2))

    TransferModel.__module__ = "network.models"
    TransferModel.__qualname__ = "TransferModel"
    models.TransferModel = TransferModel
    saved = {n: sys.modules.get(n) for n in ("network", "network.models", "network.xception")}
    sys.modules.update({"network": pkg, "network.models": models, "network.xception": xmod})
    try:
        yield TransferModel
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")
@pytest.mark.parametrize("dropout_head,legacy", [(False, True), (True, False)])
def test_ffpp_pickled_transfer_model_converts(ffpp_network_package, tmp_path, dropout_head, legacy):
    layout = "ffpp_xception_seqdropout_keys" if dropout_head else "ffpp_xception_linear_keys"
    published = ffpp_network_package(dropout_head).eval()
    # The synthetic model has exactly the published names, shapes and order.
    assert [(k, list(v.shape)) for k, v in published.state_dict().items()] == published_keys(layout)
    published.load_state_dict(synthetic_state(layout))
    src = tmp_path / "full_c23.p"
    torch.save(published, src, _use_new_zipfile_serialization=not legacy)
    for name in ("network", "network.models", "network.xception"):
        del sys.modules[name]  # the converter must not need the FF++ code

    dst, report = convert_weights(
        src, tmp_path / "xception.safetensors", "ffpp-xception", trust_pickle=True
    )
    assert "276 tensors for xception" in report
    model = create_model("xception", weights=dst)
    assert model.weights_status == "trained"
    ref = published.state_dict()
    head = "model.last_linear.1." if dropout_head else "model.last_linear."
    assert torch.equal(model.net.last_linear.weight, ref[head + "weight"])
    assert torch.equal(
        model.net.block12.rep[1].pointwise.weight, ref["model.block12.rep.1.pointwise.weight"]
    )
    # Same network, same weights, same logits (FF++ normalizes with mean = std = 0.5).
    x = torch.rand(1, 3, 299, 299)
    with torch.no_grad():
        torch.testing.assert_close(model(x), published.model((x - 0.5) / 0.5))


def test_pickles_are_refused_without_trust(tmp_path):
    src = tmp_path / "model.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, src)
    with pytest.raises(UntrustedPickleError, match="--trust-pickle"):
        read_checkpoint(src)


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_trusted_pickle_still_runs_no_code_from_the_file(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    src = tmp_path / "evil.pth"
    torch.save({"state_dict": payload}, src)
    with pytest.raises(WeightsError):
        read_checkpoint(src, trust_pickle=True)
    assert not marker.exists(), "the restricted unpickler called os.system"


# --- icpr2020dfdc EfficientNetB4ST: a plain state dict -------------------------------------


@pytest.mark.parametrize("wrapped", [False, True])
def test_icpr_effnetb4st_state_dict_converts(tmp_path, wrapped):
    state = synthetic_state("icpr_EfficientNetB4ST_keys")
    src = tmp_path / "EfficientNetB4ST_FFPP.pth"
    torch.save({"net": state, "epoch": 3} if wrapped else state, src)
    dst, _ = convert_weights(
        src, tmp_path / "b4st.safetensors", "icpr-effnetb4st", trust_pickle=True
    )
    model = create_model("efficientnet_b4st", weights=dst)
    assert model.weights_status == "trained"
    sd = model.state_dict()
    e, b = "feat_ext.efficientnet.", "net.backbone."
    pairs = {
        "feat_ext.efficientnet._conv_stem.weight": "net.backbone.conv_stem.weight",
        "feat_ext.efficientnet._bn0.running_var": "net.backbone.bn1.running_var",
        # block 0 is depthwise-separable (no expansion): project conv → conv_pw
        e + "_blocks.0._project_conv.weight": b + "blocks.0.0.conv_pw.weight",
        # block 2 opens stage 1: expand conv → conv_pw, project → conv_pwl
        e + "_blocks.2._expand_conv.weight": b + "blocks.1.0.conv_pw.weight",
        e + "_blocks.2._project_conv.weight": b + "blocks.1.0.conv_pwl.weight",
        e + "_blocks.31._se_expand.bias": b + "blocks.6.1.se.conv_expand.bias",
        "feat_ext.efficientnet._conv_head.weight": "net.backbone.conv_head.weight",
        "feat_ext.efficientnet._bn1.weight": "net.backbone.bn2.weight",
        "classifier.0.running_mean": "net.head.0.running_mean",
        "classifier.1.weight": "net.head.1.weight",
    }
    for published, ours in pairs.items():
        assert torch.equal(sd[ours], state[published]), published
    # Every published backbone/head tensor landed somewhere, exactly once.
    used = [k for k in state if not k.startswith("feat_ext.classifier.")]
    assert len(used) == len(sd) == 711
    values = sorted(float(v.flatten()[0]) for k, v in state.items() if k in used and v.dim())
    assert values == sorted(float(v.flatten()[0]) for v in sd.values() if v.dim())


# --- ResNet50 (torchvision / timm): the Detect-ResNet50 backbone ---------------------------


@pytest.mark.parametrize("container", ["pth", "safetensors"])
def test_resnet50_backbone_converts_as_partial_weights(tmp_path, container):
    state = synthetic_state("torchvision_resnet50_keys")
    src = tmp_path / f"resnet50.{container}"
    if container == "pth":
        torch.save(state, src)
    else:
        save_file(state, str(src))
    dst, report = convert_weights(src, tmp_path / "d.safetensors", "resnet50", trust_pickle=True)
    assert "untrained" in report
    model = create_model("detect_resnet50", weights=dst)
    assert model.weights_status == "untrained"  # the head is not in an ImageNet checkpoint
    assert torch.equal(model.backbone.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])


def test_safetensors_sources_need_no_trust(tmp_path):
    """A safetensors source holds no code: it converts without ``trust_pickle``, while the
    same state dict pickled is refused without it."""
    state = synthetic_state("torchvision_resnet50_keys")
    save_file(state, str(tmp_path / "model.safetensors"))
    dst, _ = convert_weights(tmp_path / "model.safetensors", tmp_path / "d.safetensors", "resnet50")
    model = create_model("detect_resnet50", weights=dst)
    assert torch.equal(model.backbone.layer1[0].conv2.weight, state["layer1.0.conv2.weight"])
    torch.save(state, tmp_path / "model.pth")
    with pytest.raises(UntrustedPickleError):
        convert_weights(tmp_path / "model.pth", tmp_path / "p.safetensors", "resnet50")
    assert not (tmp_path / "p.safetensors").exists()


# --- refusals --------------------------------------------------------------------------------


def test_wrong_layout_is_refused_before_writing(tmp_path):
    state = synthetic_state("torchvision_resnet50_keys")
    src = tmp_path / "resnet50.pth"
    torch.save(state, src)
    dst = tmp_path / "x.safetensors"
    with pytest.raises(WeightsError, match="has tensors that xception does not"):
        convert_weights(src, dst, "ffpp-xception", trust_pickle=True)
    assert not dst.exists()


def test_shape_mismatch_is_refused(tmp_path):
    state = synthetic_state("ffpp_xception_linear_keys")
    state["model.conv1.weight"] = torch.zeros(16, 3, 3, 3)
    src = tmp_path / "x.pth"
    torch.save(state, src)
    with pytest.raises(WeightsError, match=r"model|conv1.weight has shape \(16, 3, 3, 3\)"):
        convert_weights(src, tmp_path / "x.safetensors", "ffpp-xception", trust_pickle=True)


def test_cli_convert_reports_and_refuses_untrusted_pickle(tmp_path, capsys):
    state = synthetic_state("torchvision_resnet50_keys")
    torch.save(state, tmp_path / "r.pth")
    assert (
        main(
            [
                "convert-weights",
                str(tmp_path / "r.pth"),
                str(tmp_path / "d.safetensors"),
                "--format",
                "resnet50",
            ]
        )
        == 2
    )
    assert "--trust-pickle" in capsys.readouterr().err
    assert (
        main(
            [
                "convert-weights",
                str(tmp_path / "r.pth"),
                str(tmp_path / "d.safetensors"),
                "--format",
                "resnet50",
                "--trust-pickle",
            ]
        )
        == 0
    )
    assert "tensors for detect_resnet50" in capsys.readouterr().out


def test_every_format_names_a_converter_that_exists_beside_its_model():
    """The format table holds ``module:function`` strings (so the CLI parser stays free
    of torch); a renamed or moved converter must fail here, not at a user's conversion."""
    import importlib

    from engine.convert import FORMATS

    for name, fmt in FORMATS.items():
        module, function = fmt.converter.split(":")
        assert module.startswith(("engine.models.", "engine.faces.")), name
        assert callable(getattr(importlib.import_module(module), function)), name
