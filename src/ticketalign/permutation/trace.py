"""Derive a network's permutation symmetry from its graph, as a check on hand-written specs.

:func:`derive_permutation_spec` traces a model with ``torch.fx`` and propagates *channel
spaces* (the index set of dimension 1 of every tensor) through the graph:

* the model input is one space that is never permuted; so is every space reaching the output;
* each Conv/Linear module output opens a new space (a candidate permutation group);
* BatchNorm, elementwise activations, pooling, dropout, identity, and reshapes that keep the
  batch and channel dimensions (or flatten a ``[N, C, 1, 1]`` map to ``[N, C]``) pass a space
  through unchanged;
* an elementwise ``add``/``sub``/``mul`` of two tensors *unifies* their spaces (union-find):
  this is how a residual stream becomes one group;
* anything else (``cat``, ``matmul``, attention, grouped or depthwise convolution, indexing,
  flattening a permuted feature map with spatial size > 1 into a Linear, parameters used
  directly in ``forward``, unknown modules or functions) raises
  :class:`UnsupportedOperationError` naming the node and its target. A wrong spec is never
  returned silently.

Every Conv/Linear weight and bias and every norm weight/bias/running statistic the traced graph
touches is listed in ``axes_to_perm`` (also when no axis is permuted), keyed like the state dict.
Groups are named ``P0``, ``P1``, ... in graph order.

``activation_points`` lists, for each group, the modules whose forward output is the group's
post-activation tensor: an activation module (``nn.ReLU``...) called only on that group, or a
container (e.g. a residual block ending in ``F.relu``) whose return value is such an activation;
for a residual stream this is every place it is visible after an activation. Where no module
shows a group after its activation (torchvision's Bottleneck reuses one ``nn.ReLU`` for three
different spaces, so hooking it is ambiguous), the modules whose output feeds the activation
(pre-activation, e.g. the BatchNorm) are listed instead, and failing that any module whose
output carries the group. A module called several times is listed only if every call shows the
same group. Beware of in-place activations: a hook on a module feeding ``ReLU(inplace=True)``
must copy its output before the ReLU overwrites it.

:func:`~ticketalign.permutation.spec.spec_differences` compares a derived spec with a hand-written
one up to renaming of groups.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from ticketalign.permutation.spec import BATCHNORM_TENSORS, PermutationSpec

__all__ = [
    "UnsupportedOperationError",
    "derive_permutation_spec",
]


class UnsupportedOperationError(ValueError):
    """The traced graph holds an operation whose effect on hidden-unit permutations is unknown."""


# ----------------------------------------------------------------------------------------------
# What the tracer knows about operations
# ----------------------------------------------------------------------------------------------

_ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softsign,
    nn.LogSigmoid, nn.Tanhshrink, nn.Threshold,
)  # fmt: skip

# Per-channel (or channel-independent) modules without parameters: output space = input space.
_PASSTHROUGH_MODULES: tuple[type[nn.Module], ...] = (
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.FeatureAlphaDropout, nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Upsample,
)  # fmt: skip

_POOL_MODULES: tuple[type[nn.Module], ...] = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool1d, nn.LPPool2d,
)  # fmt: skip

_RESHAPE_MODULES: tuple[type[nn.Module], ...] = (nn.Flatten, nn.Unflatten)


def _functions(*names: str, modules: Sequence[Any] = (F, torch)) -> frozenset[Any]:
    found = set()
    for name in names:
        for module in modules:
            fn = getattr(module, name, None)
            if fn is not None:
                found.add(fn)
    return frozenset(found)


_ACTIVATION_FUNCTIONS = _functions(
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "celu", "gelu",
    "silu", "mish", "sigmoid", "tanh", "hardtanh", "hardtanh_", "hardswish", "hardsigmoid",
    "softplus", "softsign", "logsigmoid", "tanhshrink", "threshold",
)  # fmt: skip
_ACTIVATION_METHODS = frozenset({"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_"})

_UNARY_FUNCTIONS = _functions(
    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
    "softmax", "log_softmax", "softmin", "clamp", "clip", "interpolate", "abs", "neg", "exp",
) | _functions(
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d", "lp_pool1d", "lp_pool2d",
    modules=(F, torch, torch._C._nn),
)  # fmt: skip
_POOL_FUNCTION_NAMES = ("pool1d", "pool2d", "pool3d")
_UNARY_METHODS = frozenset(
    {"contiguous", "clone", "detach", "float", "double", "half", "bfloat16", "to", "type_as",
     "softmax", "log_softmax", "clamp", "clamp_", "clip", "abs", "neg", "exp"}
)  # fmt: skip

_BINARY_FUNCTIONS = frozenset(
    {operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
     operator.truediv, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div}
)  # fmt: skip
_BINARY_METHODS = frozenset({"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"})

_RESHAPE_FUNCTIONS = frozenset({torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze})
_RESHAPE_METHODS = frozenset({"view", "reshape", "flatten", "squeeze", "unsqueeze"})

_REDUCE_FUNCTIONS = frozenset({torch.mean, torch.sum, torch.amax, torch.amin})
_REDUCE_METHODS = frozenset({"mean", "sum", "amax", "amin"})

_META_METHODS = frozenset({"size", "dim", "ndimension", "numel"})
_META_ATTRIBUTES = frozenset({"shape", "dtype", "device", "ndim", "is_cuda"})


# ----------------------------------------------------------------------------------------------
# Channel spaces
# ----------------------------------------------------------------------------------------------


class _Spaces:
    """Union-find over channel spaces; a class is ``fixed`` when it may not be permuted."""

    def __init__(self) -> None:
        self._parent: list[int] = []
        self._size: list[int] = []
        self._fixed: list[bool] = []

    def new(self, size: int, fixed: bool = False) -> int:
        self._parent.append(len(self._parent))
        self._size.append(size)
        self._fixed.append(fixed)
        return len(self._parent) - 1

    def find(self, s: int) -> int:
        while self._parent[s] != s:
            self._parent[s] = self._parent[self._parent[s]]
            s = self._parent[s]
        return s

    def size(self, s: int) -> int:
        return self._size[self.find(s)]

    def fixed(self, s: int) -> bool:
        return self._fixed[self.find(s)]

    def fix(self, s: int) -> None:
        self._fixed[self.find(s)] = True

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self._size[ra] != self._size[rb]:
            raise ValueError(f"cannot unify channel spaces of {self._size[ra]} and {self._size[rb]} units")
        keep, drop = min(ra, rb), max(ra, rb)
        self._parent[drop] = keep
        self._fixed[keep] = self._fixed[keep] or self._fixed[drop]
        return keep


_META = object()  # the value of a node that is not a tensor (a size, a dtype, an int)


@dataclass
class _Binding:
    """The spaces on each axis of one state-dict tensor (shared by tied weights)."""

    keys: list[str]
    axes: list[int | None]


@dataclass
class _Instance:
    """One call of one module, as recorded in the fx ``nn_module_stack`` metadata."""

    name: str
    depth: int
    nodes: list[fx.Node] = field(default_factory=list)


def _describe(node: fx.Node, gm: fx.GraphModule | None = None) -> str:
    if node.op == "call_module" and gm is not None:
        try:
            kind = type(gm.get_submodule(str(node.target))).__name__
        except AttributeError:
            kind = "?"
        return f"node {node.name!r} (call_module {node.target!r}, {kind})"
    if node.op == "call_function":
        module = getattr(node.target, "__module__", None) or ""
        module = {"_operator": "operator", "builtins": ""}.get(module, module)
        name = getattr(node.target, "__name__", None) or repr(node.target)
        return f"node {node.name!r} (call_function {module + '.' if module else ''}{name})"
    return f"node {node.name!r} ({node.op} {node.target!r})"


def _tensor_shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    if isinstance(meta, TensorMetadata):
        return tuple(int(d) for d in meta.shape)
    return None


def _iter_nodes(arg: Any) -> Iterator[fx.Node]:
    if isinstance(arg, fx.Node):
        yield arg
    elif isinstance(arg, (list, tuple)):
        for a in arg:
            yield from _iter_nodes(a)
    elif isinstance(arg, Mapping):
        for a in arg.values():
            yield from _iter_nodes(a)
    elif isinstance(arg, slice):
        for a in (arg.start, arg.stop, arg.step):
            yield from _iter_nodes(a)


class _Deriver:
    def __init__(self, model: nn.Module, gm: fx.GraphModule) -> None:
        self.model = model
        self.gm = gm
        self.state = model.state_dict(keep_vars=True)
        self.spaces = _Spaces()
        self.env: dict[fx.Node, Any] = {}
        self.module_out: dict[str, int] = {}
        self.bindings: dict[int, _Binding] = {}
        self.key_binding: dict[str, int] = {}
        self.flattened: list[tuple[fx.Node, int]] = []  # flatten of a map that must stay unpermuted
        self.activation_nodes: set[fx.Node] = set()

    # -- errors and small helpers ----------------------------------------------------------

    def fail(self, node: fx.Node, reason: str) -> UnsupportedOperationError:
        return UnsupportedOperationError(
            f"cannot derive a permutation spec for {type(self.model).__name__}: {_describe(node, self.gm)} "
            f"{reason}; write the model's permutation_spec() by hand"
        )

    def out_shape(self, node: fx.Node) -> tuple[int, ...]:
        shape = _tensor_shape(node)
        if shape is None:
            raise self.fail(node, "does not produce a single tensor")
        if len(shape) < 2:
            raise self.fail(node, f"produces a tensor of shape {shape} without a channel dimension (dim 1)")
        return shape

    def is_tensor(self, arg: Any) -> bool:
        return isinstance(arg, fx.Node) and self.env.get(arg, _META) is not _META

    def tensor_input(self, node: fx.Node) -> fx.Node:
        """The op's first argument, which must be a tensor; no other argument may be one."""
        if not node.args or not self.is_tensor(node.args[0]):
            raise self.fail(node, "does not take a tensor as its first argument")
        others = [a for a in _iter_nodes((node.args[1:], node.kwargs)) if self.is_tensor(a)]
        if others:
            raise self.fail(node, f"combines several tensors ({', '.join(a.name for a in others)})")
        return node.args[0]

    def unify(self, node: fx.Node, a: int, b: int) -> int:
        try:
            return self.spaces.union(a, b)
        except ValueError as err:
            raise self.fail(node, str(err)) from None

    def bind(self, node: fx.Node, owner: str, param: str, axes: tuple[int | None, ...]) -> None:
        key = f"{owner}.{param}" if owner else param
        tensor = self.state.get(key)
        if tensor is None:
            return
        if tensor.dim() != len(axes):
            raise self.fail(node, f"has tensor {key!r} of shape {tuple(tensor.shape)}, expected {len(axes)} axes")
        ident = id(tensor)
        binding = self.bindings.get(ident)
        if binding is None:
            self.bindings[ident] = binding = _Binding([], list(axes))
        else:  # the same tensor seen again (a module called twice, or tied weights)
            for axis, (old, new) in enumerate(zip(binding.axes, axes, strict=True)):
                if (old is None) != (new is None):
                    raise self.fail(node, f"uses tensor {key!r} axis {axis} inconsistently")
                if old is not None and new is not None:
                    self.unify(node, old, new)
        if key not in binding.keys:
            binding.keys.append(key)
        self.key_binding[key] = ident

    def passthrough(self, node: fx.Node, source: fx.Node) -> int:
        shape, in_shape = self.out_shape(node), self.out_shape(source)
        if shape[1] != in_shape[1]:
            raise self.fail(node, f"changes the channel dimension {in_shape} -> {shape}")
        return self.env[source]

    # -- the walk --------------------------------------------------------------------------

    def run(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                shape = _tensor_shape(node)
                if shape is None:
                    self.env[node] = _META
                else:
                    self.env[node] = self.spaces.new(self.out_shape(node)[1], fixed=True)
            elif node.op == "get_attr":
                raise self.fail(node, "reads a parameter or buffer directly in forward()")
            elif node.op == "output":
                for arg in _iter_nodes(node.args):
                    if self.is_tensor(arg):
                        self.spaces.fix(self.env[arg])
            elif node.op == "call_module":
                self.env[node] = self.call_module(node)
            elif node.op in ("call_function", "call_method"):
                self.env[node] = self.call_function(node)
            else:
                raise self.fail(node, "is an unknown kind of graph node")
        for node, space in self.flattened:
            if not self.spaces.fixed(space):
                raise self.fail(
                    node,
                    "flattens a permuted feature map with spatial size > 1 (a channel permutation "
                    "would become a strided permutation of features)",
                )

    def module_space(self, node: fx.Node, units: int) -> int:
        name = str(node.target)
        if name not in self.module_out:
            self.module_out[name] = self.spaces.new(units)
        return self.module_out[name]

    def call_module(self, node: fx.Node) -> Any:
        mod = self.gm.get_submodule(str(node.target))
        owner = str(node.target)
        if isinstance(mod, nn.modules.conv._ConvNd):
            if mod.transposed:
                raise self.fail(node, "is a transposed convolution, which is not supported")
            if mod.groups != 1:
                raise self.fail(node, f"is a grouped/depthwise convolution (groups={mod.groups}), not supported")
            x = self.tensor_input(node)
            if len(self.out_shape(x)) != mod.weight.dim():
                raise self.fail(node, f"gets an input of shape {self.out_shape(x)} (unbatched?)")
            self.out_shape(node)
            out = self.module_space(node, mod.out_channels)
            kernel = (None,) * (mod.weight.dim() - 2)
            self.bind(node, owner, "weight", (out, self.env[x], *kernel))
            self.bind(node, owner, "bias", (out,))
            return out
        if isinstance(mod, nn.Linear):
            x = self.tensor_input(node)
            if len(self.out_shape(x)) != 2:
                raise self.fail(node, f"applies a Linear to a tensor of shape {self.out_shape(x)}; only [N, C]")
            self.out_shape(node)
            out = self.module_space(node, mod.out_features)
            self.bind(node, owner, "weight", (out, self.env[x]))
            self.bind(node, owner, "bias", (out,))
            return out
        if isinstance(mod, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
            x = self.tensor_input(node)
            space = self.passthrough(node, x)
            for param in BATCHNORM_TENSORS:
                self.bind(node, owner, param, (space,))
            return space
        if isinstance(mod, nn.GroupNorm):
            if mod.num_groups not in (1, mod.num_channels):
                raise self.fail(node, f"normalizes groups of channels (num_groups={mod.num_groups})")
            space = self.passthrough(node, self.tensor_input(node))
            self.bind(node, owner, "weight", (space,))
            self.bind(node, owner, "bias", (space,))
            return space
        if isinstance(mod, nn.LayerNorm):
            x = self.tensor_input(node)
            space = self.passthrough(node, x)
            ndim, normed = len(self.out_shape(x)), len(mod.normalized_shape)
            if normed >= ndim:
                raise self.fail(node, "normalizes over the batch dimension")
            axes = ((space,) if normed == ndim - 1 else (None,)) + (None,) * (normed - 1)
            self.bind(node, owner, "weight", axes)
            self.bind(node, owner, "bias", axes)
            return space
        if isinstance(mod, nn.PReLU):
            space = self.passthrough(node, self.tensor_input(node))
            self.bind(node, owner, "weight", (space if mod.num_parameters > 1 else None,))
            self.activation_nodes.add(node)
            return space
        if isinstance(mod, _ACTIVATION_MODULES):
            self.activation_nodes.add(node)
            return self.passthrough(node, self.tensor_input(node))
        if isinstance(mod, _PASSTHROUGH_MODULES):
            return self.passthrough(node, self.tensor_input(node))
        if isinstance(mod, _POOL_MODULES):
            x = self.tensor_input(node)
            if len(self.out_shape(x)) < 3:
                raise self.fail(node, f"pools a tensor of shape {self.out_shape(x)} (no spatial dimension)")
            return self.passthrough(node, x)
        if isinstance(mod, _RESHAPE_MODULES):
            return self.reshape(node, self.tensor_input(node))
        if any(True for _ in mod.parameters(recurse=False)) or any(True for _ in mod.buffers(recurse=False)):
            raise self.fail(node, "is a module with parameters whose symmetry is unknown")
        raise self.fail(node, "is a module whose effect on channel permutations is unknown")

    def call_function(self, node: fx.Node) -> Any:
        target, method = node.target, node.op == "call_method"
        tensor_args = [a for a in _iter_nodes((node.args, node.kwargs)) if self.is_tensor(a)]
        if not tensor_args:
            if node.meta.get("tensor_meta") is not None:
                raise self.fail(node, "creates a tensor from nothing the tracer follows")
            return _META  # arithmetic on sizes, ints, ...
        if method and target in _META_METHODS:
            return _META
        if not method and target is getattr:
            if len(node.args) > 1 and node.args[1] in _META_ATTRIBUTES:
                return _META
            raise self.fail(node, f"reads tensor attribute {node.args[1:]!r}")
        if (method and target in _BINARY_METHODS) or (not method and target in _BINARY_FUNCTIONS):
            return self.binary(node)
        if (method and target in _ACTIVATION_METHODS) or (not method and target in _ACTIVATION_FUNCTIONS):
            self.activation_nodes.add(node)
            return self.passthrough(node, self.tensor_input(node))
        if (method and target in _UNARY_METHODS) or (not method and target in _UNARY_FUNCTIONS):
            x = node.args[0] if node.args else None
            if method and target in ("to", "type_as") and self.is_tensor(x):
                return self.passthrough(node, x)
            x = self.tensor_input(node)
            name = str(target) if method else getattr(target, "__name__", "")
            if any(name.endswith(p) for p in _POOL_FUNCTION_NAMES) and len(self.out_shape(x)) < 3:
                raise self.fail(node, f"pools a tensor of shape {self.out_shape(x)} (no spatial dimension)")
            return self.passthrough(node, x)
        if (method and target in _RESHAPE_METHODS) or (not method and target in _RESHAPE_FUNCTIONS):
            return self.reshape(node, self.tensor_input(node))
        if (method and target in _REDUCE_METHODS) or (not method and target in _REDUCE_FUNCTIONS):
            return self.reduce(node, self.tensor_input(node))
        if not method and target is operator.getitem:
            raise self.fail(node, "indexes or slices a tensor")
        raise self.fail(node, "is an operation whose effect on channel permutations is unknown")

    def binary(self, node: fx.Node) -> int:
        operands = [a for a in _iter_nodes((node.args, node.kwargs)) if self.is_tensor(a)]
        if len(operands) == 1:  # tensor with a scalar
            return self.passthrough(node, operands[0])
        if len(operands) != 2:
            raise self.fail(node, f"combines {len(operands)} tensors")
        a, b = operands
        sa, sb, out = self.out_shape(a), self.out_shape(b), self.out_shape(node)
        if len(sa) != len(sb):
            raise self.fail(node, f"broadcasts tensors of different rank {sa} and {sb}")
        if sa[1] == sb[1]:
            space = self.unify(node, self.env[a], self.env[b])
        elif sb[1] == 1:
            space = self.env[a]
        elif sa[1] == 1:
            space = self.env[b]
        else:
            raise self.fail(node, f"combines tensors of shapes {sa} and {sb}")
        if out[1] != self.spaces.size(space):
            raise self.fail(node, f"produces shape {out} from {sa} and {sb}")
        return space

    def reshape(self, node: fx.Node, x: fx.Node) -> int:
        before, after = self.out_shape(x), self.out_shape(node)
        if after[:2] == before[:2]:  # batch and channel kept: each (n, c) block stays contiguous
            return self.env[x]
        if len(after) == 2 and after[0] == before[0] and after[1] == math.prod(before[1:]):
            if math.prod(before[2:]) == 1:
                return self.env[x]
            flat = self.spaces.new(after[1], fixed=True)
            self.flattened.append((node, self.env[x]))
            return flat
        raise self.fail(node, f"reshapes {before} to {after}, moving the channel dimension")

    def reduce(self, node: fx.Node, x: fx.Node) -> int:
        ndim = len(self.out_shape(x))
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if dims is None or isinstance(dims, fx.Node):
            raise self.fail(node, "reduces over all dimensions or over dimensions known only at run time")
        dims = [dims] if isinstance(dims, int) else list(dims)
        if any(not isinstance(d, int) for d in dims) or {d % ndim for d in dims} & {0, 1}:
            raise self.fail(node, f"reduces over dimensions {dims}, including the batch or channel one")
        return self.passthrough(node, x)

    # -- results ---------------------------------------------------------------------------

    def group_names(self) -> dict[int, str]:
        names: dict[int, str] = {}
        for binding in self.bindings.values():
            for space in binding.axes:
                if space is None or self.spaces.fixed(space):
                    continue
                root = self.spaces.find(space)
                if root not in names:
                    names[root] = f"P{len(names)}"
        return names

    def spec(self) -> PermutationSpec:
        names = self.group_names()
        axes_to_perm: dict[str, tuple[str | None, ...]] = {}
        for key in self.state:  # state-dict order
            ident = self.key_binding.get(key)
            if ident is None:
                continue
            axes = self.bindings[ident].axes
            axes_to_perm[key] = tuple(
                None if s is None or self.spaces.fixed(s) else names[self.spaces.find(s)] for s in axes
            )
        sizes = {name: self.spaces.size(root) for root, name in names.items()}
        points = self.activation_points(names)
        return PermutationSpec(axes_to_perm, sizes, points)

    def node_group(self, node: fx.Node, names: dict[int, str]) -> str | None:
        space = self.env.get(node, _META)
        if space is _META:
            return None
        return names.get(self.spaces.find(space))

    def activation_points(self, names: dict[int, str]) -> dict[str, list[str]]:
        instances: dict[str, _Instance] = {}
        for node in self.gm.graph.nodes:
            for depth, (key, value) in enumerate(node.meta.get("nn_module_stack", {}).items()):
                instance = instances.setdefault(key, _Instance(str(value[0]), depth))
                instance.nodes.append(node)
        calls: dict[str, list[fx.Node | None]] = {}  # module name -> output node of each call
        depth: dict[str, int] = {}
        for instance in instances.values():
            inside = set(instance.nodes)
            escaping = [n for n in instance.nodes if any(u not in inside for u in n.users)]
            calls.setdefault(instance.name, []).append(escaping[0] if len(escaping) == 1 else None)
            depth[instance.name] = max(depth.get(instance.name, 0), instance.depth)

        def clean(name: str, group: str, post: bool) -> bool:
            outs = calls[name]
            return all(
                n is not None and self.node_group(n, names) == group and (not post or n in self.activation_nodes)
                for n in outs
            )

        # which modules show each node as their output, deepest (most specific) first
        shown_by: dict[fx.Node, list[str]] = {}
        for name, outs in calls.items():
            for n in outs:
                if n is not None and name not in shown_by.setdefault(n, []):
                    shown_by[n].append(name)
        for mods in shown_by.values():
            mods.sort(key=lambda m: -depth[m])

        order = {n: i for i, n in enumerate(self.gm.graph.nodes)}
        by_group: dict[str, list[fx.Node]] = {g: [] for g in names.values()}
        for node in sorted(self.env, key=order.__getitem__):
            group = self.node_group(node, names)
            if group is not None:
                by_group[group].append(node)

        points: dict[str, list[str]] = {}
        for group, nodes in by_group.items():
            chosen: list[str] = []
            rules = (
                (lambda n: n in self.activation_nodes, True),  # post-activation
                (lambda n: any(u in self.activation_nodes for u in n.users), False),  # pre-activation
                (lambda n: True, False),  # anything showing the group
            )
            for wanted, post in rules:
                for node in nodes:
                    if not wanted(node):
                        continue
                    for name in shown_by.get(node, []):
                        if clean(name, group, post):
                            if name not in chosen:
                                chosen.append(name)
                            break
                if chosen:
                    break
            points[group] = chosen
        return points


def derive_permutation_spec(
    model: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...]
) -> PermutationSpec:
    """Trace ``model`` with torch.fx and derive its hidden-unit permutation symmetry.

    ``example_input`` is run once (eval mode, no grad; the model's modes are restored) to learn
    every tensor's shape. Use a batch of at least 2 so the batch dimension is unambiguous.
    Raises :class:`UnsupportedOperationError` naming the first node whose effect on channel
    permutations is unknown.
    """
    try:
        gm = fx.symbolic_trace(model)
    except Exception as err:  # fx raises many kinds (TraceError, TypeError, NotImplementedError...)
        raise UnsupportedOperationError(
            f"cannot derive a permutation spec: torch.fx could not trace {type(model).__name__} "
            f"({type(err).__name__}: {err}); data-dependent control flow cannot be traced; "
            "write the model's permutation_spec() by hand"
        ) from err
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    modes = {m: m.training for m in model.modules()}
    try:
        gm.eval()
        model.eval()
        with torch.no_grad():
            ShapeProp(gm).propagate(*inputs)
    finally:
        for m, training in modes.items():
            m.training = training
    deriver = _Deriver(model, gm)
    deriver.run()
    spec = deriver.spec()
    spec.check(model.state_dict())
    return spec
