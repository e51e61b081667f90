"""Universal adversarial perturbation by over-firing (Mopuri, Ganeshan, Babu, "Generalizable
Data-free Objective for Crafting Universal Adversarial Perturbations", TPAMI 2018
(GD-UAP); used on forgery detectors by "Individual and Universal Adversarial
Perturbations for Forgery Forensics"), L∞.

ONE perturbation δ with ‖δ‖∞ ≤ ε for every image: ``perturb`` returns clamp(x + δ).
δ is found without data by making the model's internal layers over-fire: starting from
uniform noise in [−ε, ε] (as the forensics paper), minimize GD-UAP's objective
``−Σ_l log ‖a_l(b + δ)‖₂`` over the chosen layers' outputs a_l, with Adam and a clip to
the ε-ball after every step (280 steps, the forensics paper's count). GD-UAP feeds δ
alone to a mean-subtracted network; in our [0, 1] pixel space the equivalent input is a
flat image ``b`` (mid-grey 0.5 by default) plus δ.

This is the cheap attack a live feed sees: :meth:`UniversalPerturbation.fit` computes δ
once (cached per model, its weights' version, seed, ε, image shape and settings) and a
broadcast adds the same δ to every frame, with no model query per frame.

``fit_on_batch=True`` is a data-driven variant: δ is fitted on the batch being attacked
(refitted on every call, not cached), minimizing the mean CW margin towards ``target``
(0 = "real": one δ that makes every fake frame pass) over the images, hinged at −1 so
images already well inside the target class stop pulling (the stochastic-gradient UAP of
Shafahi et al., "Universal Adversarial Training", AAAI 2020, made targeted). Over-firing
on the batch (GD-UAP's data prior) was tried and is no stronger than data-free on small
models; this is a stronger, transductive attacker for where the data-free δ is weak.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from contextlib import nullcontext
from typing import NamedTuple

import torch
from torch import nn

from training.attacks.base import (
    EPS_PAPER,
    Attack,
    AttackInputError,
    margin_loss,
    register_attack,
)
from training.attacks.layers import capture_outputs, resolve_layers


class _Fitted(NamedTuple):
    delta: torch.Tensor
    queries: int


_CACHE: weakref.WeakKeyDictionary[
    nn.Module, dict[tuple[object, ...], tuple[tuple[int, ...], _Fitted]]
] = weakref.WeakKeyDictionary()
"""model -> settings -> (its parameters' versions when fitted, the fitted δ)."""


@register_attack
class UniversalPerturbation(Attack):
    """Data-free universal perturbation (over-firing). Arguments: ``eps`` (16/255),
    ``steps`` (280), ``lr`` (Adam's step size; eps/10), ``layers`` (module names, or how
    many ``nn.Conv2d`` layers evenly spaced; None: all), ``base`` (the flat image δ is
    optimized on, 0.5), ``fit_on_batch`` (False; True: the data-driven variant),
    ``target`` (its target class, 0 = real), ``seed``.

    >>> uap = UniversalPerturbation(detector)
    >>> delta = uap.fit((3, 299, 299))          # once per broadcast
    >>> adv = (frames + delta).clamp(0, 1)       # every frame: what perturb does
    """

    name = "universal"

    def __init__(
        self,
        model: nn.Module,
        eps: float = EPS_PAPER,
        steps: int = 280,
        lr: float | None = None,
        layers: Sequence[str] | int | None = None,
        base: float = 0.5,
        fit_on_batch: bool = False,
        target: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(model, eps, seed)
        if steps < 1:
            raise AttackInputError(f"UniversalPerturbation: steps must be >= 1, got {steps}")
        if not 0 <= base <= 1:
            raise AttackInputError(f"UniversalPerturbation: base must be in [0, 1], got {base}")
        self.steps = steps
        self.lr = lr if lr is not None else eps / 10
        self.layers = layers
        self.base = base
        self.fit_on_batch, self.target = fit_on_batch, target

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        fitted = self._fit(images.shape[1:], images.device, images if self.fit_on_batch else None)
        self.queries += fitted.queries  # what δ cost, spent once for all the images
        return (images + fitted.delta).clamp(0.0, 1.0)

    def fit(
        self,
        shape: Sequence[int],
        device: torch.device | str = "cpu",
        images: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The perturbation δ ``(C, H, W)`` for images of ``shape`` (C, H, W): data-free,
        or on ``images`` when given. Cached; the model is in eval mode meanwhile."""
        was_training = self.model.training
        self.model.eval()
        try:
            return self._fit(tuple(shape), torch.device(device), images).delta
        finally:
            self.model.train(was_training)

    def _fit(
        self, shape: Sequence[int], device: torch.device, images: torch.Tensor | None
    ) -> _Fitted:
        if len(shape) != 3:
            raise AttackInputError(f"UniversalPerturbation: shape must be (C, H, W), got {shape}")
        names = resolve_layers(self.model, self.layers)
        if images is not None:
            return self._optimize(tuple(shape), device, names, images)
        # In-place updates (optimizer steps, load_state_dict) bump the versions: refit.
        weights = tuple(p._version for p in self.model.parameters())
        key = (tuple(shape), str(device), self.seed, self.eps, self.steps, self.lr)
        key += (tuple(names), self.base)
        per_model = _CACHE.setdefault(self.model, {})
        cached = per_model.get(key)
        if cached is None or cached[0] != weights:
            per_model[key] = (weights, self._optimize(tuple(shape), device, names, None))
        return per_model[key][1]

    def _optimize(
        self,
        shape: tuple[int, ...],
        device: torch.device,
        names: list[str],
        images: torch.Tensor | None,
    ) -> _Fitted:
        generator = torch.Generator(device=device).manual_seed(self.seed)
        noise = torch.rand(shape, generator=generator, device=device)
        delta = ((2 * noise - 1) * self.eps).requires_grad_(True)
        optimizer = torch.optim.Adam([delta], lr=self.lr)
        capture = capture_outputs(self.model, names) if images is None else nullcontext({})
        with torch.enable_grad(), capture as outputs:
            for _ in range(self.steps):
                if images is None:  # data-free: over-fire the layers
                    self.model((self.base + delta).clamp(0.0, 1.0).unsqueeze(0))
                    loss = -sum(outputs[name].flatten(1).norm(dim=1).log().sum() for name in names)
                else:  # data-driven: push the batch towards the target class
                    logits = self.model((images.detach() + delta).clamp(0.0, 1.0))
                    target = torch.full_like(logits[:, 0], self.target, dtype=torch.long)
                    loss = margin_loss(logits, target).clamp(min=-1.0).mean()
                (grad,) = torch.autograd.grad(loss, delta)
                delta.grad = grad
                optimizer.step()
                with torch.no_grad():
                    delta.clamp_(-self.eps, self.eps)
        return _Fitted(delta.detach(), self.steps)
