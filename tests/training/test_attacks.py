"""Every registered attack: norm bound, [0, 1] range, effect, determinism, batching.

Tests are parametrized over ``list_attacks()``: a new attack is covered once it is
registered and given its small test budget in ``FAST``.
"""

from __future__ import annotations

import pytest
import torch

from training.attacks import (
    EPS_PAPER,
    AttackInputError,
    UnknownAttackError,
    attack_class,
    create_attack,
    list_attacks,
    margin_loss,
)

pytestmark = pytest.mark.numerics  # also run as an AVX2-only CPU would (Makefile)

# Small budgets so each attack runs in about a second on 2 CPU cores.
FAST: dict[str, dict[str, object]] = {
    "pgd": {"steps": 20},
    "apgd": {"steps": 20, "n_restarts": 1},
    "bim": {"steps": 20},
    "mifgsm": {"steps": 10},
    "tifgsm": {"kernel_size": 5},
    "sinifgsm": {"m": 1},  # NI-FGSM: scale copies cost white-box success on this model
    "cw": {"steps": 20, "binary_steps": 2, "lr": 0.05},
    "deepfool": {"steps": 20},
    # The small model resists black-box and universal attacks at 16/255 (PGD-100 with
    # exact gradients flips about half the batch): these budgets raise eps (and tile the
    # NES search) to exercise the mechanics in about a second.
    "nes": {
        "eps": 64 / 255,
        "steps": 10,
        "n_samples": 10,
        "alpha": 16 / 255,
        "tile": 16,
        "n_restarts": 1,
    },
    "square": {"eps": 64 / 255, "n_queries": 100},
    "kra": {"steps": 8},
    "universal": {"eps": 48 / 255, "steps": 50},
    "attaxai": {
        "method": "saliency",
        "eps": 96 / 255,
        "max_queries": 61,
        "population": 10,
        "lr": 24 / 255,
        "sigma": 16 / 255,
        "tile": 16,
    },
}


def fast(name: str, **extra: object) -> dict[str, object]:
    return {**FAST.get(name, {}), **extra}


def accuracy(model, images, labels) -> float:
    with torch.no_grad():
        return (model(images).argmax(1) == labels).float().mean().item()


def check_bound(name: str, adv: torch.Tensor, images: torch.Tensor, eps: float) -> None:
    delta = (adv - images).flatten(1)
    norm = attack_class(name).norm
    if norm == "Linf":
        assert delta.abs().max() <= eps + 1e-6
    elif norm == "L2":
        assert (delta.norm(dim=1) <= eps + 1e-4).all()
    elif norm == "L0":
        assert ((delta.abs() > 1e-9).sum(1) <= eps + 1e-9).all()
    elif norm == "unbounded":  # minimum-norm attacks; a finite eps caps them in L∞
        assert torch.isfinite(delta).all()
        if eps != float("inf"):
            assert delta.abs().max() <= eps + 1e-6


def test_every_attack_has_a_test_budget():
    assert set(list_attacks()) <= set(FAST), "give new attacks a budget in FAST"


@pytest.mark.parametrize("name", list_attacks())
def test_attack_respects_norm_and_range_and_lowers_accuracy(name, small_model, clean_batch):
    images, labels = clean_batch
    attack = create_attack(name, small_model, **fast(name))
    result = attack.run(images, labels)
    assert result.adv.shape == images.shape
    assert result.adv.min() >= 0 and result.adv.max() <= 1
    check_bound(name, result.adv, images, attack.eps)
    assert accuracy(small_model, images, labels) == 1.0
    assert accuracy(small_model, result.adv, labels) <= 0.75
    # success is exactly "the model no longer predicts the label"
    with torch.no_grad():
        flipped = small_model(result.adv).argmax(1) != labels
    assert torch.equal(result.success, flipped)
    assert (result.queries > 0).all()


@pytest.mark.parametrize("name", list_attacks())
def test_attack_is_deterministic_under_a_seed(name, small_model, clean_batch):
    images, labels = clean_batch
    a = create_attack(name, small_model, seed=3, **fast(name))(images[:4], labels[:4])
    b = create_attack(name, small_model, seed=3, **fast(name))(images[:4], labels[:4])
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", list_attacks())
def test_attack_restores_model_mode_and_leaves_inputs(name, small_model, clean_batch):
    images, labels = clean_batch
    before = images.clone()
    small_model.train()
    try:
        create_attack(name, small_model, **fast(name))(images[:2], labels[:2])
        assert small_model.training
    finally:
        small_model.eval()
    assert torch.equal(images, before)
    assert all(p.grad is None for p in small_model.parameters())


def test_bad_inputs_are_refused(small_model):
    attack = create_attack("pgd", small_model, steps=1)
    with pytest.raises(AttackInputError, match=r"\[0, 1\]"):
        attack(torch.full((1, 3, 32, 32), 2.0), torch.tensor([1]))
    with pytest.raises(AttackInputError, match="labels"):
        attack(torch.rand(2, 3, 32, 32), torch.tensor([1, 0, 1]))
    with pytest.raises(AttackInputError, match=r"\(N, C, H, W\)"):
        attack(torch.rand(3, 32, 32), torch.tensor([1]))
    with pytest.raises(UnknownAttackError, match="pgd"):
        create_attack("nope", small_model)


def test_margin_loss_is_the_cw_margin_capped_at_kappa():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    labels = torch.tensor([0, 0])
    assert margin_loss(logits, labels).tolist() == [-3.0, 2.5]
    assert margin_loss(logits, labels, kappa=0.0).tolist() == [-3.0, 0.0]


def test_pgd_defaults_are_the_papers():
    pgd = create_attack("pgd", torch.nn.Identity())
    assert pgd.eps == EPS_PAPER and pgd.steps == 100 and not pgd.random_start


def test_pgd_cw_stops_at_the_decision_boundary(small_model, clean_batch):
    """With kappa = 0 PGD stops moving a sample once it is misclassified."""
    images, labels = clean_batch
    cw = create_attack("pgd", small_model, steps=60).run(images, labels)
    ce = create_attack("pgd", small_model, steps=60, loss="ce").run(images, labels)
    both = cw.success & ce.success
    assert both.sum() >= 4
    with torch.no_grad():
        m_cw = margin_loss(small_model(cw.adv), labels)[both]
        m_ce = margin_loss(small_model(ce.adv), labels)[both]
    # CE keeps pushing far past the boundary; the CW margin stays near it.
    assert m_cw.mean() < m_ce.mean()


def test_pgd_random_start_changes_the_result(small_model, clean_batch):
    images, labels = clean_batch
    plain = create_attack("pgd", small_model, steps=2)(images, labels)
    started = create_attack("pgd", small_model, steps=2, random_start=True)(images, labels)
    assert not torch.equal(plain, started)


def test_every_registered_attack_is_importable_by_its_class_name():
    import training.attacks as attacks

    for name in list_attacks():
        cls = attack_class(name)
        assert getattr(attacks, cls.__name__) is cls, name
        assert cls.__name__ in attacks.__all__
    from training.attacks import PGD  # as in torchattacks

    assert PGD is attack_class("pgd")
