"""Our white-box attacks against torchattacks 3.5.1, a test-only reference.

Same model (the small trained CNN: a NormalizedClassifier, so it takes [0, 1] images as
torchattacks expects; torchattacks does not normalize it, since it is no ``RobModel``),
same images, same budget (ε, steps, step size, restarts). Both put the model in eval mode
for the attack. Ours must fool at least as many images as theirs, with no slack:

* PGD, BIM, MI-, TI-, NI- and SI-NI-FGSM are deterministic given the start, and where
  PGD starts at random, the same seed gives the same start (``torch.rand`` from a
  generator seeded s draws what ``uniform_`` does after ``torch.manual_seed(s)``), so
  the two codes take the same steps: we check the images agree, too.
* APGD draws its start from the same seed (theirs rescales it so one pixel sits at ε,
  a negligible difference); the runs then differ only in small details of the
  algorithm, and ours is compared at the paper's 100 iterations with 1 and 5 restarts.
* C&W: theirs has no binary search over c and stops early once its total loss rises;
  ours with one binary step is the same budget.
* DeepFool: theirs loops over images and applies the overshoot at every step; ours is
  batched and applies it to the total perturbation (as the paper's code).
"""

from __future__ import annotations

import pytest
import torch

from training.attacks import EPS_PAPER, create_attack

pytestmark = pytest.mark.numerics  # also run as an AVX2-only CPU would (Makefile)

ta = pytest.importorskip("torchattacks")


def fooled(model, adv: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(adv).argmax(1) != labels


def theirs(model, attack, images, labels, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    try:
        return attack(images.clone(), labels.clone())
    finally:  # their C&W and DeepFool call backward(), filling the shared model's .grad
        model.zero_grad(set_to_none=True)


def same_images(a: torch.Tensor, b: torch.Tensor) -> bool:
    """All but a handful of pixels equal (a gradient component at exactly 0 could
    take a different sign in the two codes)."""
    return ((a - b).abs() <= 1e-5).float().mean().item() > 0.999


@pytest.mark.parametrize("eps", [12 / 255, EPS_PAPER])
def test_pgd_ce_with_random_start_matches_torchattacks(small_model, clean_batch, eps):
    images, labels = clean_batch
    budget = {"eps": eps, "alpha": 2.5 * eps / 20, "steps": 20}
    ref = theirs(small_model, ta.PGD(small_model, random_start=True, **budget), images, labels)
    ours = create_attack("pgd", small_model, loss="ce", random_start=True, seed=0, **budget)
    ours_cw = create_attack("pgd", small_model, loss="cw", random_start=True, seed=0, **budget)
    ours_paper = create_attack("pgd", small_model, **budget)  # CW margin, no random start
    run, run_cw, run_paper = (a.run(images, labels) for a in (ours, ours_cw, ours_paper))
    rate = fooled(small_model, ref, labels).sum()
    assert run.success.sum() >= rate and same_images(run.adv, ref)
    assert run_cw.success.sum() >= rate
    assert run_paper.success.sum() >= rate


@pytest.mark.parametrize("n_restarts", [1, 5])
def test_apgd_ce_fools_at_least_as_many_as_torchattacks(small_model, clean_batch, n_restarts):
    images, labels = clean_batch
    budget = {"eps": 12 / 255, "steps": 100, "n_restarts": n_restarts, "seed": 0}
    ref = theirs(small_model, ta.APGD(small_model, loss="ce", **budget), images, labels)
    run = create_attack("apgd", small_model, loss="ce", **budget).run(images, labels)
    assert run.success.sum() >= fooled(small_model, ref, labels).sum()


def test_bim_matches_torchattacks(small_model, clean_batch):
    images, labels = clean_batch
    bim = ta.BIM(small_model, eps=EPS_PAPER, alpha=1 / 255, steps=0)  # 0: Kurakin's count
    ref = theirs(small_model, bim, images, labels)
    run = create_attack("bim", small_model).run(images, labels)
    assert run.success.sum() >= fooled(small_model, ref, labels).sum()
    assert same_images(run.adv, ref)


@pytest.mark.parametrize(
    ("name", "kwargs", "reference"),
    [
        ("mifgsm", {}, lambda m, b: ta.MIFGSM(m, decay=1.0, **b)),
        # theirs defaults to no momentum and input diversity; TI on MI-FGSM, no DI, is ours
        (
            "tifgsm",
            {"kernel_size": 5},
            lambda m, b: ta.TIFGSM(m, decay=1.0, len_kernel=5, nsig=3, diversity_prob=0.0, **b),
        ),
        ("sinifgsm", {"m": 5}, lambda m, b: ta.SINIFGSM(m, decay=1.0, m=5, **b)),
        ("sinifgsm", {"m": 1}, lambda m, b: ta.NIFGSM(m, decay=1.0, **b)),
    ],
    ids=["mifgsm", "tifgsm", "sinifgsm", "nifgsm"],
)
def test_momentum_fgsm_family_matches_torchattacks(
    small_model, clean_batch, name, kwargs, reference
):
    images, labels = clean_batch
    budget = {"eps": EPS_PAPER, "alpha": EPS_PAPER / 10, "steps": 10}
    ref = theirs(small_model, reference(small_model, budget), images, labels)
    run = create_attack(name, small_model, **kwargs, **budget).run(images, labels)
    assert run.success.sum() >= fooled(small_model, ref, labels).sum()
    assert same_images(run.adv, ref)


def test_cw_fools_at_least_as_many_as_torchattacks(small_model, clean_batch):
    images, labels = clean_batch
    budget = {"c": 1.0, "kappa": 0.0, "steps": 50, "lr": 0.01}
    ref = theirs(small_model, ta.CW(small_model, **budget), images, labels)
    rate = fooled(small_model, ref, labels).sum()
    same_budget = create_attack("cw", small_model, binary_steps=1, **budget).run(images, labels)
    searched = create_attack("cw", small_model, binary_steps=5, **budget).run(images, labels)
    assert same_budget.success.sum() >= rate
    assert searched.success.sum() >= same_budget.success.sum()


def test_deepfool_fools_at_least_as_many_as_torchattacks(small_model, clean_batch):
    images, labels = clean_batch
    ref = theirs(small_model, ta.DeepFool(small_model, steps=50, overshoot=0.02), images, labels)
    run = create_attack("deepfool", small_model, steps=50, overshoot=0.02).run(images, labels)
    ref_fooled = fooled(small_model, ref, labels)
    assert run.success.sum() >= ref_fooled.sum()
    both = run.success & ref_fooled
    size = (run.adv - images).flatten(1).norm(dim=1)[both]
    ref_size = (ref - images).flatten(1).norm(dim=1)[both]
    assert size.mean() <= 1.01 * ref_size.mean()  # as small as theirs
