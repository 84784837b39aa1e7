"""VGG11 (configuration "A" of Simonyan & Zisserman) for 32x32 images, and its symmetry.

Eight 3x3 convs ``64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M`` (times the width),
each followed by its own ReLU module (and, in ``vgg11_bn``, a BatchNorm before the ReLU), then
five 2x2 max pools bring 32x32 down to 1x1, so flattening gives ``512w`` features and the
classifier is one Linear ``512w -> classes`` (the paper's VGG11; no dropout, no hidden FC
layers). All layers keep PyTorch's default init.

Symmetry: the output channels of conv ``i`` form group ``conv{i}`` (rows of its weight, its bias,
its BatchNorm's four tensors, the input axis of the next conv or of the classifier). Each group
is observed at the ReLU that follows its conv. Every conv's and the classifier's weight is prunable.
"""

from __future__ import annotations

import torch
from torch import nn

from ticketalign.models.resnet_cifar import scaled_channels
from ticketalign.models.spec_builders import SpecBuilder
from ticketalign.permutation.spec import PermutationSpec

VGG11_CONFIG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
_INPUT_SIZE = 32


class VGG(nn.Module):
    """``features`` (an nn.Sequential of conv[/BN]/ReLU/pool) then one Linear ``classifier``."""

    def __init__(self, in_channels: int, num_classes: int, config: tuple[int | str, ...], batch_norm: bool):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(channels, int(item), 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(item)))
            layers.append(nn.ReLU())
            channels = int(item)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))

    def permutation_spec(self) -> PermutationSpec:
        """One group per conv's output channels (see the module docstring)."""
        b = SpecBuilder()
        previous: str | None = None  # the group on the current feature channels
        for i, module in enumerate(self.features):
            name = f"features.{i}"
            if isinstance(module, nn.Conv2d):
                group = b.group(f"conv{len(b.sizes)}", module.out_channels)
                b.conv(name, group, previous, bias=module.bias is not None)
                previous = group
            elif isinstance(module, nn.BatchNorm2d):
                b.batchnorm(name, previous)
            elif isinstance(module, nn.ReLU) and previous is not None:
                b.observe(previous, name)
        b.linear("classifier", None, previous)
        return b.build()

    def prunable_names(self) -> list[str]:
        """Every conv's weight and the classifier's."""
        convs = [f"features.{i}.weight" for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]
        return [*convs, "classifier.weight"]

def _build(input_shape: tuple[int, ...], num_classes: int, width: float, batch_norm: bool) -> VGG:
    model = "vgg11_bn" if batch_norm else "vgg11"
    if len(input_shape) != 3 or tuple(input_shape[1:]) != (_INPUT_SIZE, _INPUT_SIZE):
        raise ValueError(
            f"{model} is built for (C, {_INPUT_SIZE}, {_INPUT_SIZE}) images (five 2x2 pools down to 1x1 before "
            f"its single Linear), got input_shape {tuple(input_shape)}"
        )
    config = tuple(item if item == "M" else scaled_channels(int(item), width, model) for item in VGG11_CONFIG)
    return VGG(input_shape[0], num_classes, config, batch_norm)


def build_vgg11(input_shape: tuple[int, ...], num_classes: int, width: float = 1.0) -> VGG:
    """VGG11 without BatchNorm, as in the paper."""
    return _build(input_shape, num_classes, width, batch_norm=False)


def build_vgg11_bn(input_shape: tuple[int, ...], num_classes: int, width: float = 1.0) -> VGG:
    """VGG11 with BatchNorm after every conv."""
    return _build(input_shape, num_classes, width, batch_norm=True)
