"""Explanations (XAI) of the deepfake detector: attributions and the maps built from them.

Saliency (Simonyan et al. 2013), Input × Gradient (Shrikumar et al. 2016), Integrated
Gradients (Sundararajan et al. 2017) and Guided Backpropagation (Springenberg et al.
2014), agreeing with Captum's definitions, batched, without hooks; and
:func:`prepare_map`, the one rule that turns an attribution into Detect-ResNet50's input.

    >>> from engine.xai import attribute, prepare_map
    >>> a = attribute(model, crops, target=0, method="guided_backprop")
    >>> maps = prepare_map(a, "guided_backprop", size=224)
"""

from engine.xai.attribute import (
    DEFAULT_IG_METHOD,
    DEFAULT_N_STEPS,
    IG_METHODS,
    METHODS,
    Target,
    attribute,
    integration_nodes,
)
from engine.xai.errors import (
    InvalidTargetError,
    InvalidXAIOptionError,
    NotAnImageBatchError,
    TargetOutOfRangeError,
    UnexpectedModelOutputError,
    UnguidableModelError,
    UnknownXAIMethodError,
    XAIError,
)
from engine.xai.guided import (
    GUIDED_ACTIVATIONS,
    GUIDED_RULES,
    GuidedActivation,
    guided_activation_count,
    guided_model,
    resolve_rule,
)
from engine.xai.maps import (
    DEFAULT_QUANTILE,
    SCALE_EPS,
    UNSIGNED_METHODS,
    map_to_uint8,
    prepare_map,
    uint8_to_map,
)

__all__ = [
    "DEFAULT_IG_METHOD",
    "DEFAULT_N_STEPS",
    "DEFAULT_QUANTILE",
    "GUIDED_ACTIVATIONS",
    "GUIDED_RULES",
    "IG_METHODS",
    "METHODS",
    "SCALE_EPS",
    "UNSIGNED_METHODS",
    "GuidedActivation",
    "InvalidTargetError",
    "InvalidXAIOptionError",
    "NotAnImageBatchError",
    "Target",
    "TargetOutOfRangeError",
    "UnexpectedModelOutputError",
    "UnguidableModelError",
    "UnknownXAIMethodError",
    "XAIError",
    "attribute",
    "guided_activation_count",
    "guided_model",
    "integration_nodes",
    "map_to_uint8",
    "prepare_map",
    "resolve_rule",
    "uint8_to_map",
]
