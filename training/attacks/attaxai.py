"""AttaXAI: black-box attacks on explanations with evolution strategies (Tamam, Lapid,
Sipper, "Foiling Explanations in Deep Neural Networks", TMLR 2023).

The attacker queries the model for its logits f and its explanation map g (the paper
assumes a system that returns both per query) and searches the image with Natural
Evolution Strategies: each generation draws a population of λ images
z_k = x̂ + σ ε_k around the current mean x̂ (Gaussian, or a Latin hypercube), scores
their fitness, and moves x̂ against the search gradient (1/(λσ)) Σ F̂_k ε_k; the step
size is multiplied by 0.999 after every generation (the paper's decay). Here the
population is antithetic (ε and −ε), fitness values are shaped into centered ranks
(Salimans et al. 2017, the NES the paper builds on), steps are signed and x̂ is kept in
the ε-ball (L∞), so step sizes are in pixel units. σ is fixed (the paper's σ update is
not used). Maps come from :mod:`engine.xai` (``attribute`` of the "real" logit, then
``prepare_map``, as the online pipeline builds them), so map distances are mean squares
of [0, 1] images and α = β = 1 weigh them against the output term (the paper's α, β of
1e7-1e11 and 1e6 balanced raw attribution maps instead). The best mean seen, the clean
image included, is returned.

Two fitness functions, one per class:

* :class:`AttaXAI` — the paper's: α·‖g(z) − g(x_target)‖² + β·‖f(z) − f(x)‖², f the
  output probabilities (the paper's text; its pseudo-code says logits, whose scale
  swamps a [0, 1] map): make the map look like a target image's while the output stays.
* :class:`EvasiveAttaXAI` (registered as ``"attaxai"``) — the adaptive attacker of
  Veritas, who knows an XAI map is checked: α·‖g(z) − g(x_target)‖² + β·relu(κ − margin)
  with the CW margin of the true class: the detector must flip (a fake called real)
  while the map stays like the map of a clean face — by default the map the clean
  input itself had, or that of given ``target_images`` (e.g. a clean real face). It
  keeps the flipped mean with the closest map; samples never flipped end at the last
  mean.

Budget: the paper's 50,000 queries per image is the default (``max_queries``); a
generation costs λ + 1 queries (the population and the new mean), plus one for the
clean image (and one for the target images' maps). One query = one logits row + one
map, counted once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from engine.xai import attribute, prepare_map
from training.attacks.base import EPS_PAPER, AttackInputError, margin_loss, register_attack
from training.attacks.blackbox import ScoreBasedAttack

REAL = 0
"""The logit the pipeline explains (the deepfake detector's "real")."""

Explainer = Callable[[torch.Tensor], torch.Tensor]


class XAIMapOracle:
    """The explanation a query returns: ``prepare_map(attribute(model, x, REAL, method))``.

    It needs gradients of the model, like the deployed system that computes the map; the
    attacker only sees its output. ``size`` None: the images' own size.
    """

    def __init__(
        self, model: nn.Module, method: str, size: int | None = None, **options: Any
    ) -> None:
        self.model, self.method, self.size, self.options = model, method, size, options

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        a = attribute(self.model, images, REAL, self.method, **self.options)
        return prepare_map(a, self.method, self.size or images.shape[-1])


class AttaXAI(ScoreBasedAttack):
    """AttaXAI with the paper's fitness (not registered: it keeps the label, it does not
    evade). Arguments: ``eps`` (L∞ bound, 16/255), ``method`` (XAI method of the map,
    ``"guided_backprop"``), ``target_images`` (x_target, one or one per image; None:
    each image itself), ``max_queries`` (50,000 per image), ``population`` (λ, even,
    50), ``sigma`` (σ, 2/255), ``lr`` (first step, 2/255), ``lr_decay`` (0.999),
    ``alpha`` (α, 1), ``beta`` (β, 1), ``sampling`` (``"gaussian"`` or ``"latin"``),
    ``tile`` (1; > 1: one search value per tile x tile block, as NES), ``explainer``
    (images -> maps; None: :class:`XAIMapOracle` of the model), ``chunk``, ``seed``.

    >>> attack = AttaXAI(detector, target_images=other_face)
    >>> adv = attack(images, labels)   # same verdict, explanation of other_face
    """

    name = "attaxai_paper"

    def __init__(
        self,
        model: nn.Module,
        eps: float = EPS_PAPER,
        method: str = "guided_backprop",
        target_images: torch.Tensor | None = None,
        max_queries: int = 50_000,
        population: int = 50,
        sigma: float = 2 / 255,
        lr: float = 2 / 255,
        lr_decay: float = 0.999,
        alpha: float = 1.0,
        beta: float = 1.0,
        sampling: str = "gaussian",
        tile: int = 1,
        explainer: Explainer | None = None,
        chunk: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(model, eps, seed, chunk)
        name = type(self).__name__
        if population < 2 or population % 2:
            raise AttackInputError(f"{name}: population must be even and >= 2, got {population}")
        if max_queries < population + 2:
            raise AttackInputError(
                f"{name}: max_queries = {max_queries} buys no generation of {population}; "
                f"give at least {population + 2}"
            )
        if sampling not in ("gaussian", "latin"):
            raise AttackInputError(f"{name}: sampling must be 'gaussian' or 'latin'")
        self.method, self.target_images = method, target_images
        self.max_queries, self.population, self.sigma = max_queries, population, sigma
        self.lr, self.lr_decay, self.alpha, self.beta = lr, lr_decay, alpha, beta
        self.latin, self.tile = sampling == "latin", tile
        self.explainer = explainer if explainer is not None else XAIMapOracle(model, method)

    def generations(self) -> int:
        """Generations the budget buys after the clean (and target) queries."""
        spent = 1 + (self.target_images is not None)
        return (self.max_queries - spent) // (self.population + 1)

    # --- the fitness (to minimize), per row ----------------------------------------------------

    def explanation_loss(self, maps: torch.Tensor, target_maps: torch.Tensor) -> torch.Tensor:
        return (maps - target_maps).pow(2).flatten(1).mean(dim=1)

    def prediction_loss(
        self, logits: torch.Tensor, clean_logits: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """The paper's β-term: the output probabilities stay those of the clean image."""
        return (logits.softmax(dim=1) - clean_logits.softmax(dim=1)).pow(2).sum(dim=1)

    def selection_score(
        self, explanation: torch.Tensor, fitness: torch.Tensor, margin: torch.Tensor
    ) -> torch.Tensor:
        """Which mean to return: the lowest score seen (here: the fitness)."""
        return fitness

    # --- the search ------------------------------------------------------------------------------

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n = len(images)
        everyone = torch.arange(n, device=images.device)
        clean_logits = self.query(images, everyone)
        clean_maps = self.explain(images)
        if self.target_images is None:
            target_maps = clean_maps
        else:
            target_maps = self.explain(self._targets(images))
            self.sample_queries += 1  # the target's map
        fit, expl, margin = self.terms(clean_logits, clean_maps, clean_logits, target_maps, labels)
        best_score = self.selection_score(expl, fit, margin)  # the clean image competes too
        mean, best = images.clone(), images.clone()
        lr = self.lr
        half = self.population // 2
        for _ in range(self.generations()):
            eps = self.search_directions(mean, half, self.tile, self.latin)
            eps = torch.cat([eps, -eps])  # (λ, N, C, H, W), antithetic
            probes = (mean + self.sigma * eps).clamp(0.0, 1.0).flatten(0, 1)
            fitness, _, _ = self.fitness(
                probes,
                everyone.repeat(self.population),
                clean_logits.repeat(self.population, 1),
                target_maps.repeat(self.population, 1, 1, 1),
                labels.repeat(self.population),
            )
            shaped = _centered_ranks(fitness.view(self.population, n))
            grad = (shaped.view(self.population, n, 1, 1, 1) * eps).sum(0)
            mean = self.project_linf(mean - lr * grad.sign(), images)
            lr *= self.lr_decay
            fit, expl, margin = self.fitness(mean, everyone, clean_logits, target_maps, labels)
            score = self.selection_score(expl, fit, margin)
            better = score < best_score
            best[better], best_score[better] = mean[better], score[better]
        never = torch.isinf(best_score)
        best[never] = mean[never]
        return best

    def fitness(
        self,
        z: torch.Tensor,
        owners: torch.Tensor,
        clean_logits: torch.Tensor,
        target_maps: torch.Tensor,
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(fitness, explanation loss, CW margin)`` of each row of ``z`` (one query each)."""
        logits = self.query(z, owners)
        return self.terms(logits, self.explain(z), clean_logits, target_maps, labels)

    def terms(
        self,
        logits: torch.Tensor,
        maps: torch.Tensor,
        clean_logits: torch.Tensor,
        target_maps: torch.Tensor,
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        explanation = self.explanation_loss(maps, target_maps)
        prediction = self.prediction_loss(logits, clean_logits, labels)
        fitness = self.alpha * explanation + self.beta * prediction
        return fitness, explanation, margin_loss(logits, labels)

    def explain(self, images: torch.Tensor) -> torch.Tensor:
        parts = images.split(self.chunk or max(len(images), 1))
        return torch.cat([self.explainer(part).detach() for part in parts])

    def _targets(self, images: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(self.target_images).to(images)
        if t.dim() == 3:
            t = t.unsqueeze(0)
        if t.shape[1:] != images.shape[1:] or len(t) not in (1, len(images)):
            raise AttackInputError(
                f"{type(self).__name__}: target_images {tuple(t.shape)} do not match images "
                f"{tuple(images.shape)}; give one image or one per image, same size"
            )
        return t.expand_as(images)


@register_attack
class EvasiveAttaXAI(AttaXAI):
    """AttaXAI for Veritas' adaptive attacker: flip the detector (a fake face is called
    real) while the XAI map stays like a clean face's. Arguments as :class:`AttaXAI`,
    plus ``kappa`` (the margin the flip must reach, 0).

    >>> adv = EvasiveAttaXAI(detector, method="guided_backprop")(fakes, labels)
    """

    name = "attaxai"

    def __init__(self, model: nn.Module, *args: Any, kappa: float = 0.0, **kwargs: Any) -> None:
        super().__init__(model, *args, **kwargs)
        self.kappa = kappa

    def prediction_loss(
        self, logits: torch.Tensor, clean_logits: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """The evasion term: relu(κ − margin), zero once the true class lost by κ."""
        return torch.relu(self.kappa - margin_loss(logits, labels))

    def selection_score(
        self, explanation: torch.Tensor, fitness: torch.Tensor, margin: torch.Tensor
    ) -> torch.Tensor:
        """Among the flipped means, the one whose map is closest to the target."""
        return torch.where(margin > 0, explanation, torch.full_like(explanation, float("inf")))


def _centered_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks along dim 0 mapped to [−0.5, 0.5] (fitness shaping of Salimans et al.)."""
    ranks = values.argsort(dim=0).argsort(dim=0).to(values.dtype)
    return ranks / (len(values) - 1) - 0.5
