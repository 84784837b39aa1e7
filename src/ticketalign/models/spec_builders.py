"""Helpers the models use to write their :class:`PermutationSpec` (and a ResNet's prunable weights).

:class:`SpecBuilder` collects a spec entry by entry, one layer at a time: ``conv``/``linear``/
``batchnorm`` write the ``axes_to_perm`` entries of a layer given the groups on its output and
input channels, ``group`` declares a permutation group (its size and where it is observed).
:func:`residual_spec` walks a ResNet's residual streams once for both ResNets: the stem opens the
first stream, a block with a projection shortcut opens its stage's stream (the shortcut maps the
old stream to the new one), every other tensor on a stream shares its group, and the classifier
reads the last stream. Entries are written in the order the model declares them, so a spec
(dict order included) is the same whoever builds it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from torch import nn

from ticketalign.permutation.spec import PermutationSpec, batchnorm_axes

Group = str | None  # a permutation group's name, or None for an axis no permutation touches


class SpecBuilder:
    """Accumulates ``axes_to_perm``, ``group_sizes`` and ``activation_points``; :meth:`build` ends."""

    def __init__(self) -> None:
        self.axes: dict[str, tuple[Group, ...]] = {}
        self.sizes: dict[str, int] = {}
        self.points: dict[str, list[str]] = {}

    def group(self, name: str, size: int, points: Sequence[str] | None = None) -> str:
        """Declare group ``name`` of ``size`` units, observed at ``points`` (more via :meth:`observe`)."""
        if name in self.sizes:
            raise ValueError(f"permutation group {name!r} is declared twice")
        self.sizes[name] = size
        if points is not None:
            self.points[name] = list(points)
        return name

    def observe(self, group: str, point: str) -> None:
        """Module ``point``'s output also shows ``group``'s units."""
        self.points.setdefault(group, []).append(point)

    def conv(self, prefix: str, out_group: Group, in_group: Group, bias: bool = False) -> None:
        """A Conv2d ``prefix``: weight ``(out, in, kh, kw)`` and, with ``bias``, its bias."""
        self.axes[f"{prefix}.weight"] = (out_group, in_group, None, None)
        if bias:
            self.axes[f"{prefix}.bias"] = (out_group,)

    def linear(self, prefix: str, out_group: Group, in_group: Group, bias: bool = True) -> None:
        """A Linear ``prefix``: weight ``(out, in)`` and, with ``bias``, its bias."""
        self.axes[f"{prefix}.weight"] = (out_group, in_group)
        if bias:
            self.axes[f"{prefix}.bias"] = (out_group,)

    def batchnorm(self, prefix: str, group: str) -> None:
        """A BatchNorm ``prefix`` on ``group``'s channels: weight, bias and both running statistics."""
        self.axes.update(batchnorm_axes(prefix, group))

    def conv_bn(self, conv: str, bn: str, out_group: str, in_group: Group) -> None:
        """A bias-free conv followed by its BatchNorm."""
        self.conv(conv, out_group, in_group)
        self.batchnorm(bn, out_group)

    def build(self) -> PermutationSpec:
        return PermutationSpec(dict(self.axes), dict(self.sizes), {g: list(p) for g, p in self.points.items()})


#: declares one residual block's own groups and tensors: (builder, prefix, block, in_stream, stream)
BlockSpec = Callable[[SpecBuilder, str, nn.Module, str, str], None]


def residual_spec(model: nn.Module, stages: Iterable[str], shortcut: str, block_spec: BlockSpec) -> PermutationSpec:
    """The spec of a ResNet: stem ``conv1``/``bn1``/``relu``, stages of blocks, classifier ``fc``.

    Each block's projection shortcut (attribute ``shortcut``, ``None`` for identity) is a
    ``Sequential(conv, BatchNorm)``; ``block_spec`` declares the rest of the block. The stem's
    stream is the first stage's (named after it) unless that stage starts with a shortcut (``stem``).
    """
    stages = list(stages)
    b = SpecBuilder()
    first_block = getattr(model, stages[0])[0]
    stream = "stem" if getattr(first_block, shortcut) is not None else stages[0]
    b.group(stream, model.conv1.out_channels, ["relu"])
    b.conv_bn("conv1", "bn1", stream, None)
    for stage in stages:
        for i, block in enumerate(getattr(model, stage)):
            prefix = f"{stage}.{i}"
            in_stream = stream
            projection = getattr(block, shortcut)
            if projection is not None:  # a shape change starts a new stream; the shortcut maps old -> new
                if stage in b.sizes:
                    raise ValueError(f"{prefix} changes shape after the first block of its stage; unsupported")
                stream = b.group(stage, projection[0].out_channels, [])
                b.conv_bn(f"{prefix}.{shortcut}.0", f"{prefix}.{shortcut}.1", stream, in_stream)
            block_spec(b, prefix, block, in_stream, stream)
    b.linear("fc", None, stream)
    return b.build()


def residual_prunable_names(model: nn.Module, stages: Iterable[str], convs: Sequence[str]) -> list[str]:
    """A ResNet's prunable weights: the stem conv, each block's ``convs`` (not its shortcut), ``fc``."""
    blocks = [f"{stage}.{i}" for stage in stages for i in range(len(getattr(model, stage)))]
    return ["conv1.weight", *(f"{block}.{conv}.weight" for block in blocks for conv in convs), "fc.weight"]
