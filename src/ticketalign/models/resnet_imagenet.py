"""torchvision's ResNet50 for ImageNet, with one ReLU module per location, and its symmetry.

torchvision is imported inside :func:`build_resnet50` only (importing it costs seconds per
process). The network is built by ``torchvision.models.resnet50`` (its layout and its init), and
its modules are then re-housed in the two small classes below, which change nothing but the
ReLUs: torchvision's Bottleneck calls one ``relu`` module three times, so a forward hook on it
cannot tell the three locations apart; here each block has ``relu1``, ``relu2`` and ``relu3``
(after the addition). No ReLU holds parameters, so the state dict keeps torchvision's exact keys
and a torchvision checkpoint loads unchanged.

``width`` sets torchvision's ``width_per_group = 64 * width``: it scales the bottleneck's inner
channels only (``width=2`` is torchvision's ``wide_resnet50_2``); the residual streams keep
256/512/1024/2048 channels. The paper uses width 1.

Symmetry: ``stem`` (conv1/bn1 out, the first block's conv1 and downsample inputs); one stream
group per stage ``layer{s}`` (every block's conv3/bn3 output, the ``downsample.0`` conv and
``downsample.1`` BN output, the next stage's inputs, the classifier input); two inner groups per
block, ``layer{s}.{b}.inner1`` (conv1/bn1 out, conv2 in) and ``layer{s}.{b}.inner2`` (conv2/bn2
out, conv3 in). Activation points: the stem ``relu``, each block's ``relu1``/``relu2`` for its
inner groups and every block's ``relu3`` for its stage's stream.

Prunable: the stem conv, every block's three convs and the classifier; never the downsample convs.
"""

from __future__ import annotations

import torch
from torch import nn

from ticketalign.models.resnet_cifar import scaled_channels
from ticketalign.models.spec_builders import SpecBuilder, residual_prunable_names, residual_spec
from ticketalign.permutation.spec import PermutationSpec

STAGES = ("layer1", "layer2", "layer3", "layer4")


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (same submodules, same computation) with three ReLU modules."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.conv1, self.bn1 = block.conv1, block.bn1
        self.conv2, self.bn2 = block.conv2, block.bn2
        self.conv3, self.bn3 = block.conv3, block.bn3
        self.downsample: nn.Module | None = block.downsample
        self.relu1 = nn.ReLU(inplace=True)
        self.relu2 = nn.ReLU(inplace=True)
        self.relu3 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        out += identity
        return self.relu3(out)


class ResNetImageNet(nn.Module):
    """torchvision's ResNet (stem, max pool, four stages, average pool, fc), re-housed."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        for stage in STAGES:
            self.add_module(stage, nn.Sequential(*(Bottleneck(block) for block in getattr(net, stage))))
        self.avgpool, self.fc = net.avgpool, net.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in STAGES:
            x = getattr(self, stage)(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def permutation_spec(self) -> PermutationSpec:
        """Stem, one stream per stage, two inner groups per block (see the module docstring)."""

        def block_spec(b: SpecBuilder, prefix: str, block: nn.Module, in_stream: str, stream: str) -> None:
            inner1 = b.group(f"{prefix}.inner1", block.conv1.out_channels, [f"{prefix}.relu1"])
            inner2 = b.group(f"{prefix}.inner2", block.conv2.out_channels, [f"{prefix}.relu2"])
            b.conv_bn(f"{prefix}.conv1", f"{prefix}.bn1", inner1, in_stream)
            b.conv_bn(f"{prefix}.conv2", f"{prefix}.bn2", inner2, inner1)
            b.conv_bn(f"{prefix}.conv3", f"{prefix}.bn3", stream, inner2)
            b.observe(stream, f"{prefix}.relu3")

        return residual_spec(self, STAGES, "downsample", block_spec)

    def prunable_names(self) -> list[str]:
        """The stem conv, the three convs of every block and the classifier; never a downsample conv."""
        return residual_prunable_names(self, STAGES, ("conv1", "conv2", "conv3"))

def build_resnet50(
    input_shape: tuple[int, ...], num_classes: int, width: float = 1.0, zero_init_residual: bool = False
) -> ResNetImageNet:
    """torchvision ResNet50 (``width`` scales the bottleneck width; see the module docstring)."""
    if len(input_shape) != 3:
        raise ValueError(f"resnet50 needs image inputs of shape (C, H, W), got input_shape {tuple(input_shape)}")
    width_per_group = scaled_channels(64, width, "resnet50")
    import torchvision  # lazily: only this model needs it

    net = torchvision.models.resnet50(
        weights=None, num_classes=num_classes, width_per_group=width_per_group, zero_init_residual=zero_init_residual
    )
    if input_shape[0] != net.conv1.in_channels:
        net.conv1 = nn.Conv2d(input_shape[0], net.conv1.out_channels, 7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    return ResNetImageNet(net)
