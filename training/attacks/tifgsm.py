"""TI-FGSM: Translation-Invariant FGSM (Dong et al., "Evading Defenses to Transferable
Adversarial Examples by Translation-Invariant Attacks", CVPR 2019), L∞, on MI-FGSM.

The gradient is convolved with a kernel W (per channel, zero padding) before it is
normalized and accumulated: the gradient of an ensemble of translated images, so the
perturbation is smooth and transfers. Dong et al. found a 15×15 Gaussian best for
299-pixel inputs; the comparative study's text uses a uniform kernel. Scale the kernel
with the input: about 15 at 224-299 pixels, 3-5 at 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.attacks.base import EPS_PAPER, AttackInputError, register_attack
from training.attacks.mifgsm import MIFGSM


def translation_kernel(kind: str, size: int, nsig: float) -> torch.Tensor:
    """(size, size) kernel summing to 1: ``"gaussian"`` spanning ±nsig standard deviations
    (Dong's parametrization, σ = (size − 1) / (2·nsig) pixels) or ``"uniform"``."""
    if size < 1 or size % 2 == 0:
        raise AttackInputError(f"TIFGSM: kernel_size must be odd and >= 1, got {size}")
    if kind == "uniform":
        k1 = torch.ones(size, dtype=torch.float64)
    elif kind == "gaussian":
        k1 = torch.exp(-0.5 * torch.linspace(-nsig, nsig, size, dtype=torch.float64) ** 2)
    else:
        raise AttackInputError(f"TIFGSM: kernel must be 'gaussian' or 'uniform', got {kind!r}")
    k2 = torch.outer(k1, k1)
    return (k2 / k2.sum()).float()


@register_attack
class TIFGSM(MIFGSM):
    """L∞ TI-FGSM on MI-FGSM. Arguments: ``eps`` (16/255), ``steps`` (10), ``alpha``
    (ε/steps), ``decay`` (μ = 1.0, MI-FGSM's; 0 gives TI-I-FGSM), ``kernel``
    (``"gaussian"`` or ``"uniform"``), ``kernel_size`` (15, odd), ``nsig`` (3: the
    Gaussian spans ±3σ), ``loss`` (``"ce"``), ``seed`` (unused).

    >>> adv = TIFGSM(detector, eps=16/255, kernel_size=15, nsig=3)(images, labels)
    """

    name = "tifgsm"

    def __init__(
        self,
        model: nn.Module,
        eps: float = EPS_PAPER,
        steps: int = 10,
        alpha: float | None = None,
        decay: float = 1.0,
        kernel: str = "gaussian",
        kernel_size: int = 15,
        nsig: float = 3.0,
        loss: str = "ce",
        seed: int = 0,
    ) -> None:
        super().__init__(model, eps, steps, alpha, decay, loss, seed)
        self.kernel = translation_kernel(kernel, kernel_size, nsig)

    def step_gradient(
        self, adv: torch.Tensor, labels: torch.Tensor, momentum: torch.Tensor
    ) -> torch.Tensor:
        grad = super().step_gradient(adv, labels, momentum)
        c, size = grad.shape[1], self.kernel.shape[-1]
        weight = self.kernel.to(grad)[None, None].expand(c, 1, size, size)
        return F.conv2d(grad, weight, padding=size // 2, groups=c)
