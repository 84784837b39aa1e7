"""Model registry: the one place that maps a config's ``model.name`` to a network.

Every architecture provides a builder ``(input_shape, num_classes, width, **options)`` and its
hand-written :class:`~ticketalign.permutation.spec.PermutationSpec` (``model.permutation_spec()``
or, for models we do not own, a spec function registered here), and the weights it may prune
(``model.prunable_names()``; see :mod:`ticketalign.masks`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ticketalign.models.mlp import build_mlp
from ticketalign.models.resnet_cifar import build_resnet20
from ticketalign.models.resnet_imagenet import build_resnet50
from ticketalign.models.vgg import build_vgg11, build_vgg11_bn
from ticketalign.permutation.spec import PermutationSpec

Builder = Callable[..., nn.Module]

MODELS: dict[str, Builder] = {
    "mlp": build_mlp,
    "resnet20": build_resnet20,
    "vgg11": build_vgg11,
    "vgg11_bn": build_vgg11_bn,
    "resnet50": build_resnet50,  # imports torchvision when built, not before
}


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    width: float = 1.0,
    seed: int | None = None,
    **options: Any,
) -> nn.Module:
    """Build ``name``; with ``seed`` the initialization is a pure function of the seed."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return MODELS[name](input_shape=input_shape, num_classes=num_classes, width=width, **options)
    return MODELS[name](input_shape=input_shape, num_classes=num_classes, width=width, **options)


def permutation_spec(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> PermutationSpec:
    """The model's symmetry, checked against its state dict.

    A model that declares ``permutation_spec()`` (every model here) uses its hand-written spec.
    Any other model (one you registered yourself) gets the spec derived by tracing its graph on a
    zero input of ``input_shape``; tracing refuses, naming the operation, what it cannot handle.
    """
    if hasattr(model, "permutation_spec"):
        spec = model.permutation_spec()
    elif input_shape is not None:
        from ticketalign.permutation.trace import derive_permutation_spec

        spec = derive_permutation_spec(model, torch.zeros(2, *input_shape))
    else:
        raise TypeError(f"{type(model).__name__} declares no permutation_spec() and no input shape to trace with")
    spec.check(model.state_dict())
    return spec
