"""A multilayer perceptron with ReLU, and its permutation symmetry.

Hidden layer ``i`` has ``round(hidden * width)`` units; every hidden layer's units can be
permuted freely (group ``P{i}``), which permutes rows of ``layers.{i}`` and columns of
``layers.{i+1}``. Each ReLU is its own module so activation matching can hook it. Every layer's
weight is prunable.

``init``: ``pytorch`` keeps nn.Linear's default (uniform, variance 1/(3 fan_in)), under which a
sparse ReLU stack's signal shrinks by about 1/3 per layer; ``kaiming_normal`` draws the hidden
layers' weights from N(0, 2/fan_in) with zero biases, as the paper's ResNets initialize their
convs, and keeps the classifier's default (as the ResNets do), so a new init B carrying A's
mask is not starved of signal.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ticketalign.models.spec_builders import SpecBuilder
from ticketalign.permutation.spec import PermutationSpec

MLP_INITS = ("pytorch", "kaiming_normal")


class MLP(nn.Module):
    def __init__(
        self, in_features: int, num_classes: int, hidden: int = 128, depth: int = 2, width: float = 1.0,
        init: str = "pytorch",
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"MLP depth must be at least 1 hidden layer, got {depth}")
        if init not in MLP_INITS:
            raise ValueError(f"MLP init must be one of {', '.join(MLP_INITS)}, got {init!r}")
        units = max(1, round(hidden * width))
        sizes = [in_features] + [units] * depth + [num_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.acts = nn.ModuleList(nn.ReLU() for _ in range(depth))
        if init == "kaiming_normal":
            for layer in self.layers[:-1]:
                nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer, act in zip(self.layers, self.acts):
            x = act(layer(x))
        return self.layers[-1](x)

    def permutation_spec(self) -> PermutationSpec:
        depth = len(self.acts)
        b = SpecBuilder()
        for i in range(depth):
            b.group(f"P{i}", self.layers[i].out_features, [f"acts.{i}"])
        for i in range(len(self.layers)):
            b.linear(f"layers.{i}", f"P{i}" if i < depth else None, f"P{i - 1}" if i > 0 else None)
        return b.build()

    def prunable_names(self) -> list[str]:
        """Every layer's weight, the classifier's included (biases are never pruned)."""
        return [f"layers.{i}.weight" for i in range(len(self.layers))]

def build_mlp(
    input_shape: tuple[int, ...], num_classes: int, width: float = 1.0, hidden: int = 128, depth: int = 2,
    init: str = "pytorch",
) -> MLP:
    return MLP(math.prod(input_shape), num_classes, hidden=hidden, depth=depth, width=width, init=init)
