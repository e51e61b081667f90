"""Tests of engine.xai: attributions against Captum, the guided twin, prepare_map, errors.

Captum is the reference here (and only here). Models are tiny: a ReLU CNN defined below
(in-place ReLU, one ReLU module reused, BatchNorm in eval mode, a residual connection)
and timm's ``test_resnet`` (ReLU) and ``test_efficientnet`` (SiLU, sigmoid SE gates).
"""

from __future__ import annotations

import copy
import gc
import logging
import warnings
import weakref
from typing import Any

import pytest
import timm
import torch
from captum.attr import GuidedBackprop, InputXGradient, IntegratedGradients, Saliency
from captum.attr._utils.approximation_methods import approximation_parameters
from timm.layers import activations as timm_act
from timm.layers import activations_me as timm_act_me
from torch import Tensor, nn

from engine.errors import VeritasError
from engine.models import create_model
from engine.xai import (
    GUIDED_ACTIVATIONS,
    IG_METHODS,
    METHODS,
    GuidedActivation,
    InvalidTargetError,
    InvalidXAIOptionError,
    NotAnImageBatchError,
    TargetOutOfRangeError,
    UnexpectedModelOutputError,
    UnknownXAIMethodError,
    attribute,
    guided_activation_count,
    guided_model,
    integration_nodes,
    map_to_uint8,
    prepare_map,
    resolve_rule,
    uint8_to_map,
)

pytestmark = [
    pytest.mark.numerics,
    pytest.mark.filterwarnings("ignore::UserWarning"),  # Captum's hook notices
]

CAPTUM = {
    "saliency": Saliency,
    "input_x_gradient": InputXGradient,
    "integrated_gradients": IntegratedGradients,
    "guided_backprop": GuidedBackprop,
}
IG_STEPS = 8
EXACT = {"rtol": 1e-10, "atol": 1e-13}  # same float64 ops as Captum
IG_TOL = {"rtol": 1e-6, "atol": 1e-10}  # Captum rounds IG step sizes to float32


# --- models ----------------------------------------------------------------------------


class _CountBackward(torch.autograd.Function):
    """Identity whose backward counts backward passes through the model's input."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, calls: dict[str, int]) -> Tensor:
        ctx.calls = calls
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        ctx.calls["backward"] += 1
        return grad, None


class TinyReLUNet(nn.Module):
    """ReLU CNN: in-place ReLU reused twice, eval BatchNorm, a residual, internal norm."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.calls = {"forward": 0, "backward": 0}
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Sequential(
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, num_classes),
        )
        for bn in (self.bn1, self.bn2):  # eval BatchNorm that is not the identity
            nn.init.uniform_(bn.weight, 0.5, 1.5)
            nn.init.uniform_(bn.bias, -0.2, 0.2)
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: Tensor) -> Tensor:
        self.calls["forward"] += 1
        x = _CountBackward.apply(x, self.calls)
        x = (x - self.mean) / self.std
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.relu(self.bn2(self.conv2(h)) + h)  # residual; the same ReLU module again
        return self.head(h)


def make_model(name: str, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    if name == "tiny":
        model: nn.Module = TinyReLUNet()
    else:
        model = timm.create_model(name, pretrained=False, num_classes=4)
    return model.eval().to(dtype)


def images(n: int = 3, size: int = 32, seed: int = 1, dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    """Read-only models; tests that modify a model make their own."""
    return {name: make_model(name) for name in ("tiny", "test_resnet", "test_efficientnet")}


def captum(method: str, model: nn.Module, x: Tensor, target: Any, **options: Any) -> Tensor:
    return CAPTUM[method](model).attribute(x, target=target, **options)


def ours_and_captum_options(method: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if method == "integrated_gradients":
        return {"n_steps": IG_STEPS}, {"n_steps": IG_STEPS}
    return {}, {}


def no_hooks(module: nn.Module) -> bool:
    return not any(
        getattr(m, name)
        for m in module.modules()
        for name in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
        )
    )


# --- agreement with Captum -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "method"),
    [
        (name, method)
        for name in ("tiny", "test_resnet", "test_efficientnet")
        for method in METHODS
        # on a SiLU network guided backprop differs from Captum's on purpose: tests below
        if (name, method) != ("test_efficientnet", "guided_backprop")
    ],
)
def test_attribute_matches_captum_with_per_sample_targets(
    models: dict[str, nn.Module], name: str, method: str
) -> None:
    model = models[name]
    x = images(3, 32 if name != "tiny" else 16)
    target = torch.tensor([0, 3, 1])
    ours_opts, ref_opts = ours_and_captum_options(method)
    ours = attribute(model, x, target, method, **ours_opts)
    ref = captum(method, model, x, target, **ref_opts)
    assert ours.shape == x.shape and ours.dtype == x.dtype
    assert ref.abs().max() > 0
    torch.testing.assert_close(ours, ref, **(IG_TOL if method == "integrated_gradients" else EXACT))


@pytest.mark.parametrize("method", METHODS)
def test_attribute_matches_captum_in_float32(method: str) -> None:
    model = make_model("test_resnet", dtype=torch.float32)
    x = images(2, 48, dtype=torch.float32)
    ours_opts, ref_opts = ours_and_captum_options(method)
    ours = attribute(model, x, 2, method, **ours_opts)
    ref = captum(method, model, x, 2, **ref_opts)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-7)


def test_saliency_abs_false_is_the_signed_gradient(models: dict[str, nn.Module]) -> None:
    model, x = models["tiny"], images(2, 16)
    signed = attribute(model, x, 1, "saliency", abs=False)
    ref = Saliency(model).attribute(x, target=1, abs=False)
    torch.testing.assert_close(signed, ref, **EXACT)
    assert (signed < 0).any()
    torch.testing.assert_close(attribute(model, x, 1, "saliency"), signed.abs(), **EXACT)


@pytest.mark.parametrize("ig_method", IG_METHODS)
def test_integrated_gradients_rules_and_chunking_match_captum(
    models: dict[str, nn.Module], ig_method: str
) -> None:
    model, x, target = models["tiny"], images(3, 16), torch.tensor([2, 0, 1])
    whole = attribute(model, x, target, "integrated_gradients", n_steps=7, ig_method=ig_method)
    ref = IntegratedGradients(model).attribute(x, target=target, n_steps=7, method=ig_method)
    torch.testing.assert_close(whole, ref, **IG_TOL)
    # 5 rows per forward: chunks cut through steps (3 samples per step) and end short.
    chunked = attribute(
        model,
        x,
        target,
        "integrated_gradients",
        n_steps=7,
        ig_method=ig_method,
        internal_batch_size=5,
    )
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-15)
    ref_chunked = IntegratedGradients(model).attribute(
        x, target=target, n_steps=7, method=ig_method, internal_batch_size=6
    )
    torch.testing.assert_close(chunked, ref_chunked, **IG_TOL)


def test_integrated_gradients_baselines_match_captum(models: dict[str, nn.Module]) -> None:
    model, x = models["tiny"], images(2, 16)
    for baselines in (0.5, images(1, 16, seed=7), images(2, 16, seed=8)):
        ours = attribute(model, x, 3, "integrated_gradients", baselines=baselines, n_steps=8)
        ref = IntegratedGradients(model).attribute(x, target=3, baselines=baselines, n_steps=8)
        torch.testing.assert_close(ours, ref, **IG_TOL)


def test_integrated_gradients_completeness(models: dict[str, nn.Module]) -> None:
    """Sundararajan et al.'s axiom: attributions sum to f(x) - f(baseline)."""
    model, x = models["test_efficientnet"], images(2, 32)
    ig = attribute(model, x, 1, "integrated_gradients", n_steps=64)
    with torch.no_grad():
        gap = model(x)[:, 1] - model(torch.zeros_like(x))[:, 1]
    torch.testing.assert_close(ig.sum(dim=(1, 2, 3)), gap, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("ig_method", IG_METHODS)
def test_integration_nodes_are_captums(ig_method: str) -> None:
    step_sizes, alphas = approximation_parameters(ig_method)
    for n in (2, 5, 50):
        ours_alphas, ours_weights = integration_nodes(ig_method, n)
        torch.testing.assert_close(
            torch.tensor(ours_alphas), torch.tensor(alphas(n)), rtol=1e-6, atol=1e-7
        )
        torch.testing.assert_close(
            torch.tensor(ours_weights), torch.tensor(step_sizes(n)), rtol=1e-12, atol=0.0
        )


# --- batching --------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_per_sample_results(models: dict[str, nn.Module], method: str) -> None:
    model, x, target = models["test_resnet"], images(3, 32), torch.tensor([3, 0, 2])
    options = {"n_steps": 6} if method == "integrated_gradients" else {}
    batch = attribute(model, x, target, method, **options)
    for i in range(3):
        single = attribute(model, x[i : i + 1], int(target[i]), method, **options)
        torch.testing.assert_close(batch[i : i + 1], single, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "guided_backprop"])
def test_gradient_methods_are_one_forward_and_one_backward(method: str) -> None:
    model = make_model("tiny")
    attribute(model, images(5, 16), torch.tensor([0, 1, 2, 3, 0]), method)
    assert model.calls == {"forward": 1, "backward": 1}


def test_integrated_gradients_is_one_batch_of_steps_chunked_by_rows() -> None:
    model, x = make_model("tiny"), images(3, 16)
    attribute(model, x, 1, "integrated_gradients", n_steps=10)
    assert model.calls == {"forward": 1, "backward": 1}
    model.calls.update(forward=0, backward=0)
    attribute(model, x, 1, "integrated_gradients", n_steps=10, internal_batch_size=7)
    assert model.calls == {"forward": 5, "backward": 5}  # ceil(30 / 7)


@pytest.mark.parametrize("method", METHODS)
def test_caller_tensor_graph_and_parameter_grads_are_untouched(method: str) -> None:
    model = make_model("tiny")
    leaf = images(2, 16).requires_grad_()
    x = leaf * 1.0  # non-leaf, part of the caller's graph
    before = x.detach().clone()
    options = {"n_steps": 4} if method == "integrated_gradients" else {}
    result = attribute(model, x, 1, method, **options)
    assert not result.requires_grad
    assert torch.equal(x.detach(), before) and x.grad_fn is not None
    assert leaf.grad is None
    assert all(p.grad is None for p in model.parameters())
    torch.testing.assert_close(
        result, attribute(model, before, 1, method, **options), rtol=0, atol=0
    )


def test_training_mode_is_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    model = make_model("tiny").train()
    with caplog.at_level(logging.WARNING, logger="engine.xai.attribute"):
        attribute(model, images(2, 16), 0, "saliency")
        attribute(model, images(2, 16), 0, "saliency")
    assert caplog.text.count("training mode") == 1


def test_attribute_works_under_no_grad_and_inference_mode(models: dict[str, nn.Module]) -> None:
    model, x = models["tiny"], images(2, 16)
    expected = attribute(model, x, 0, "guided_backprop")
    with torch.no_grad():
        assert torch.equal(attribute(model, x, 0, "guided_backprop"), expected)
    with torch.inference_mode():
        x_inf = x.clone()
        assert torch.equal(attribute(model, x_inf, 0, "guided_backprop"), expected)


# --- the guided twin -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", "test_resnet", "test_efficientnet"])
def test_guided_twin_shares_tensors_and_computes_the_same_forward(
    models: dict[str, nn.Module], name: str
) -> None:
    model = models[name]
    twin = guided_model(model)
    assert twin is not model
    assert [id(p) for p in twin.parameters()] == [id(p) for p in model.parameters()]
    assert [id(b) for b in twin.buffers()] == [id(b) for b in model.buffers()]
    assert any(isinstance(m, GuidedActivation) for m in twin.modules())
    x = images(2, 32)
    with torch.no_grad():
        assert torch.equal(twin(x), model(x))


def test_guided_twin_leaves_no_hooks_and_does_not_mutate_the_model() -> None:
    model = make_model("tiny")
    types_before = [(n, type(m)) for n, m in model.named_modules(remove_duplicate=False)]
    state_before = {k: (v.data_ptr(), v.clone()) for k, v in model.state_dict().items()}
    x = images(2, 16)
    with torch.no_grad():
        out_before = model(x)
    guided = attribute(model, x, 1, "guided_backprop")
    plain = attribute(model, x, 1, "saliency", abs=False)
    assert not torch.equal(guided, plain)
    assert [(n, type(m)) for n, m in model.named_modules(remove_duplicate=False)] == types_before
    assert type(model.relu) is nn.ReLU and type(model.head[1]) is nn.ReLU
    for key, value in model.state_dict().items():
        assert value.data_ptr() == state_before[key][0]
        assert torch.equal(value, state_before[key][1])
    assert no_hooks(model) and no_hooks(guided_model(model))
    module_globals = torch.nn.modules.module
    assert not module_globals._global_forward_hooks
    assert not module_globals._global_forward_pre_hooks
    assert not module_globals._global_backward_hooks
    with torch.no_grad():
        assert torch.equal(model(x), out_before)
    # the plain model still has its plain gradient
    x_leaf = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(model(x_leaf)[:, 1].sum(), x_leaf)
    torch.testing.assert_close(grad, plain, **EXACT)


def test_guided_twin_guides_nested_and_reused_activations_but_not_gates(
    models: dict[str, nn.Module],
) -> None:
    tiny = models["tiny"]
    twin = guided_model(tiny)
    assert guided_activation_count(tiny) == 2  # the reused ReLU once, the head's ReLU
    assert isinstance(twin.relu, GuidedActivation) and twin.relu.act is tiny.relu
    assert twin.conv1 is tiny.conv1  # modules with nothing to guide are shared
    effnet = models["test_efficientnet"]
    twin = guided_model(effnet)
    silus = {id(m) for m in effnet.modules() if isinstance(m, nn.SiLU)}
    assert guided_activation_count(effnet) == len(silus) > 0
    named = dict(twin.named_modules())
    for name, module in named.items():
        if isinstance(module, nn.SiLU):  # only as the wrapped original of a guided module
            assert isinstance(named[name.rsplit(".", 1)[0]], GuidedActivation)
    assert isinstance(twin.bn1.act, GuidedActivation)  # BatchNormAct2d's attribute
    gates = [m for m in twin.modules() if isinstance(m, nn.Sigmoid)]
    assert len(gates) == 2 and all(type(g) is nn.Sigmoid for g in gates)


def test_guided_twin_is_cached_and_follows_parameter_updates() -> None:
    model = make_model("tiny", seed=0)
    x, target = images(2, 16), torch.tensor([1, 2])
    twin = guided_model(model)
    assert guided_model(model) is twin
    model.load_state_dict(make_model("tiny", seed=5).state_dict())  # in-place copy
    torch.testing.assert_close(
        attribute(model, x, target, "guided_backprop"),
        captum("guided_backprop", model, x, target),
        **EXACT,
    )
    with torch.no_grad():
        model.conv1.weight.mul_(-1.5)  # in-place edit, e.g. an optimizer step
    torch.testing.assert_close(
        attribute(model, x, target, "guided_backprop"),
        captum("guided_backprop", model, x, target),
        **EXACT,
    )
    assert guided_model(model) is twin


@pytest.mark.parametrize("name", ["tiny", "test_efficientnet"])
def test_guided_twin_follows_dtype_conversion_and_swapped_parameters(name: str) -> None:
    """Copied modules (the root, timm's BatchNormAct2d) see tensors swapped in later."""
    model = make_model(name, dtype=torch.float32)
    guided_model(model)
    model.double()  # new .data in the same Parameters; new buffer tensors in the dicts
    x = images(2, 16)
    fresh = copy.deepcopy(model)  # its own, new twin
    torch.testing.assert_close(
        attribute(model, x, 0, "guided_backprop"),
        attribute(fresh, x, 0, "guided_backprop"),
        **EXACT,
    )
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        old = next(model.parameters())
        model.float()  # puts new Parameter objects into the modules' dicts
        assert next(model.parameters()) is not old
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(False)
    x32 = x.float()
    fresh = copy.deepcopy(model)
    torch.testing.assert_close(
        attribute(model, x32, 0, "guided_backprop"),
        attribute(fresh, x32, 0, "guided_backprop"),
        rtol=0,
        atol=0,
    )
    if name == "tiny":
        torch.testing.assert_close(
            attribute(model, x32, 0, "guided_backprop"),
            captum("guided_backprop", model, x32, 0),
            rtol=1e-5,
            atol=1e-7,
        )


def test_guided_twin_follows_mode_and_is_rebuilt_when_modules_change() -> None:
    model = make_model("tiny")
    twin = guided_model(model)
    model.train()
    assert all(m.training for m in guided_model(model).modules())
    model.eval()
    assert not any(m.training for m in guided_model(model).modules())
    model.head[4] = nn.Linear(16, 6, dtype=torch.float64)  # a new classifier
    rebuilt = guided_model(model)
    assert rebuilt is not twin and rebuilt.head[4] is model.head[4]
    x = images(2, 16)
    torch.testing.assert_close(
        attribute(model, x, 5, "guided_backprop"), captum("guided_backprop", model, x, 5), **EXACT
    )


def test_guided_twin_cache_does_not_keep_the_model_alive() -> None:
    model = make_model("tiny")
    attribute(model, images(1, 16), 0, "guided_backprop")
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_guided_twin_compiles_without_graph_breaks() -> None:
    model = make_model("test_efficientnet", dtype=torch.float32)
    twin = guided_model(model)
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)
    x = images(2, 32, dtype=torch.float32).requires_grad_()
    (grad,) = torch.autograd.grad(compiled(x)[:, 1].sum(), x)
    torch.testing.assert_close(
        grad, attribute(model, x, 1, "guided_backprop"), rtol=1e-5, atol=1e-8
    )


# --- guided semantics beyond ReLU ------------------------------------------------------


def test_silu_network_guided_differs_from_gradient_and_the_captum_rule_is_captums(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model, x, target = make_model("test_efficientnet"), images(2, 48), torch.tensor([1, 3])
    plain = attribute(model, x, target, "saliency", abs=False)
    guided = attribute(model, x, target, "guided_backprop")  # auto: textbook on SiLU
    assert resolve_rule(model) == "textbook"
    assert (guided - plain).abs().max() > 0.1 * plain.abs().max()
    with caplog.at_level(logging.WARNING, logger="engine.xai.guided"):
        captums = attribute(model, x, target, "guided_backprop", rule="captum")
    assert "nothing to guide" in caplog.text and "SiLU" in caplog.text
    assert guided_activation_count(model, rule="captum") == 0
    ref = captum("guided_backprop", model, x, target)
    torch.testing.assert_close(captums, ref, **EXACT)
    torch.testing.assert_close(captums, plain, **EXACT)  # what the paper's code computed


def xception_tiny(dtype: torch.dtype = torch.float64) -> nn.Module:
    """Veritas's XceptionNet (the published detector's architecture), scaled down."""
    torch.manual_seed(0)
    model = create_model("xception_tiny").eval().to(dtype)
    for m in model.modules():  # eval BatchNorm that is not the identity
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model


def test_guided_backprop_on_xceptionnet_is_captums_by_default_and_textbook_on_request() -> None:
    """XceptionNet's blocks start with a ReLU of the block input, which the skip also
    reads: Captum clamps that input's total gradient, the textbook rule only the ReLU's
    branch. The default (auto) is Captum's on this ReLU network."""
    model, x, target = xception_tiny(), images(2, 64), torch.tensor([0, 1])
    ref = captum("guided_backprop", model, x, target)
    assert resolve_rule(model) == "captum"
    torch.testing.assert_close(attribute(model, x, target, "guided_backprop"), ref, **EXACT)
    torch.testing.assert_close(
        attribute(model, x, target, "guided_backprop", rule="captum"), ref, **EXACT
    )
    textbook = attribute(model, x, target, "guided_backprop", rule="textbook")
    assert (textbook - ref).abs().max() > 0.05 * ref.abs().max()  # a different map
    assert no_hooks(model)


def test_the_captum_rule_compiles_without_graph_breaks() -> None:
    model = xception_tiny(torch.float32)
    twin = guided_model(model, rule="captum")
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)
    x = images(2, 64, dtype=torch.float32).requires_grad_()
    (grad,) = torch.autograd.grad(compiled(x)[:, 0].sum(), x)
    expected = attribute(model, x, 0, "guided_backprop", rule="captum")
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)


def test_an_unknown_guided_rule_is_refused() -> None:
    with pytest.raises(InvalidXAIOptionError, match="rule"):
        attribute(make_model("tiny"), images(1, 16), 0, "guided_backprop", rule="paper")


def _one_hidden_layer(act: nn.Module) -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 10), act, nn.Linear(10, 3)).double()


def test_guided_rule_on_a_silu_net_equals_the_rule_by_hand() -> None:
    net = _one_hidden_layer(nn.SiLU())
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    target = torch.tensor([0, 2, 1, 2])
    w1, b1, w2 = net[1].weight, net[1].bias, net[3].weight
    with torch.no_grad():
        h = x.flatten(1) @ w1.T + b1
        sig = torch.sigmoid(h)
        silu_prime = sig * (1 + h * (1 - sig))
        expected = (torch.relu(silu_prime * w2[target]) @ w1).view_as(x)
        plain = ((silu_prime * w2[target]) @ w1).view_as(x)
    guided = attribute(net, x, target, "guided_backprop")
    torch.testing.assert_close(guided, expected, **EXACT)
    assert not torch.allclose(guided, plain)


ACTIVATIONS = [
    nn.ReLU(),
    nn.ReLU(inplace=True),
    nn.ReLU6(),
    nn.LeakyReLU(0.1),
    nn.ELU(0.7),
    nn.ELU(inplace=True),
    nn.SiLU(),
    nn.SiLU(inplace=True),
    nn.GELU(),
    nn.GELU("tanh"),
    nn.Mish(),
    nn.Hardswish(),
    timm_act.Swish(),
    timm_act.Swish(inplace=True),
    timm_act_me.SwishMe(),
    timm_act.Mish(),
    timm_act_me.MishMe(),
    timm_act.GELU(),
    timm_act.GELUTanh(),
    timm_act.QuickGELU(),
    timm_act.HardSwish(),
    timm_act_me.HardSwishMe(),
]


@pytest.mark.parametrize(
    "act",
    ACTIVATIONS,
    ids=lambda a: f"{type(a).__name__}{'-inplace' if getattr(a, 'inplace', False) else ''}",
)
def test_guided_rule_is_relu_of_local_gradient_for_every_activation(act: nn.Module) -> None:
    """grad_in = relu(phi'(x) * grad_out), with phi' from autograd on the activation."""
    net = _one_hidden_layer(act)
    x = torch.randn(5, 3, 2, 2, dtype=torch.float64) * 3
    target = torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        h = net[1](x.flatten(1))
    h_leaf = h.clone().requires_grad_()
    (phi_prime,) = torch.autograd.grad(act(h_leaf * 1.0).sum(), h_leaf)
    expected = (torch.relu(phi_prime * net[3].weight[target]) @ net[1].weight).view_as(x)
    torch.testing.assert_close(
        attribute(net, x, target, "guided_backprop"), expected, rtol=1e-9, atol=1e-12
    )
    with torch.no_grad():
        assert torch.equal(guided_model(net)(x), net(x))


def test_every_registered_activation_is_tested() -> None:
    tested = {type(a) for a in ACTIVATIONS}
    assert set(GUIDED_ACTIVATIONS) <= tested


@pytest.mark.parametrize("gate", [nn.Sigmoid(), nn.Tanh(), nn.Softmax(dim=1)])
def test_gates_keep_their_plain_gradient(gate: nn.Module, caplog: pytest.LogCaptureFixture) -> None:
    net = _one_hidden_layer(gate)
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="engine.xai.guided"):
        guided = attribute(net, x, 1, "guided_backprop")
    assert "nothing to guide" in caplog.text
    torch.testing.assert_close(guided, attribute(net, x, 1, "saliency", abs=False), **EXACT)


# --- prepare_map -----------------------------------------------------------------------


def _attributions(n: int = 3, size: int = 20, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([1e-6, 1.0, 300.0][:n]).view(n, 1, 1, 1)
    return torch.randn(n, 3, size, size, generator=g) ** 3 * scales  # heavy tails


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("size", [20, 32, 7])
def test_prepare_map_is_quantized_in_unit_range(method: str, size: int) -> None:
    maps = prepare_map(_attributions(), method, size)
    assert maps.shape == (3, 3, size, size) and maps.dtype == torch.float32
    assert maps.min() >= 0 and maps.max() <= 1
    levels = maps * 255
    assert torch.equal(levels, levels.round())
    if method == "saliency":  # unsigned: |a| fills [0, 1]
        assert (maps < 0.05).any() and maps.max() > 0.1
    else:  # signed: mid-grey 128/255 is zero, both sides used
        assert (maps < 0.45).any() and (maps > 0.55).any()
    if size == 20:  # no resize: each sample reaches full scale at its own quantile
        assert torch.equal(maps.amax(dim=(1, 2, 3)), torch.ones(3))


def test_prepare_map_follows_the_documented_rule() -> None:
    """Reference with torch.quantile at the attribution's own size (resize is a no-op)."""
    a = _attributions(3, 20)
    q = 0.9
    s = torch.quantile(a.abs().flatten(1), q, dim=1).view(-1, 1, 1, 1)
    signed = torch.round(255 * (0.5 + 0.5 * (a / s).clamp(-1, 1))) / 255
    unsigned = torch.round(255 * (a.abs() / s).clamp(0, 1)) / 255
    assert torch.equal(prepare_map(a, "guided_backprop", 20, quantile=q), signed)
    assert torch.equal(prepare_map(a.abs(), "saliency", 20, quantile=q), unsigned)
    assert torch.equal(prepare_map(a.double(), "guided_backprop", 20, quantile=q), signed)
    # per-sample: each map is what the sample alone gives (no loop, no cross-talk)
    batch = prepare_map(a, "integrated_gradients", 12)
    for i in range(3):
        assert torch.equal(batch[i], prepare_map(a[i : i + 1], "integrated_gradients", 12)[0])


def test_prepare_map_zero_attribution_is_mid_grey_or_black() -> None:
    zeros = torch.zeros(2, 3, 16, 16)
    for method in ("input_x_gradient", "integrated_gradients", "guided_backprop"):
        assert torch.equal(prepare_map(zeros, method, 8), torch.full((2, 3, 8, 8), 128 / 255))
    assert torch.equal(prepare_map(zeros, "saliency", 8), torch.zeros(2, 3, 8, 8))
    assert torch.equal(
        prepare_map(zeros, "saliency", 8, signed=True), torch.full((2, 3, 8, 8), 128 / 255)
    )


def test_prepare_map_sign_and_signed_override() -> None:
    a = torch.zeros(1, 3, 10, 10)
    a[..., :5] = 2.0
    a[..., 5:] = -2.0
    signed = prepare_map(a, "guided_backprop", 10, quantile=1.0)
    assert torch.all(signed[..., :5] == 1.0) and torch.all(signed[..., 5:] == 0.0)
    unsigned = prepare_map(a, "guided_backprop", 10, quantile=1.0, signed=False)
    assert torch.all(unsigned[..., :5] == 1.0) and torch.all(unsigned[..., 5:] == 0.0)
    saliency_signed = prepare_map(a, "saliency", 10, quantile=1.0, signed=True)
    assert torch.equal(saliency_signed, signed)


def test_prepare_map_is_scale_invariant() -> None:
    a = _attributions()
    base = prepare_map(a, "guided_backprop", 24)
    for k in (0.25, 4.0, 1024.0):  # powers of two scale exactly in floating point
        assert torch.equal(prepare_map(a * k, "guided_backprop", 24), base)
    assert (prepare_map(a * 3.7, "guided_backprop", 24) - base).abs().max() <= 1 / 255 + 1e-7


def test_prepare_map_uint8_round_trip_is_exact() -> None:
    maps = prepare_map(_attributions(), "integrated_gradients", 32)
    stored = map_to_uint8(maps)
    assert stored.dtype == torch.uint8
    assert torch.equal(uint8_to_map(stored), maps)
    assert torch.equal(map_to_uint8(uint8_to_map(stored)), stored)


def test_prepare_map_grey_attributions_and_non_finite_values() -> None:
    a = _attributions(2, 16)[:, :1].clone()
    a[0, 0, 0, 0] = float("nan")
    a[1, 0, 0, 0] = float("inf")
    maps = prepare_map(a, "guided_backprop", 16)
    assert maps.shape == (2, 3, 16, 16) and torch.isfinite(maps).all()
    assert torch.equal(maps[:, 0], maps[:, 2])
    assert maps[0, 0, 0, 0] == 128 / 255 and maps[1, 0, 0, 0] == 1.0


def test_prepare_map_handles_more_than_torch_quantile_limit() -> None:
    a = torch.randn(3, 3, 1400, 1400)  # 17.6M elements: torch.quantile refuses this
    maps = prepare_map(a, "guided_backprop", 32)
    assert maps.shape == (3, 3, 32, 32) and torch.isfinite(maps).all()


# --- errors ----------------------------------------------------------------------------


def test_unknown_method_error_lists_methods(models: dict[str, nn.Module]) -> None:
    for call in (
        lambda: attribute(models["tiny"], images(1, 16), 0, "gradcam"),
        lambda: prepare_map(torch.zeros(1, 3, 4, 4), "gradcam", 4),
    ):
        with pytest.raises(UnknownXAIMethodError) as info:
            call()
        assert isinstance(info.value, ValueError) and isinstance(info.value, VeritasError)
        assert "'gradcam'" in str(info.value)
        assert all(m in str(info.value) for m in METHODS)


@pytest.mark.parametrize("target", [4, -1, torch.tensor([0, 9])])
def test_target_out_of_range_is_a_clear_error(models: dict[str, nn.Module], target: Any) -> None:
    with pytest.raises(TargetOutOfRangeError, match=r"\[0, 4\)"):
        attribute(models["tiny"], images(2, 16), target, "saliency")


@pytest.mark.parametrize(
    "target",
    [1.0, True, "0", torch.tensor([0, 1, 2]), torch.tensor([0.0, 1.0]), torch.zeros(2, 1).long()],
)
def test_target_of_wrong_type_or_shape_is_a_clear_error(
    models: dict[str, nn.Module], target: Any
) -> None:
    with pytest.raises(InvalidTargetError, match="batch of 2"):
        attribute(models["tiny"], images(2, 16), target, "saliency")


@pytest.mark.parametrize("inputs", [torch.rand(3, 16, 16), torch.zeros(1, 3, 8, 8).long(), [[0.0]]])
def test_inputs_not_a_float_image_batch_is_a_clear_error(
    models: dict[str, nn.Module], inputs: Any
) -> None:
    with pytest.raises(NotAnImageBatchError, match=r"\(N, C, H, W\)"):
        attribute(models["tiny"], inputs, 0, "saliency")


@pytest.mark.parametrize(
    "options",
    [
        {"ig_method": "simpson"},
        {"n_steps": 0},
        {"ig_method": "riemann_left", "n_steps": 1},
        {"internal_batch_size": 0},
        {"baselines": torch.zeros(5, 3, 16, 16)},
    ],
)
def test_invalid_integrated_gradients_options(
    models: dict[str, nn.Module], options: dict[str, Any]
) -> None:
    with pytest.raises(InvalidXAIOptionError):
        attribute(models["tiny"], images(2, 16), 0, "integrated_gradients", **options)


def test_options_of_another_method_are_rejected(models: dict[str, nn.Module]) -> None:
    with pytest.raises(TypeError, match="n_steps"):
        attribute(models["tiny"], images(1, 16), 0, "saliency", n_steps=5)


def test_model_not_returning_logits_is_a_clear_error() -> None:
    with pytest.raises(UnexpectedModelOutputError, match=r"\(2, num_classes\)"):
        attribute(nn.Conv2d(3, 2, 3), torch.rand(2, 3, 8, 8), 0, "saliency")


def test_prepare_map_invalid_arguments() -> None:
    a = torch.zeros(1, 3, 4, 4)
    for kwargs in ({"size": 0}, {"size": 4, "quantile": 0.0}, {"size": 4, "quantile": 1.5}):
        with pytest.raises(InvalidXAIOptionError):
            prepare_map(a, "saliency", **kwargs)
    with pytest.raises(InvalidXAIOptionError):
        prepare_map(torch.zeros(1, 2, 4, 4), "saliency", 4)
    with pytest.raises(NotAnImageBatchError):
        prepare_map(torch.zeros(3, 4, 4), "saliency", 4)
    with pytest.raises(InvalidXAIOptionError):
        uint8_to_map(torch.zeros(1, 3, 4, 4))


def test_empty_batch_gives_empty_attributions(models: dict[str, nn.Module]) -> None:
    x = torch.zeros(0, 3, 16, 16, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert attribute(models["tiny"], x, 0, "guided_backprop").shape == x.shape
    assert prepare_map(x, "guided_backprop", 8).shape == (0, 3, 8, 8)
