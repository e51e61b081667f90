"""Attack-specific behaviour of the white-box attacks: APGD, BIM, MI-, TI-, SI-NI-FGSM,
C&W L2 and DeepFool. What every attack must do (bounds, range, determinism, model mode)
is in ``test_attacks.py``; the comparison with torchattacks in
``test_attacks_torchattacks.py``.

Besides the small trained CNN, two models with known answers: a linear classifier
(the smallest L2 perturbation is |f| / ‖w‖, what C&W and DeepFool look for) and a
"bowl" whose loss peaks at a point inside the ε-ball (which a fixed large step can only
circle, and APGD's step halving can reach).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from training.attacks import EPS_PAPER, AttackInputError, create_attack, margin_loss
from training.attacks.apgd import apgd_checkpoints
from training.attacks.bim import kurakin_steps
from training.attacks.tifgsm import translation_kernel

pytestmark = pytest.mark.numerics  # also run as an AVX2-only CPU would (Makefile)


class LinearClassifier(nn.Module):
    """Logits ``W x + b`` of flattened images; ``b`` centres the logits on ``images``
    so that every class is predicted for some of them."""

    def __init__(self, images: torch.Tensor, classes: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", 0.1 * torch.randn(classes, images[0].numel(), generator=g))
        self.register_buffer("b", -(images.flatten(1) @ self.w.T).mean(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T + self.b


class Bowl(nn.Module):
    """Two logits (−‖x − t‖², 0.001): label 1 always wins, CE is largest at x = t."""

    def __init__(self, t: torch.Tensor) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z0 = -((x - self.t) ** 2).flatten(1).sum(1)
        return torch.stack([z0, torch.full_like(z0, 1e-3)], 1)


def grey_images(n: int = 8, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (0.5 + 0.15 * torch.randn(n, 3, 8, 8, generator=g)).clamp(0.1, 0.9)


def min_l2_to_boundary(model: LinearClassifier, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Predicted labels and the exact smallest L2 distance to another class's region."""
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    w_y = model.w[y]
    dist = (z.gather(1, y[:, None]) - z).abs() / (model.w[None] - w_y[:, None]).norm(dim=2)
    dist.scatter_(1, y[:, None], float("inf"))
    return y, dist.min(1).values


def l2(adv: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return (adv - images).flatten(1).norm(dim=1)


def total_variation(delta: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels, relative to the mean |delta|."""
    tv = (delta[..., 1:, :] - delta[..., :-1, :]).abs().mean() + (
        delta[..., :, 1:] - delta[..., :, :-1]
    ).abs().mean()
    return tv / delta.abs().mean()


# --- APGD ----------------------------------------------------------------------------------------


def test_apgd_checkpoints_are_the_papers_at_100_iterations():
    # p_j = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (Croce & Hein, Sec. 3.2)
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    # In whole iterations, as the authors' code: spacing 4, 3, 2, then 1 at 20 steps.
    assert apgd_checkpoints(20) == [4, 7, 9, *range(10, 21)]


def test_apgd_defaults_are_the_papers():
    apgd = create_attack("apgd", nn.Identity())
    assert (apgd.eps, apgd.steps, apgd.n_restarts) == (EPS_PAPER, 100, 5)
    assert (apgd.momentum, apgd.rho) == (0.75, 0.75)


def test_apgd_halves_its_step_to_reach_an_optimum_inside_the_ball():
    """A fixed step of 2ε circles the peak forever; APGD's halving closes in on it."""
    x = torch.full((4, 3, 8, 8), 0.5)
    sign = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    bowl = Bowl(x + 0.5 * EPS_PAPER * sign)
    y = torch.ones(4, dtype=torch.long)
    apgd = create_attack("apgd", bowl, steps=50, n_restarts=1)(x, y)
    fixed = create_attack("pgd", bowl, steps=50, alpha=2 * EPS_PAPER, loss="ce")(x, y)
    assert (fixed - bowl.t).abs().max() > EPS_PAPER  # the 2ε step overshoots every time
    assert (apgd - bowl.t).abs().max() < 0.05 * EPS_PAPER


def test_apgd_restarts_keep_every_success_and_the_best_loss(small_model, clean_batch):
    images, labels = clean_batch
    kw = {"steps": 10, "loss": "ce"}
    one = create_attack("apgd", small_model, n_restarts=1, **kw).run(images, labels)
    five = create_attack("apgd", small_model, n_restarts=5, **kw).run(images, labels)
    assert not (one.success & ~five.success).any()  # restart 1 is the same run
    assert (five.queries > one.queries).all()
    robust = ~five.success  # these come back at their highest loss over all restarts
    assert robust.any()
    with torch.no_grad():
        loss_one = F.cross_entropy(small_model(one.adv), labels, reduction="none")[robust]
        loss_five = F.cross_entropy(small_model(five.adv), labels, reduction="none")[robust]
    assert (loss_five >= loss_one - 1e-5).all() and (loss_five > loss_one + 1e-4).any()


def test_apgd_cw_loss_fools_as_the_ce_loss_does(small_model, clean_batch):
    """With two classes CE = softplus(margin): the same ascent directions, so the CW
    margin (which replaces DLR) is as strong as CE; both beat doing nothing."""
    images, labels = clean_batch
    ce = create_attack("apgd", small_model, steps=20, n_restarts=1, loss="ce").run(images, labels)
    cw = create_attack("apgd", small_model, steps=20, n_restarts=1, loss="cw").run(images, labels)
    assert ce.success.sum() >= 4
    assert abs(int(ce.success.sum()) - int(cw.success.sum())) <= 1
    # and for the samples neither fools, APGD-CW returns its highest-margin point
    with torch.no_grad():
        robust = ~cw.success
        assert (
            margin_loss(small_model(cw.adv), labels) > margin_loss(small_model(images), labels)
        )[robust].all()


# --- BIM, MI-FGSM, TI-FGSM, SI-NI-FGSM -----------------------------------------------------------


def test_bim_defaults_follow_kurakin():
    assert kurakin_steps(16 / 255) == 20  # min(16 + 4, 1.25·16)
    assert kurakin_steps(4 / 255) == 5  # min(8, 5)
    assert kurakin_steps(2 / 255) == 3  # min(6, 2.5), rounded up
    bim = create_attack("bim", nn.Identity())
    assert (bim.eps, bim.steps, bim.alpha, bim.random_start) == (EPS_PAPER, 20, 1 / 255, False)


def test_bim_is_iterative_fgsm_from_the_clean_image(small_model, clean_batch):
    images, labels = clean_batch
    bim = create_attack("bim", small_model, steps=5)(images, labels)
    adv = images.clone()
    for _ in range(5):  # the paper's update, written out
        adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(small_model(adv), labels), adv)
        adv = torch.min(
            torch.max(adv.detach() + grad.sign() / 255, images - EPS_PAPER), images + EPS_PAPER
        ).clamp(0, 1)
    assert torch.allclose(bim, adv, atol=1e-6)


def test_mifgsm_accumulates_l1_normalized_gradients(small_model, clean_batch):
    """Dong et al.'s update g ← μg + ∇/‖∇‖₁ written out (with the sum, not the mean)."""
    images, labels = clean_batch
    ours = create_attack("mifgsm", small_model, steps=4, decay=0.5)(images, labels)
    adv, g, alpha = images.clone(), torch.zeros_like(images), EPS_PAPER / 4
    for _ in range(4):
        adv.requires_grad_(True)
        loss = F.cross_entropy(small_model(adv), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, adv)
        g = 0.5 * g + grad / grad.abs().sum(dim=(1, 2, 3), keepdim=True)
        adv = torch.min(
            torch.max(adv.detach() + alpha * g.sign(), images - EPS_PAPER), images + EPS_PAPER
        ).clamp(0, 1)
    assert torch.allclose(ours, adv, atol=1e-6)


def test_mifgsm_momentum_changes_the_path_and_without_it_is_bim(small_model, clean_batch):
    images, labels = clean_batch
    kw = {"steps": 10, "alpha": EPS_PAPER / 10}
    plain = create_attack("mifgsm", small_model, decay=0.0, **kw)(images, labels)
    assert torch.equal(plain, create_attack("bim", small_model, **kw)(images, labels))
    momentum = create_attack("mifgsm", small_model, decay=1.0, **kw)(images, labels)
    assert (momentum != plain).float().mean() > 0.01


def test_tifgsm_kernel_is_dongs_gaussian():
    stats = pytest.importorskip("scipy.stats")
    k1 = torch.from_numpy(stats.norm.pdf(torch.linspace(-3, 3, 15).double().numpy()))
    expected = torch.outer(k1, k1) / torch.outer(k1, k1).sum()
    kernel = translation_kernel("gaussian", 15, 3.0)
    assert torch.allclose(kernel.double(), expected, atol=1e-7)
    assert torch.allclose(translation_kernel("uniform", 3, 3.0), torch.full((3, 3), 1 / 9))
    with pytest.raises(AttackInputError, match="odd"):
        translation_kernel("gaussian", 4, 3.0)


def test_tifgsm_with_a_one_pixel_kernel_is_mifgsm(small_model, clean_batch):
    images, labels = clean_batch
    ti = create_attack("tifgsm", small_model, kernel_size=1)(images, labels)
    assert torch.equal(ti, create_attack("mifgsm", small_model)(images, labels))


def test_tifgsm_perturbation_is_smoother_than_mifgsm(small_model, clean_batch):
    images, labels = clean_batch
    mi = create_attack("mifgsm", small_model)(images, labels) - images
    ti = create_attack("tifgsm", small_model, kernel_size=7, nsig=2.0)(images, labels) - images
    assert total_variation(ti) < 0.5 * total_variation(mi)


def test_sinifgsm_averages_gradients_of_scaled_copies_at_the_lookahead(small_model, clean_batch):
    images, labels = clean_batch
    attack = create_attack("sinifgsm", small_model, m=3, decay=0.9)
    momentum = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    adv = images.clone()
    ours = attack.step_gradient(adv, labels, momentum)
    nes = (adv + attack.alpha * 0.9 * momentum).requires_grad_(True)
    grads = [
        torch.autograd.grad(F.cross_entropy(small_model(nes / 2**i), labels, reduction="sum"), nes)[
            0
        ]
        for i in range(3)
    ]
    assert torch.allclose(ours, torch.stack(grads).mean(0), atol=1e-6)


def test_sinifgsm_counts_m_queries_per_step_and_reduces_to_mifgsm(small_model, clean_batch):
    images, labels = clean_batch
    run = create_attack("sinifgsm", small_model, steps=4, m=5).run(images, labels)
    assert (run.queries == 4 * 5).all()
    no_momentum = create_attack("sinifgsm", small_model, m=1, decay=0.0)(images, labels)
    assert torch.equal(no_momentum, create_attack("mifgsm", small_model, decay=0.0)(images, labels))
    ni = create_attack("sinifgsm", small_model, m=1)(images, labels)  # the look-ahead matters
    assert not torch.equal(ni, create_attack("mifgsm", small_model)(images, labels))


# --- C&W L2 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [2, 3])
def test_cw_finds_the_smallest_l2_perturbation_of_a_linear_model(classes):
    images = grey_images()
    model = LinearClassifier(images, classes, seed=classes)
    labels, optimum = min_l2_to_boundary(model, images)
    run = create_attack("cw", model).run(images, labels)
    assert run.success.all()
    size = l2(run.adv, images)
    assert (size >= (1 - 1e-4) * optimum).all()  # nothing beats the optimum
    assert (size <= 1.02 * optimum + 0.005).all()  # within Adam's resolution (lr 0.01)


def test_cw_more_binary_steps_never_give_a_larger_perturbation(small_model, clean_batch):
    images, labels = clean_batch
    kw = {"steps": 30, "lr": 0.05}
    one = create_attack("cw", small_model, binary_steps=1, **kw).run(images, labels)
    four = create_attack("cw", small_model, binary_steps=4, **kw).run(images, labels)
    assert one.success.sum() >= 4 and not (one.success & ~four.success).any()
    both = one.success
    assert (l2(four.adv, images)[both] <= l2(one.adv, images)[both] + 1e-6).all()
    assert l2(four.adv, images)[both].mean() < l2(one.adv, images)[both].mean()


def test_cw_returns_unfooled_samples_unchanged_and_honours_kappa(small_model, clean_batch):
    images, labels = clean_batch
    run = create_attack("cw", small_model, steps=20, binary_steps=1, kappa=2.0).run(images, labels)
    assert run.success.any() and not run.success.all()
    assert torch.equal(run.adv[~run.success], images[~run.success])
    with torch.no_grad():
        assert (margin_loss(small_model(run.adv[run.success]), labels[run.success]) >= 2.0).all()


def test_cw_is_smaller_in_l2_than_pgd_stopping_at_the_boundary(small_model, clean_batch):
    images, labels = clean_batch
    cw = create_attack("cw", small_model, steps=30, binary_steps=3, lr=0.05).run(images, labels)
    pgd = create_attack("pgd", small_model, steps=20).run(images, labels)  # CW margin, κ = 0
    both = cw.success & pgd.success
    assert both.sum() >= 4
    assert l2(cw.adv, images)[both].mean() < 0.8 * l2(pgd.adv, images)[both].mean()


def test_cw_with_a_finite_eps_stays_in_the_linf_ball(small_model, clean_batch):
    images, labels = clean_batch
    adv = create_attack("cw", small_model, eps=8 / 255, steps=20, binary_steps=1, lr=0.05)(
        images, labels
    )
    assert (adv - images).abs().max() <= 8 / 255 + 1e-6


# --- DeepFool ------------------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [2, 3])
def test_deepfool_steps_to_the_nearest_boundary_of_a_linear_model(classes):
    """One step to the nearest (linear) boundary, plus 1e-4 and the 2% overshoot."""
    images = grey_images()
    model = LinearClassifier(images, classes, seed=classes)
    labels, optimum = min_l2_to_boundary(model, images)
    assert len(labels.unique()) > 1
    run = create_attack("deepfool", model).run(images, labels)
    assert run.success.all()
    assert torch.allclose(l2(run.adv, images), 1.02 * (optimum + 1e-4), rtol=1e-4)
    assert (run.queries == 2).all()  # one step, one look to see it flipped


def test_deepfool_batch_equals_one_image_at_a_time(small_model, clean_batch):
    """Batching is exact: in float64 (float32 convolutions of a batch and of one image
    may round differently, and DeepFool's stopping test amplifies the last bit), the
    batched iterates are each image's own."""
    model = copy.deepcopy(small_model).double()
    images, labels = clean_batch[0][:6].double(), clean_batch[1][:6]
    batch = create_attack("deepfool", model)(images, labels)
    single = torch.cat(
        [create_attack("deepfool", model)(images[i : i + 1], labels[i : i + 1]) for i in range(6)]
    )
    torch.testing.assert_close(batch, single, rtol=0, atol=1e-10)


def test_deepfool_flips_what_pgd_flips_and_more_with_a_smaller_l2(small_model, clean_batch):
    images, labels = clean_batch
    df = create_attack("deepfool", small_model).run(images, labels)
    pgd = create_attack("pgd", small_model, steps=20, loss="ce").run(images, labels)
    assert df.success.float().mean() >= 0.9 and not (pgd.success & ~df.success).any()
    both = df.success & pgd.success
    assert l2(df.adv, images)[both].mean() < l2(pgd.adv, images)[both].mean()


def test_deepfool_stops_just_past_the_boundary(small_model, clean_batch):
    """Along its own direction the boundary lies within DeepFool's last step: every
    sample is back in its class at half the perturbation, most at 95% of it (where
    the model is nearly linear, the overshoot is the 2% asked for)."""
    images, labels = clean_batch
    adv = create_attack("deepfool", small_model)(images, labels)
    with torch.no_grad():
        half = small_model(images + 0.5 * (adv - images)).argmax(1) == labels
        most = small_model(images + 0.95 * (adv - images)).argmax(1) == labels
    assert half.all() and most.float().mean() >= 0.5


def test_deepfool_with_a_finite_eps_stays_in_the_linf_ball(small_model, clean_batch):
    images, labels = clean_batch
    adv = create_attack("deepfool", small_model, eps=8 / 255)(images, labels)
    assert (adv - images).abs().max() <= 8 / 255 + 1e-6


# --- arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("apgd", {"loss": "dlr"}, "loss"),
        ("apgd", {"n_restarts": 0}, "n_restarts"),
        ("bim", {"steps": 0}, "steps"),
        ("mifgsm", {"loss": "l2"}, "loss"),
        ("tifgsm", {"kernel": "box"}, "kernel"),
        ("sinifgsm", {"m": 0}, "m must"),
        ("cw", {"c": 0.0}, "c must"),
        ("deepfool", {"overshoot": -1.0}, "overshoot"),
    ],
)
def test_bad_arguments_are_refused(name, kwargs, match):
    with pytest.raises(AttackInputError, match=match):
        create_attack(name, nn.Identity(), **kwargs)
