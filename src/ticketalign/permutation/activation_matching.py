"""Activation matching (the paper's method): align A's units to B's by how they respond to data.

Both trained models see the same training batches in eval mode. For every permutation group we
observe its units where the spec's ``activation_points`` say (post-activation module outputs;
for conv features every spatial position counts as a sample) and compute the Pearson
correlation between every unit of A and every unit of B from exact global statistics (sums,
squares and cross-products accumulated in float64, not per-batch averages). A group visible
at several points (a residual stream) gets the SUM of the correlation matrices of all its
points. One linear assignment per group maximizes the total correlation.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from ticketalign.permutation.spec import Permutation, PermutationSpec


class _Moments:
    """Running float64 sums needed for the A-by-B correlation matrix of one activation point."""

    def __init__(self) -> None:
        self.n = 0
        self.sum_a = self.sum_b = self.sq_a = self.sq_b = self.cross = None

    def add(self, fa: torch.Tensor, fb: torch.Tensor) -> None:
        fa, fb = _samples_by_units(fa), _samples_by_units(fb)
        if self.cross is None:
            self.sum_a, self.sq_a = torch.zeros_like(fa[0]), torch.zeros_like(fa[0])
            self.sum_b, self.sq_b = torch.zeros_like(fb[0]), torch.zeros_like(fb[0])
            self.cross = torch.zeros(fb.shape[1], fa.shape[1], dtype=torch.float64, device=fa.device)
        self.n += fa.shape[0]
        self.sum_a += fa.sum(0)
        self.sum_b += fb.sum(0)
        self.sq_a += (fa * fa).sum(0)
        self.sq_b += (fb * fb).sum(0)
        self.cross += fb.T @ fa

    def correlation(self) -> torch.Tensor:
        """Rows: B's units, columns: A's units. Units that never vary correlate 0 with all."""
        mean_a, mean_b = self.sum_a / self.n, self.sum_b / self.n
        cov = self.cross / self.n - mean_b[:, None] * mean_a[None, :]
        std_a = (self.sq_a / self.n - mean_a**2).clamp_min(0).sqrt()
        std_b = (self.sq_b / self.n - mean_b**2).clamp_min(0).sqrt()
        denom = std_b[:, None] * std_a[None, :]
        return torch.where(denom > 0, cov / denom.clamp_min(1e-300), torch.zeros_like(cov))


def _samples_by_units(f: torch.Tensor) -> torch.Tensor:
    """(N, C, ...) -> (N * spatial, C) in float64: each spatial position is a sample."""
    return f.detach().movedim(1, -1).reshape(-1, f.shape[1]).double()


@torch.no_grad()
def activation_correlations(
    spec: PermutationSpec, model_a: nn.Module, model_b: nn.Module, batches: Iterable[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Per group, the correlation matrix (B units x A units) summed over its activation points."""
    missing = [p for p in spec.group_sizes if not spec.activation_points.get(p)]
    if missing:
        raise ValueError(f"activation matching: groups {missing} have no activation point in the spec")
    points = sorted({m for ms in spec.activation_points.values() for m in ms})
    feats: dict[tuple[str, str], torch.Tensor] = {}
    handles = []
    for tag, model in (("a", model_a), ("b", model_b)):
        modules = dict(model.named_modules())
        for name in points:
            if name not in modules:
                raise ValueError(f"activation point {name!r} is not a module of the model")
            hook = lambda _m, _i, out, key=(tag, name): feats.__setitem__(key, out)  # noqa: E731
            handles.append(modules[name].register_forward_hook(hook))
    modes = (model_a.training, model_b.training)
    model_a.eval()
    model_b.eval()
    moments = {name: _Moments() for name in points}
    try:
        for x in batches:
            model_a(x)
            model_b(x)
            for name in points:
                moments[name].add(feats[("a", name)], feats[("b", name)])
            feats.clear()
    finally:
        for h in handles:
            h.remove()
        model_a.train(modes[0])
        model_b.train(modes[1])
    if any(m.n == 0 for m in moments.values()):
        raise ValueError("activation matching saw no data: the batch iterator was empty")
    return {p: sum(moments[m].correlation() for m in spec.activation_points[p]) for p in spec.group_sizes}


def activation_matching(
    spec: PermutationSpec, model_a: nn.Module, model_b: nn.Module, batches: Iterable[torch.Tensor]
) -> tuple[Permutation, dict[str, float]]:
    """Find ``perm`` with ``apply_permutation(spec, perm, A) ≈ B``; also the mean matched correlation
    per group (divided by the number of points), a diagnostic of how alike the two models are."""
    perm, quality = {}, {}
    for p, corr in activation_correlations(spec, model_a, model_b, batches).items():
        rows, cols = linear_sum_assignment(corr.cpu().numpy(), maximize=True)
        perm[p] = torch.from_numpy(cols).long()
        quality[p] = float(corr[rows, cols].mean()) / len(spec.activation_points[p])
    return perm, quality
