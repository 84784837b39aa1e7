"""The symmetry of a network, declared once, used by both matchers and by mask permutation.

A :class:`PermutationSpec` follows Git Re-Basin's ``axes_to_perm`` idea: for every tensor of
the state dict that hidden-unit permutations touch, one entry per axis naming the permutation
group acting on that axis (``None`` for an axis no permutation touches, e.g. the input pixels).
Biases and BatchNorm weight/bias/running_mean/running_var are listed like any weight, so a
permutation can never forget them (the bug in PyPI ``rebasin``).

Convention used everywhere in this project: a permutation ``perm[p]`` is a LongTensor of unit
indices, and applying it to a tensor selects ``tensor.index_select(axis, perm[p])`` on every axis
that group ``p`` acts on. After ``pi(A)``, unit ``i`` of group ``p`` is A's unit ``perm[p][i]``.
Matching A to B therefore returns the ``perm`` for which ``apply_permutation(perm, A) ≈ B``.

``activation_points`` tells activation matching where each group's units can be observed: the
names of modules whose forward output carries the group's units on dimension 1 (post-ReLU).

:func:`spec_differences` / :func:`specs_equivalent` compare two specs up to renaming of groups
(the tests hold every hand-written spec against the one derived by tracing).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

Permutation = dict[str, torch.Tensor]

#: a BatchNorm layer's tensors that carry its channels: all four move with a permutation
BATCHNORM_TENSORS = ("weight", "bias", "running_mean", "running_var")


def batchnorm_axes(prefix: str, group: str) -> dict[str, tuple[str]]:
    """The ``axes_to_perm`` entries of BatchNorm layer ``prefix`` whose channels are ``group``."""
    return {f"{prefix}.{t}": (group,) for t in BATCHNORM_TENSORS}


@dataclass(frozen=True)
class PermutationSpec:
    """Which permutation group acts on which axis of which tensor.

    ``axes_to_perm``: state-dict key -> tuple with one entry per axis (group name or None).
    ``group_sizes``: group name -> number of units (checked against every tensor that uses it).
    ``activation_points``: group name -> module names whose outputs show the group's units.
    """

    axes_to_perm: dict[str, tuple[str | None, ...]]
    group_sizes: dict[str, int]
    activation_points: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain containers only, so the spec can travel inside a permutation artifact."""
        return {
            "axes_to_perm": {k: tuple(v) for k, v in self.axes_to_perm.items()},
            "group_sizes": dict(self.group_sizes),
            "activation_points": {k: list(v) for k, v in self.activation_points.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> PermutationSpec:
        return cls(
            {k: tuple(v) for k, v in d["axes_to_perm"].items()},
            dict(d["group_sizes"]),
            {k: list(v) for k, v in d.get("activation_points", {}).items()},
        )

    @property
    def perm_to_axes(self) -> dict[str, list[tuple[str, int]]]:
        """Group name -> every (tensor name, axis) it acts on, in declaration order."""
        out: dict[str, list[tuple[str, int]]] = {p: [] for p in self.group_sizes}
        for name, axes in self.axes_to_perm.items():
            for axis, p in enumerate(axes):
                if p is not None:
                    out[p].append((name, axis))
        return out

    def check(self, state: Mapping[str, torch.Tensor]) -> None:
        """Raise ValueError if the spec does not fit ``state`` (missing keys, wrong sizes)."""
        for name in self.axes_to_perm:
            if name not in state:
                raise ValueError(f"permutation spec names tensor {name!r}, absent from the model")
            self.check_tensor(name, tuple(state[name].shape))
        unused = [p for p, axes in self.perm_to_axes.items() if not axes]
        if unused:
            raise ValueError(f"permutation groups {unused} act on no tensor")

    def check_tensor(self, name: str, shape: tuple[int, ...]) -> None:
        """Raise ValueError if tensor ``name`` of ``shape`` does not fit its entry (number of axes,
        group sizes)."""
        axes = self.axes_to_perm[name]
        if len(axes) != len(shape):
            raise ValueError(f"spec for {name!r} has {len(axes)} axes, tensor has shape {shape}")
        for axis, p in enumerate(axes):
            if p is None:
                continue
            if p not in self.group_sizes:
                raise ValueError(f"spec for {name!r} uses undeclared group {p!r}")
            if shape[axis] != self.group_sizes[p]:
                raise ValueError(
                    f"group {p!r} has {self.group_sizes[p]} units but {name!r} axis {axis} "
                    f"has {shape[axis]}"
                )

    def describe(self) -> str:
        """A one-line summary naming the spec's groups, for error messages."""
        groups = list(self.group_sizes)
        shown = ", ".join(groups[:6]) + (f", ... ({len(groups)} in all)" if len(groups) > 6 else "")
        return f"the permutation spec of {len(self.axes_to_perm)} tensors and groups {shown}"


def identity_permutation(spec: PermutationSpec) -> Permutation:
    return {p: torch.arange(n) for p, n in spec.group_sizes.items()}


def random_permutation(spec: PermutationSpec, generator: torch.Generator) -> Permutation:
    return {p: torch.randperm(n, generator=generator) for p, n in spec.group_sizes.items()}


def invert_permutation(perm: Permutation) -> Permutation:
    """The permutation that undoes ``perm``: apply(invert(p), apply(p, x)) == x."""
    return {p: torch.argsort(idx) for p, idx in perm.items()}


def compose_permutations(first: Permutation, second: Permutation) -> Permutation:
    """The single permutation equal to applying ``first`` and then ``second``."""
    if first.keys() != second.keys():
        raise ValueError(f"cannot compose permutations over groups {sorted(first)} and {sorted(second)}")
    return {p: first[p][second[p]] for p in first}


def permute_tensor(
    spec: PermutationSpec, perm: Permutation, name: str, tensor: torch.Tensor, skip_group: str | None = None
) -> torch.Tensor:
    """Apply ``perm`` to one tensor along every axis its spec names (except ``skip_group``)."""
    axes = spec.axes_to_perm.get(name)
    if axes is None:
        return tensor
    for axis, p in enumerate(axes):
        if p is None or p == skip_group:
            continue
        tensor = tensor.index_select(axis, perm[p].to(tensor.device))
    return tensor


def apply_permutation(
    spec: PermutationSpec, perm: Permutation, state: Mapping[str, torch.Tensor], *, strict: bool = False
) -> dict[str, torch.Tensor]:
    """Permute a state dict, or any name->tensor dict keyed like one (e.g. a mask dict).

    Tensors the spec does not mention (e.g. ``num_batches_tracked``, input-layer biases of
    un-permuted axes) are returned unchanged. Every permuted tensor is a new tensor.
    ``strict=True`` (for dicts whose every tensor must move with the units, e.g. a mask) raises
    ValueError naming every tensor the spec does not know instead, and any tensor whose shape
    does not fit its spec entry.
    """
    if strict:
        unknown = sorted(set(state) - set(spec.axes_to_perm))
        if unknown:
            raise ValueError(
                f"tensors {unknown} are not in {spec.describe()}; they would stay unpermuted "
                "(was the spec made for another model?)"
            )
        for name, t in state.items():
            spec.check_tensor(name, tuple(t.shape))
    missing = set(spec.group_sizes) - set(perm)
    if missing:
        raise ValueError(f"permutation lacks groups {sorted(missing)}")
    for p, idx in perm.items():
        n = spec.group_sizes.get(p)
        if n is None:
            raise ValueError(f"permutation has group {p!r}, unknown to the spec")
        if idx.shape != (n,) or not torch.equal(torch.sort(idx).values, torch.arange(n)):
            raise ValueError(f"group {p!r}: expected a permutation of range({n}), got shape {tuple(idx.shape)}")
    return {name: permute_tensor(spec, perm, name, t) for name, t in state.items()}


def permute_model(spec: PermutationSpec, perm: Permutation, model: torch.nn.Module) -> None:
    """Permute ``model`` in place (weights, biases and BatchNorm statistics together)."""
    state = model.state_dict()
    spec.check(state)
    model.load_state_dict(apply_permutation(spec, perm, state))


# ----------------------------------------------------------------------------------------------
# Comparing specs up to renaming of groups
# ----------------------------------------------------------------------------------------------


def canonical_partition(spec: PermutationSpec) -> dict[frozenset[tuple[str, int]], int]:
    """The spec without group names: each group's set of (tensor, axis) pairs -> its size."""
    return {frozenset(pairs): spec.group_sizes[p] for p, pairs in spec.perm_to_axes.items()}


def spec_differences(a: PermutationSpec, b: PermutationSpec) -> list[str]:
    """Human-readable differences between two specs, ignoring group names and activation points.

    Empty when both list the same tensors with the same number of axes, partition their
    (tensor, axis) pairs into the same groups, and give each group the same size.
    """
    out: list[str] = []
    for key in sorted(set(a.axes_to_perm) - set(b.axes_to_perm)):
        out.append(f"tensor {key!r} only in the first spec")
    for key in sorted(set(b.axes_to_perm) - set(a.axes_to_perm)):
        out.append(f"tensor {key!r} only in the second spec")
    for key in sorted(set(a.axes_to_perm) & set(b.axes_to_perm)):
        if len(a.axes_to_perm[key]) != len(b.axes_to_perm[key]):
            out.append(f"tensor {key!r} has {len(a.axes_to_perm[key])} vs {len(b.axes_to_perm[key])} axes")
    if out:
        return out

    def lookup(spec: PermutationSpec) -> dict[tuple[str, int], str | None]:
        return {(k, i): p for k, axes in spec.axes_to_perm.items() for i, p in enumerate(axes)}

    la, lb = lookup(a), lookup(b)
    reported: set[tuple[str | None, str | None]] = set()
    for pair in sorted(la):
        pa, pb = la[pair], lb[pair]
        if (pa is None) != (pb is None):
            out.append(f"{pair[0]} axis {pair[1]}: permuted by {pa!r} in the first spec, {pb!r} in the second")
            continue
        if pa is None or (pa, pb) in reported:
            continue
        reported.add((pa, pb))
        sa = {q for q, p in la.items() if p == pa}
        sb = {q for q, p in lb.items() if p == pb}
        if sa != sb:
            only_a = sorted(sa - sb)[:4]
            only_b = sorted(sb - sa)[:4]
            out.append(
                f"group {pa!r} (first) and {pb!r} (second) both act on {pair[0]} axis {pair[1]} but differ: "
                f"only first {only_a}, only second {only_b}"
            )
        elif a.group_sizes.get(pa) != b.group_sizes.get(pb):
            out.append(f"group {pa!r} has {a.group_sizes.get(pa)} units, {pb!r} has {b.group_sizes.get(pb)}")
    for name, spec in (("first", a), ("second", b)):
        unused = [p for p, pairs in spec.perm_to_axes.items() if not pairs]
        if unused:
            out.append(f"groups {unused} of the {name} spec act on no tensor")
    return out


def specs_equivalent(a: PermutationSpec, b: PermutationSpec) -> bool:
    """True if ``a`` and ``b`` describe the same symmetry up to renaming of groups."""
    return not spec_differences(a, b)
