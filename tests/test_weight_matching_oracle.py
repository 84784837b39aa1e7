"""The fast weight matcher against a plain Git Re-Basin coordinate descent written here.

:func:`_plain_weight_matching` is the algorithm with nothing cached: every step recomputes the
group's assignment matrix from scratch in float64 and the objective in full. It follows the
rules :func:`ticketalign.permutation.weight_matching.weight_matching` documents, so both must
walk the same path: the groups acting on a tensor both models hold, visited in the order
``numpy.random.default_rng(seed).permutation`` draws afresh for every sweep; a group's new
permutation is kept only if it strictly increases the objective; the history holds the starting
objective and the objective after every sweep; the descent stops after a sweep whose gain is at
most ``tol`` times the previous objective's magnitude (at least 1), or after ``max_sweeps``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from ticketalign.models import build_model, permutation_spec
from ticketalign.permutation.spec import PermutationSpec
from ticketalign.permutation.weight_matching import weight_matching

NUM_CLASSES = 10


def _plain_weight_matching(spec: PermutationSpec, params_a, params_b, seed: int, max_sweeps: int = 100,
                           tol: float = 1e-12) -> tuple[dict[str, torch.Tensor], list[float]]:
    names = [n for n in spec.axes_to_perm if n in params_a and n in params_b]
    a = {n: params_a[n].detach().double() for n in names}
    b = {n: params_b[n].detach().double() for n in names}
    groups = [p for p in spec.group_sizes if any(p in spec.axes_to_perm[n] for n in names)]
    perm = {p: torch.arange(size) for p, size in spec.group_sizes.items()}

    def permuted_a(name: str, perm: dict, except_axis: int | None = None) -> torch.Tensor:
        t = a[name]
        for axis, p in enumerate(spec.axes_to_perm[name]):
            if p is not None and axis != except_axis:
                t = t.index_select(axis, perm[p])
        return t

    def objective(perm: dict) -> float:
        return math.fsum(float((permuted_a(n, perm) * b[n]).sum()) for n in names)

    rng = np.random.default_rng(seed)
    history_now = objective(perm)  # the objective of ``perm``
    history = [history_now]
    for _ in range(max_sweeps):
        for p in rng.permutation(groups):
            cost = torch.zeros(spec.group_sizes[p], spec.group_sizes[p], dtype=torch.float64)
            for name in names:
                for axis, q in enumerate(spec.axes_to_perm[name]):
                    if q == p:  # B's units of p (rows) against A's units of p, every other axis permuted
                        w_a = permuted_a(name, perm, except_axis=axis).movedim(axis, 0).reshape(len(cost), -1)
                        cost += b[name].movedim(axis, 0).reshape(len(cost), -1) @ w_a.T
            _, cols = linear_sum_assignment(cost.numpy(), maximize=True)
            candidate = {**perm, p: torch.from_numpy(cols).long()}
            if objective(candidate) > history_now:
                perm, history_now = candidate, objective(candidate)
        history.append(history_now)
        if history[-1] - history[-2] <= tol * max(abs(history[-2]), 1.0):
            break
    return perm, history


def _random_pair(name: str, shape: tuple[int, ...], width: float) -> tuple[dict, dict, PermutationSpec]:
    """Two independently initialized models; BatchNorm affine parameters random too, so they count."""
    params = []
    for seed in (1, 2):
        model = build_model(name, shape, NUM_CLASSES, width=width, seed=seed)
        g = torch.Generator().manual_seed(10 + seed)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.normal_(1.0, 0.5, generator=g)
                    m.bias.normal_(0.0, 0.5, generator=g)
        params.append({n: p.detach() for n, p in model.named_parameters()})
    return params[0], params[1], permutation_spec(model)


CASES = [
    pytest.param("mlp", (64,), 0.5, [0, 1, 2, 3, 4], id="mlp"),
    pytest.param("resnet20", (3, 32, 32), 0.5, [0, 1, 2, 3], id="resnet20"),
    pytest.param("vgg11", (3, 32, 32), 0.0625, [0, 1, 2], id="vgg11"),
    pytest.param("vgg11_bn", (3, 32, 32), 0.125, [0, 1], id="vgg11_bn"),
    # width scales the bottlenecks only: the streams keep 256-2048 units (about 1.5 min)
    pytest.param("resnet50", (3, 64, 64), 0.0625, [0], id="resnet50", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("name", "shape", "width", "seeds"), CASES)
def test_fast_weight_matching_walks_the_plain_algorithms_path(name, shape, width, seeds):
    pa, pb, spec = _random_pair(name, shape, width)
    scale = math.sqrt(sum(float(t.double().square().sum()) for t in pa.values())
                      * sum(float(t.double().square().sum()) for t in pb.values()))
    for seed in seeds:
        max_sweeps = 3 if name == "resnet50" else 100
        fast, fast_history = weight_matching(spec, pa, pb, seed=seed, max_sweeps=max_sweeps)
        plain, plain_history = _plain_weight_matching(spec, pa, pb, seed=seed, max_sweeps=max_sweeps)
        assert len(fast_history) >= 3, "fewer than two sweeps: the comparison would be weak"
        differ = {p: int((fast[p] != plain[p]).sum()) for p in plain if not torch.equal(fast[p], plain[p])}
        assert not differ, f"seed {seed}: units placed differently, per group: {differ}"
        assert fast.keys() == plain.keys()
        assert fast_history == pytest.approx(plain_history, rel=0, abs=1e-12 * scale), f"seed {seed}"
