"""Weight matching (Git Re-Basin, Ainsworth et al. 2023): align A's units to B's by weights alone.

Coordinate descent over permutation groups: in a seeded random order, each group's permutation
is re-solved exactly (one linear assignment) with every other group held fixed, maximizing
``sum_tensors <B, pi(A)>``. A sweep visits every group once; we stop after a sweep whose gain
is at most ``tol`` (relative to the objective) or after ``max_sweeps``. A group's new solution
is only accepted if it improves that group's term, so the objective never decreases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ticketalign.permutation.spec import Permutation, PermutationSpec, identity_permutation, permute_tensor


def _unit_rows(t: torch.Tensor, axis: int) -> torch.Tensor:
    """``t`` as a matrix with one row per unit of ``axis``."""
    return t.movedim(axis, 0).reshape(t.shape[axis], -1)


def matching_objective(
    spec: PermutationSpec, perm: Permutation, params_a: Mapping[str, torch.Tensor], params_b: Mapping[str, torch.Tensor]
) -> float:
    """``sum_tensors <B, pi(A)>`` over the tensors both dicts and the spec share."""
    total = 0.0
    for name in spec.axes_to_perm:
        if name in params_a and name in params_b:
            a = permute_tensor(spec, perm, name, params_a[name].double())
            total += float((a * params_b[name].double()).sum())
    return total


def weight_matching(
    spec: PermutationSpec,
    params_a: Mapping[str, torch.Tensor],
    params_b: Mapping[str, torch.Tensor],
    *,
    max_sweeps: int = 100,
    tol: float = 1e-12,
    seed: int = 0,
    init: Permutation | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[Permutation, list[float]]:
    """Find ``perm`` with ``apply_permutation(spec, perm, A) ≈ B``.

    ``params_*`` are name -> tensor dicts (usually the models' parameters; running statistics
    are better left out, their scale is unrelated to the weights'). Returns the permutation and
    the objective after each sweep (the first entry is the starting objective).
    """
    names = [n for n in spec.axes_to_perm if n in params_a and n in params_b]
    if not names:
        raise ValueError("weight matching: no tensor of the spec is present in both models")
    a = {n: params_a[n].detach().double().cpu() for n in names}
    b = {n: params_b[n].detach().double().cpu() for n in names}
    perm = {p: idx.clone() for p, idx in (init or identity_permutation(spec)).items()}
    axes_of = {p: [(n, ax) for n, ax in axes if n in a] for p, axes in spec.perm_to_axes.items()}
    groups = [p for p in spec.group_sizes if axes_of[p]]
    rng = np.random.default_rng(seed)
    history = [matching_objective(spec, perm, a, b)]
    for sweep in range(max_sweeps):
        for p in rng.permutation(groups):
            n = spec.group_sizes[p]
            cost = torch.zeros(n, n, dtype=torch.float64)
            for name, axis in axes_of[p]:
                a_other = permute_tensor(spec, perm, name, a[name], skip_group=p)
                cost += _unit_rows(b[name], axis) @ _unit_rows(a_other, axis).T
            cost_np = cost.numpy()
            rows, cols = linear_sum_assignment(cost_np, maximize=True)
            old = cost_np[np.arange(n), perm[p].numpy()].sum()
            new = cost_np[rows, cols].sum()
            if new > old:
                perm[p] = torch.from_numpy(cols).long()
        history.append(matching_objective(spec, perm, a, b))
        gain = history[-1] - history[-2]
        if log:
            log(f"weight matching sweep {sweep + 1}: objective {history[-1]:.6g} (gain {gain:.3g})")
        if gain <= tol * max(abs(history[-2]), 1.0):
            break
    return perm, history
