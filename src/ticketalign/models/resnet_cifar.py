"""ResNet20 for CIFAR (He et al. 2016, section 4.2) at any width, and its permutation symmetry.

Three stages of three BasicBlocks with ``16w``, ``32w`` and ``64w`` channels, BatchNorm after
every conv, a 1x1 conv + BN shortcut (``shortcut.0`` / ``shortcut.1``) only where a block changes
the shape (stride 2 or a channel change), identity otherwise, then global average pooling and
one Linear ``64w -> classes``. Convs use Kaiming normal init (ReLU gain), BN starts at weight 1,
bias 0, the Linear keeps PyTorch's default init.

Symmetry: every block's inner channels (``conv1``/``bn1`` out, ``conv2`` in) are one group
``layer{s}.{b}.inner``. Everything on the residual stream of stage ``s`` shares group
``layer{s}``: the stem (for stage 1), every block's ``conv2``/``bn2`` output, the shortcut's
conv/BN output, the next stage's ``conv1`` and shortcut inputs and, for the last stage, the
classifier input. The stream is observed after every block (``relu2``, after the addition)
and, in stage 1, after the stem's ``relu``; activation matching sums correlations over all of
them. Every ReLU is its own module so a forward hook sees exactly one location.

Prunable: the stem conv, every block's two convs and the classifier; never the shortcut convs.
"""

from __future__ import annotations

import torch
from torch import nn

from ticketalign.models.spec_builders import SpecBuilder, residual_prunable_names, residual_spec
from ticketalign.permutation.spec import PermutationSpec


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection; ``relu2`` follows the addition."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(out + identity)


class ResNetCifar(nn.Module):
    """A CIFAR-style ResNet: stem conv, stages of BasicBlocks, average pool, Linear."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        stage_channels: tuple[int, ...] = (16, 32, 64),
        blocks_per_stage: int = 3,
        kaiming_mode: str = "fan_out",
    ):
        super().__init__()
        if kaiming_mode not in ("fan_in", "fan_out"):
            raise ValueError(f"kaiming_mode must be 'fan_in' or 'fan_out', got {kaiming_mode!r}")
        self.conv1 = nn.Conv2d(in_channels, stage_channels[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stage_channels[0])
        self.relu = nn.ReLU()
        self.stage_names: list[str] = []
        channels = stage_channels[0]
        for s, out_channels in enumerate(stage_channels, start=1):
            blocks = []
            for b in range(blocks_per_stage):
                stride = 2 if (b == 0 and s > 1) else 1
                blocks.append(BasicBlock(channels, out_channels, stride))
                channels = out_channels
            name = f"layer{s}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode=kaiming_mode, nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def permutation_spec(self) -> PermutationSpec:
        """Stream group per stage, inner group per block (see the module docstring)."""

        def block_spec(b: SpecBuilder, prefix: str, block: nn.Module, in_stream: str, stream: str) -> None:
            inner = b.group(f"{prefix}.inner", block.conv1.out_channels, [f"{prefix}.relu1"])
            b.conv_bn(f"{prefix}.conv1", f"{prefix}.bn1", inner, in_stream)
            b.conv_bn(f"{prefix}.conv2", f"{prefix}.bn2", stream, inner)
            b.observe(stream, f"{prefix}.relu2")

        return residual_spec(self, self.stage_names, "shortcut", block_spec)

    def prunable_names(self) -> list[str]:
        """The stem conv, both convs of every block and the classifier; shortcut convs are not pruned."""
        return residual_prunable_names(self, self.stage_names, ("conv1", "conv2"))

def scaled_channels(base: int, width: float, model: str) -> int:
    """``base * width`` as an int; a ValueError names the model if it is not a positive integer."""
    value = base * width
    if width <= 0 or abs(value - round(value)) > 1e-9:
        raise ValueError(f"{model} width {width} gives {value} channels for a base of {base}; choose a width w "
                         f"for which {base}*w is a positive integer (e.g. 0.5, 1, 2, 4, 8, 16)")
    return round(value)


def build_resnet20(
    input_shape: tuple[int, ...], num_classes: int, width: float = 1.0, kaiming_mode: str = "fan_out"
) -> ResNetCifar:
    """ResNet20 with ``16w/32w/64w`` channels for images of shape ``(C, H, W)``."""
    if len(input_shape) != 3:
        raise ValueError(f"resnet20 needs image inputs of shape (C, H, W), got input_shape {tuple(input_shape)}")
    channels = tuple(scaled_channels(base, width, "resnet20") for base in (16, 32, 64))
    return ResNetCifar(input_shape[0], num_classes, channels, blocks_per_stage=3, kaiming_mode=kaiming_mode)
