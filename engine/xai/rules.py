"""One table: how each one-backward XAI method turns the input gradient into a map.

Saliency, Input × Gradient and Guided Backprop are all ONE forward and ONE backward of
the target logit; they differ in the backward's activation rule (Guided Backprop's
ReLUs pass only positive gradients, ``engine.xai.guided``) and in what is done with the
input gradient ``g`` afterwards, which is this table:

==================  =====================  ===============================================
method              attribution            reference
==================  =====================  ===============================================
saliency            ``|g|`` (``abs=False``: Simonyan et al. 2013; Captum ``Saliency``
                    ``g``)
input_x_gradient    ``x * g``              Shrikumar et al. 2016; Captum ``InputXGradient``
guided_backprop     ``g`` (of the guided   Springenberg et al. 2015; Captum
                    backward)              ``GuidedBackprop``
==================  =====================  ===============================================

:func:`engine.xai.attribute`, the differentiable path (``engine.xai.differentiable``) and
the pipeline's fused classify + explain step all apply it from here.
"""

from __future__ import annotations

from torch import Tensor

GRADIENT_METHODS = ("guided_backprop", "saliency", "input_x_gradient")
"""The methods that are one backward of the classifying forward (fusable with it)."""


def from_gradient(method: str, inputs: Tensor, grad: Tensor, *, abs: bool = True) -> Tensor:
    """The ``method`` attribution of ``inputs`` from the target logit's gradient ``grad``.

    ``abs`` is saliency's option (False: the signed gradient). Keeps autograd history of
    ``inputs`` and ``grad`` (the differentiable path backpropagates through it).
    """
    if method == "saliency":
        return grad.abs() if abs else grad
    if method == "input_x_gradient":
        return inputs * grad
    if method == "guided_backprop":
        return grad
    raise ValueError(f"{method!r} is not a one-backward method ({', '.join(GRADIENT_METHODS)})")
