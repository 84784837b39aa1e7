"""Weight matching (Git Re-Basin, Ainsworth et al. 2023): align A's units to B's by weights alone.

Coordinate descent over permutation groups: in a seeded random order, each group's permutation
is re-solved exactly (one linear assignment) with every other group held fixed, maximizing the
objective ``sum_tensors <B, pi(A)>``. A sweep visits every group once; we stop after a sweep whose
gain is at most ``tol`` (relative to the objective) or after ``max_sweeps``. A group's new
solution is accepted only if it strictly increases the objective, evaluated in float64, so the
objective never decreases from one sweep to the next.

How it is made fast (same algorithm, less arithmetic):

* ``pi(A)`` is kept permuted as the descent goes; when a group accepts a new permutation only the
  units that moved are copied, in place, in the tensors that group acts on.
* The assignment matrix of group ``p`` is a sum of one ``n x n`` *contribution* per (tensor, axis)
  that ``p`` acts on: ``B_rows @ pi(A)_rows^T`` with rows the units of that axis. Each one is
  cached (float32), indexed by A's original units so that ``p``'s own permutation does not
  invalidate it. When the group on the tensor's other axis has moved ``d`` of its units since,
  the contribution is corrected by a rank-``d`` product over the moved units only (recomputed in
  full instead when ``d`` is over half that group, and after every 32 corrections, which bounds
  float32 drift). A group none of whose contributions changed would get the same assignment as last
  time: it is skipped.
* Float32 only guides the search. Acceptance is decided in float64: every tensor's term
  ``<B, pi(A)>`` is kept in float64 (float32 products are exact in float64; a move changes a term
  by the moved units' share, also computed in float64) and the objective is their exactly
  rounded sum (``math.fsum``). A candidate is accepted only if that sum increases, so the history
  increases with every accepted step and equals :func:`matching_objective` of the returned
  permutation up to float64 rounding.

Large temporaries are reused (fresh multi-megabyte allocations cost page faults on every call).
``torch``'s thread count is used as set by the caller (``torch.set_num_threads``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ticketalign.config import WeightMatchingConfig
from ticketalign.permutation.spec import Permutation, PermutationSpec, permute_tensor

_CHUNK = 1 << 16  # elements per float64 block in _dot64 (stays in cache, no large allocation)
_RESUM_EVERY = 16  # a group's float32 matrix is re-added from its contributions after this many updates
_REFRESH_EVERY = 32  # a contribution is recomputed in full after this many rank-d corrections


def _exact_dtype(t: torch.Tensor) -> torch.dtype:
    """A dtype holding ``t`` without loss in which products can be formed exactly in float64."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _dot64(a: torch.Tensor, b: torch.Tensor) -> float:
    """``<a, b>`` with float64 products and accumulation (blocks summed exactly with fsum)."""
    a, b = a.reshape(-1), b.reshape(-1)
    if a.numel() <= _CHUNK:
        return float(torch.dot(a.double(), b.double()))
    return math.fsum(float(torch.dot(x.double(), y.double())) for x, y in zip(a.split(_CHUNK), b.split(_CHUNK)))


def _rows(t: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """``t`` with ``axes`` moved to the front (in that order), as a matrix with one row per unit of
    ``axes[0]``."""
    return t.movedim(axes, tuple(range(len(axes)))).reshape(t.shape[axes[0]], -1)


def matching_objective(
    spec: PermutationSpec, perm: Permutation, params_a: Mapping[str, torch.Tensor], params_b: Mapping[str, torch.Tensor]
) -> float:
    """``sum_tensors <B, pi(A)>`` over the tensors both dicts and the spec share (float64)."""
    terms = []
    for name in spec.axes_to_perm:
        if name in params_a and name in params_b:
            a = permute_tensor(spec, perm, name, params_a[name].detach().cpu())
            terms.append(_dot64(a, params_b[name].detach().cpu()))
    return math.fsum(terms)


@dataclass
class _Contribution:
    """One (tensor, axis) a group acts on: its share of the group's assignment matrix.

    ``value`` is ``B_rows @ pi(A)_rows^T`` (float32, B's units x A's *original* units), rows taken
    along ``axis``. It depends only on the groups on the tensor's other axes (``others``), whose
    versions were ``stamp`` when it was last brought up to date.
    """

    name: str
    axis: int
    other_axes: tuple[int, ...]  # the tensor's other permuted axes
    others: tuple[str, ...]  # the groups acting on them
    b_rows: torch.Tensor  # B as float32 (n, m): ``axis`` first, then ``other_axes``, then the rest
    incremental: bool  # exactly one other permuted axis, of another group: updatable unit by unit
    stamp: tuple[int, ...] | None = None
    value: torch.Tensor | None = None
    snap: torch.Tensor | None = None  # the other group's permutation when ``value`` was made
    updates: int = 0  # corrections since ``value`` was last computed in full


def _check_inputs(spec: PermutationSpec, names: list[str], a: Mapping, b: Mapping, init: Permutation | None) -> None:
    for name in names:
        axes, sa, sb = spec.axes_to_perm[name], tuple(a[name].shape), tuple(b[name].shape)
        if sa != sb:
            raise ValueError(f"weight matching: {name!r} has shape {sa} in A but {sb} in B")
        if len(axes) != len(sa):
            raise ValueError(f"weight matching: spec for {name!r} has {len(axes)} axes, tensor has shape {sa}")
        for axis, p in enumerate(axes):
            if p is not None and sa[axis] != spec.group_sizes[p]:
                raise ValueError(
                    f"weight matching: group {p!r} has {spec.group_sizes[p]} units but {name!r} axis {axis} "
                    f"has {sa[axis]}"
                )
    if init is not None:
        for p, n in spec.group_sizes.items():
            idx = init.get(p)
            ok = idx is not None and tuple(idx.shape) == (n,)
            if not ok or not torch.equal(torch.sort(idx.detach().cpu().long()).values, torch.arange(n)):
                raise ValueError(f"weight matching: init[{p!r}] must be a permutation of range({n})")


class _Descent:
    """The state of one coordinate descent: pi(A), the cached contributions, the float64 terms."""

    def __init__(self, spec: PermutationSpec, names: list[str], params_a: Mapping, params_b: Mapping, init):
        self.spec = spec
        # pi(A) as the descent currently has it (a private copy, updated in place) and B
        self.a = {n: params_a[n].detach().cpu().to(_exact_dtype(params_a[n]), copy=True) for n in names}
        self.b = {n: params_b[n].detach().cpu().to(_exact_dtype(params_b[n])) for n in names}
        self.b32 = {n: t.float() for n, t in self.b.items()}
        self.perm = {p: torch.arange(n) for p, n in spec.group_sizes.items()}
        if init is not None:
            self.perm = {p: init[p].detach().cpu().long().clone() for p in spec.group_sizes}
            self.a = {n: permute_tensor(spec, self.perm, n, t).contiguous() for n, t in self.a.items()}
        self.inv = {p: torch.argsort(idx) for p, idx in self.perm.items()}
        self.version = dict.fromkeys(spec.group_sizes, 0)
        self.terms = {n: _dot64(self.a[n], self.b[n]) for n in names}
        self.total = math.fsum(self.terms.values())

        self.contributions: dict[str, list[_Contribution]] = {p: [] for p in spec.group_sizes}
        self.touching: dict[str, list[str]] = {p: [] for p in spec.group_sizes}  # tensors a group acts on
        for name in names:
            axes = spec.axes_to_perm[name]
            for axis, p in enumerate(axes):
                if p is None:
                    continue
                other_axes = tuple(i for i, q in enumerate(axes) if i != axis and q is not None)
                others = tuple(axes[i] for i in other_axes)
                b_rows = _rows(self.b32[name], (axis, *other_axes)).contiguous()
                incremental = len(others) == 1 and others[0] != p
                self.contributions[p].append(_Contribution(name, axis, other_axes, others, b_rows, incremental))
                if name not in self.touching[p]:
                    self.touching[p].append(name)
        self.cost: dict[str, torch.Tensor] = {}  # group -> sum of its contributions (float32)
        self.updates: dict[str, int] = {}  # group -> updates of ``cost`` since it was last re-added
        self.solved: set[str] = set()
        self._scratch: dict[tuple[int, torch.dtype, str], torch.Tensor] = {}

    def scratch(self, n: int, dtype: torch.dtype = torch.float32, tag: str = "") -> torch.Tensor:
        """A reusable ``n x n`` buffer (one per size, dtype and tag)."""
        key = (n, dtype, tag)
        if key not in self._scratch:
            self._scratch[key] = torch.empty(n, n, dtype=dtype)
        return self._scratch[key]

    def product(self, p: str, b_rows: torch.Tensor, a_rows: torch.Tensor) -> torch.Tensor:
        """``b_rows @ a_rows^T`` with columns in A's original order of group ``p``, in a scratch buffer."""
        n, inv = len(b_rows), self.inv[p]
        out = self.scratch(n)
        if a_rows.shape[1] < n:  # reorder the thin factor rather than the n x n product
            return torch.matmul(b_rows, a_rows.index_select(0, inv).T, out=out)
        tmp = torch.matmul(b_rows, a_rows.T, out=self.scratch(n, tag="product"))
        return torch.index_select(tmp, 1, inv, out=out)

    def refresh(self, p: str, c: _Contribution) -> torch.Tensor | None:
        """Bring ``c.value`` up to date; return the change to add to the group's matrix (None if
        ``value`` was just created)."""
        a = self.a[c.name]
        c.stamp = tuple(self.version[g] for g in c.others)
        if c.incremental and c.value is not None:
            q, ax2 = c.others[0], c.other_axes[0]
            changed = (self.perm[q] != c.snap).nonzero().squeeze(1)
            d = len(changed)
            if 2 * d <= self.spec.group_sizes[q] and c.updates < _REFRESH_EVERY:  # cheaper than in full
                before = self.inv[q][c.snap[changed]]  # where the units shown then are shown now
                c.updates += 1
                c.snap = self.perm[q].clone()
                if not d:
                    return self.scratch(len(c.value)).zero_()
                # pi(A) now shows other units of q at the changed positions: a rank-d correction
                delta = (a.index_select(ax2, changed) - a.index_select(ax2, before)).float()
                b_rows = _rows(self.b32[c.name].index_select(ax2, changed), (c.axis, ax2))
                change = self.product(p, b_rows, _rows(delta, (c.axis, ax2)))
                c.value += change
                return change
        a_rows = _rows(a.float() if a.dtype != torch.float32 else a, (c.axis, *c.other_axes))
        new = self.product(p, c.b_rows, a_rows)
        c.updates = 0
        c.snap = self.perm[c.others[0]].clone() if c.incremental else None
        if c.value is None:
            c.value = new.clone()
            return None
        # keep ``new`` as the value; the old value's buffer takes the change and becomes the scratch
        old, c.value = c.value, new
        self._scratch[(len(new), torch.float32, "")] = torch.sub(new, old, out=old)
        return old

    def assignment_matrix(self, p: str) -> torch.Tensor | None:
        """Group ``p``'s float32 assignment matrix (B units x A's original units), or None if
        nothing it depends on changed since ``p`` was last solved (the answer would be the same)."""
        contributions = self.contributions[p]
        stale = [c for c in contributions if c.stamp != tuple(self.version[g] for g in c.others)]
        if not stale and p in self.solved:
            return None
        cost = self.cost.get(p)
        resum = cost is None or self.updates[p] + len(stale) > _RESUM_EVERY
        for c in stale:
            change = self.refresh(p, c)  # a scratch buffer: add it before the next refresh
            if change is None:
                resum = True
            elif not resum:
                cost += change
        if resum:  # add the contributions up afresh (also bounds float32 drift of the updates)
            if cost is None:
                cost = self.cost[p] = contributions[0].value.clone()
            else:
                cost.copy_(contributions[0].value)
            for c in contributions[1:]:
                cost += c.value
            self.updates[p] = 0
        else:
            self.updates[p] += len(stale)
        return cost

    def try_group(self, p: str) -> bool:
        """Re-solve group ``p``; accept its new permutation if the float64 objective increases."""
        cost = self.assignment_matrix(p)
        if cost is None:
            return False
        self.solved.add(p)
        neg = self.scratch(len(cost), torch.float64)
        neg.copy_(cost).neg_()  # scipy is fastest on a float64 minimization
        _, cols = linear_sum_assignment(neg.numpy())
        cols = torch.from_numpy(cols).long()
        if torch.equal(cols, self.perm[p]):
            return False
        rel = self.inv[p][cols]  # the new pi(A) shows along p's axes the current units reordered by rel
        moved = (rel != torch.arange(len(rel))).nonzero().squeeze(1)
        source = rel[moved]
        new_terms, incoming, replaced = {}, {}, {}
        for name in self.touching[p]:
            axes = [i for i, g in enumerate(self.spec.axes_to_perm[name]) if g == p]
            a, b = self.a[name], self.b[name]
            if len(axes) == 1:  # only the moved units change: update the term by their share
                ax, d = axes[0], len(moved)
                both = a.index_select(ax, torch.cat([source, moved]))  # the incoming rows, then the current
                incoming[name] = both.narrow(ax, 0, d)
                both = both.double()
                change = both.narrow(ax, 0, d) - both.narrow(ax, d, d)
                new_terms[name] = self.terms[name] + _dot64(b.index_select(ax, moved), change)
            else:  # p on several axes of one tensor: permute it whole
                for ax in axes:
                    a = a.index_select(ax, rel)
                replaced[name], new_terms[name] = a.contiguous(), _dot64(a, b)
        new_total = math.fsum({**self.terms, **new_terms}.values())
        if not new_total > self.total:
            return False
        for name, rows in incoming.items():
            self.a[name].index_copy_(self.spec.axes_to_perm[name].index(p), moved, rows)
        self.a.update(replaced)
        self.terms.update(new_terms)
        self.total = new_total
        self.perm[p], self.inv[p] = cols, torch.argsort(cols)
        self.version[p] += 1
        return True


def weight_matching(
    spec: PermutationSpec,
    params_a: Mapping[str, torch.Tensor],
    params_b: Mapping[str, torch.Tensor],
    *,
    max_sweeps: int = WeightMatchingConfig.max_sweeps,
    tol: float = WeightMatchingConfig.tol,
    seed: int = WeightMatchingConfig.seed,
    init: Permutation | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[Permutation, list[float]]:
    """Find ``perm`` with ``apply_permutation(spec, perm, A) ≈ B``.

    ``params_*`` are name -> tensor dicts (usually the models' parameters; running statistics
    are better left out, their scale is unrelated to the weights'). Returns the permutation and
    the objective after each sweep (the first entry is the starting objective); the history never
    decreases. ``init`` is the starting permutation (identity by default).
    """
    names = [n for n in spec.axes_to_perm if n in params_a and n in params_b]
    if not names:
        raise ValueError("weight matching: no tensor of the spec is present in both models")
    if max_sweeps < 0:
        raise ValueError(f"weight matching: max_sweeps must be >= 0, got {max_sweeps}")
    _check_inputs(spec, names, params_a, params_b, init)
    state = _Descent(spec, names, params_a, params_b, init)
    groups = [p for p in spec.group_sizes if state.contributions[p]]
    rng = np.random.default_rng(seed)
    history = [state.total]
    for sweep in range(max_sweeps):
        changed = sum(state.try_group(str(p)) for p in rng.permutation(groups))
        history.append(state.total)
        gain = history[-1] - history[-2]
        if log:
            log(
                f"weight matching sweep {sweep + 1}: objective {history[-1]:.6g} (gain {gain:.3g}, "
                f"{changed} of {len(groups)} groups changed)"
            )
        if gain <= tol * max(abs(history[-2]), 1.0):
            break
    return state.perm, history
