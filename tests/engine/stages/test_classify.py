"""Stages ``classify`` + ``xai``: the fused stage (one forward, one backward) computes what
the separate one (no-grad classification, then ``engine.xai.attribute``) does."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from engine.config import PipelineConfig
from engine.models import create_model
from engine.stages.classify import ClassifyThenExplain, FusedClassifyExplain

pytestmark = pytest.mark.numerics  # also run as an AVX2-only CPU would (Makefile)


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient"])
def test_fused_and_separate_stages_agree(method):
    torch.manual_seed(0)
    model = create_model("xception_tiny").eval()
    size = model.cfg.input_size
    crops = torch.rand(5, 3, size, size)
    settings = dataclasses.replace(PipelineConfig(), xai_method=method)
    every = torch.arange(len(crops))
    cpu = torch.device("cpu")
    passes = lambda name: model  # noqa: E731 (eager: the model is every pass)
    p1, which1, a1 = ClassifyThenExplain(passes, settings, cpu).run(crops, every)
    p2, which2, a2 = FusedClassifyExplain(passes, settings, cpu).run(crops, every)
    assert torch.equal(which1, which2) and len(which1) == 5
    # by default, the faces called real (below fake_threshold) are the ones explained
    default = ClassifyThenExplain(passes, settings, cpu).run(crops)[1]
    assert torch.equal(default, (p1 < settings.fake_threshold).nonzero().flatten())
    assert torch.allclose(p1, p2, atol=1e-5)
    scale = a1.abs().max()
    assert scale > 0 and torch.allclose(a1, a2, rtol=1e-3, atol=1e-4 * float(scale))


def test_only_the_chosen_faces_are_explained():
    model = create_model("xception_tiny").eval()
    size = model.cfg.input_size
    crops = torch.rand(4, 3, size, size)
    settings = dataclasses.replace(PipelineConfig(), xai_method="saliency")
    stage = FusedClassifyExplain(lambda name: model, settings, torch.device("cpu"))
    _, which, attributions = stage.run(crops, explain=torch.tensor([2, 0]))
    assert which.tolist() == [2, 0] and attributions.shape == (2, 3, size, size)
    _, _, alone = stage.run(crops[2:3], explain=torch.tensor([0]))
    assert torch.allclose(attributions[0], alone[0], rtol=1e-3, atol=1e-6)
