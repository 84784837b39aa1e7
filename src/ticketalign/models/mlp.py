"""A multilayer perceptron with ReLU, and its permutation symmetry.

Hidden layer ``i`` has ``round(hidden * width)`` units; every hidden layer's units can be
permuted freely (group ``P{i}``), which permutes rows of ``layers.{i}`` and columns of
``layers.{i+1}``. Each ReLU is its own module so activation matching can hook it. Every layer's
weight is prunable.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ticketalign.models.spec_builders import SpecBuilder
from ticketalign.permutation.spec import PermutationSpec


class MLP(nn.Module):
    def __init__(self, in_features: int, num_classes: int, hidden: int = 128, depth: int = 2, width: float = 1.0):
        super().__init__()
        if depth < 1:
            raise ValueError(f"MLP depth must be at least 1 hidden layer, got {depth}")
        units = max(1, round(hidden * width))
        sizes = [in_features] + [units] * depth + [num_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.acts = nn.ModuleList(nn.ReLU() for _ in range(depth))

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
    input_shape: tuple[int, ...], num_classes: int, width: float = 1.0, hidden: int = 128, depth: int = 2
) -> MLP:
    return MLP(math.prod(input_shape), num_classes, hidden=hidden, depth=depth, width=width)
