"""The model registry: every registered model builds, classifies, and round-trips weights."""

from __future__ import annotations

import copy

import pytest
import torch

from engine.errors import UnknownModelError, UntrustedPickleError, WeightsError
from engine.models import create_model, list_models, model_cfg
from engine.models.weights import load_weights, save_weights

DEEPFAKE = list_models(kind="deepfake")
ADVERSARIAL = list_models(kind="adversarial")


def test_registry_lists_paper_models_and_tiny_variants():
    assert {"xception", "efficientnet_b4st"} <= set(DEEPFAKE)
    assert "detect_resnet50" in ADVERSARIAL
    for name in DEEPFAKE + ADVERSARIAL:
        cfg = model_cfg(name)
        if not cfg.tiny:
            assert f"{name}_tiny" in list_models(), f"{name} has no tiny variant for tests"


def test_published_preprocessing_metadata():
    x = model_cfg("xception")
    assert (x.input_size, x.mean, x.std, x.fake_index) == (299, (0.5,) * 3, (0.5,) * 3, 1)
    e = model_cfg("efficientnet_b4st")
    assert (e.input_size, e.mean, e.std) == (224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert model_cfg("detect_resnet50").input_size == 224


@pytest.mark.parametrize("name", DEEPFAKE)
def test_deepfake_detector_gives_two_logits_on_unit_range_images(name):
    model = create_model(name)
    size = model.cfg.input_size
    logits = model(torch.rand(2, 3, size, size))
    assert logits.shape == (2, 2)
    assert torch.isfinite(logits).all()
    assert model.weights_status == "untrained"


def test_efficientnet_single_logit_is_exposed_as_symmetric_pair():
    model = create_model("efficientnet_b4st_tiny")
    x = torch.rand(3, 3, 64, 64)
    z = model.net(model.normalize(x))[:, 0]
    logits = model(x)
    torch.testing.assert_close(logits.softmax(1)[:, 1], torch.sigmoid(z))
    torch.testing.assert_close(logits[:, 0], -logits[:, 1])


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_detect_resnet50_shares_one_backbone_and_has_paper_head(name):
    model = create_model(name)
    size = model.cfg.input_size
    crops, maps = torch.rand(2, 3, size, size), torch.rand(2, 3, size, size)
    logits = model(crops, maps)
    assert logits.shape == (2, 2)
    head = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in head] == [(4096, 512), (512, 2)]
    assert isinstance(model.head[1], torch.nn.ReLU)
    # The embedding of the crop and of the map come from the same backbone:
    with torch.no_grad():
        e_crop, e_map = model.embed(crops), model.embed(maps)
        expected = model.head(torch.cat([e_crop, e_map], 1))
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    # Swapping crop and map changes the answer (the head sees them in order).
    assert not torch.allclose(model(maps, crops), logits)


def test_detect_resnet50_trains_with_the_batchnorm_statistics_it_is_evaluated_with():
    """Crops and maps go through the backbone in ONE pass, in train mode as in eval mode:
    once the running statistics hold a batch's statistics, eval mode gives that batch
    train mode's answer. With a pass per modality (the earlier rule) each modality was
    normalized by its own statistics in training and by the mix of both in evaluation."""
    torch.manual_seed(0)
    model = create_model("detect_resnet50_tiny")
    crops = torch.rand(8, 3, 64, 64)
    maps = 0.2 * torch.rand(8, 3, 64, 64) ** 4  # sparse and dark, as explanation maps are

    def fresh() -> torch.nn.Module:
        m = copy.deepcopy(model).train()
        for bn in m.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.reset_running_stats()
                bn.momentum = None  # running statistics = the statistics of what it saw
        return m

    def gap(train_out: torch.Tensor, eval_out: torch.Tensor) -> float:
        return float((train_out - eval_out).norm() / eval_out.norm())

    joint = fresh()
    out = joint(crops, maps)
    out.sum().backward()
    assert joint.backbone.conv1.weight.grad.abs().sum() > 0
    stacked = torch.cat([(crops - model.mean) / model.std, (maps - model.mean) / model.std])
    torch.testing.assert_close(fresh().forward_stacked(stacked), out, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        joint_gap = gap(out, joint.eval()(crops, maps))

    separate = fresh()
    with torch.no_grad():
        out_sep = separate.head(torch.cat([separate.embed(crops), separate.embed(maps)], 1))
        separate_gap = gap(out_sep, separate.eval()(crops, maps))
    # Eval's running variance is the unbiased one (a factor n / (n - 1) on small layers):
    # the joint rule's gap is that, the separate rule's is the mix of two modalities.
    assert joint_gap < 0.1 * separate_gap
    assert separate_gap > 0.05


@pytest.mark.parametrize("name", [n for n in list_models() if model_cfg(n).tiny])
def test_weights_round_trip_marks_model_trained(name, tmp_path):
    source = create_model(name)
    for p in source.parameters():
        torch.nn.init.normal_(p, std=0.02)
    path = save_weights(source.state_dict(), tmp_path / f"{name}.safetensors", arch=name)
    loaded = create_model(name, weights=path)
    assert loaded.weights_status == "trained"
    for (k, a), b in zip(source.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_unknown_model_names_the_choices():
    with pytest.raises(UnknownModelError, match="xception"):
        create_model("resnet9000")


def test_weights_for_another_architecture_are_refused(tmp_path):
    path = save_weights(
        create_model("xception_tiny").state_dict(), tmp_path / "x.safetensors", arch="xception_tiny"
    )
    with pytest.raises(WeightsError, match="made for the architecture 'xception_tiny'"):
        load_weights(create_model("efficientnet_b4st_tiny"), path)


def test_weights_with_wrong_shapes_are_refused(tmp_path):
    state = create_model("xception_tiny").state_dict()
    state["net.last_linear.weight"] = torch.zeros(3, state["net.last_linear.weight"].shape[1])
    path = save_weights(state, tmp_path / "bad.safetensors", arch="xception_tiny")
    with pytest.raises(WeightsError, match=r"last_linear\.weight has shape"):
        create_model("xception_tiny", weights=path)


def test_weights_with_missing_tensors_are_refused(tmp_path):
    state = create_model("xception_tiny").state_dict()
    del state["net.conv1.weight"]
    path = save_weights(state, tmp_path / "bad.safetensors", arch="xception_tiny")
    with pytest.raises(WeightsError, match="missing tensors"):
        create_model("xception_tiny", weights=path)


def test_partial_weights_load_but_stay_untrained(tmp_path):
    state = {
        k: v
        for k, v in create_model("detect_resnet50_tiny").state_dict().items()
        if k.startswith("backbone.")
    }
    path = save_weights(
        state, tmp_path / "b.safetensors", arch="detect_resnet50_tiny", complete=False
    )
    model = create_model("detect_resnet50_tiny", weights=path)
    assert model.weights_status == "untrained"
    assert torch.equal(model.state_dict()["backbone.conv1.weight"], state["backbone.conv1.weight"])


def test_pickle_weights_are_never_loaded(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(create_model("xception_tiny").state_dict(), path)
    with pytest.raises(UntrustedPickleError, match="--trust-pickle"):
        create_model("xception_tiny", weights=path)


def test_missing_and_foreign_weight_files_get_clear_errors(tmp_path):
    with pytest.raises(WeightsError, match="no such weights file"):
        create_model("xception_tiny", weights=tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightsError, match="not a safetensors file"):
        create_model("xception_tiny", weights=junk)
