"""Activation matching (the paper's method): align A's units to B's by how they respond to data.

Both trained models see the same batches in eval mode (no gradients; each module's mode is
restored afterwards). For every permutation group we observe its units where the spec's
``activation_points`` say (post-activation module outputs; for conv features every spatial
position counts as a sample) and compute the Pearson correlation between every unit of A and
every unit of B from exact global statistics: sums, sums of squares and the A-by-B cross products
over all samples of all batches, formed and accumulated in float64 (the cross products are float64
matrix products, the bulk of the cost on wide layers; float32 there would be faster but not
exact). The reference code's average of per-batch statistics is *not* what is computed. To avoid
cancellation in ``E[xy] - E[x]E[y]``, every unit is first shifted by its mean over the first block
of samples (an exact algebraic identity, not an approximation). A unit that never varies (e.g. a
ReLU that is never active) has no defined correlation; it gets 0 with every unit, never NaN.

A group visible at several points (a residual stream: the stem and every block output of a
stage) gets the SUM of the correlation matrices of all its points, so every place the stream is
observed counts equally. One linear assignment per group maximizes the total correlation.

Features are read inside forward hooks: A's are copied at once (so a later in-place operation,
e.g. ``out += identity`` or an in-place ReLU, cannot change them), B's are consumed inside their
own hook, before the forward pass goes on. A point module called more than once per forward pass
is ambiguous and rejected. Memory: one copy of A's features at every point for one batch (kept in
buffers reused from batch to batch) plus float64 blocks of about a million values.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from ticketalign.permutation.spec import Permutation, PermutationSpec

_CHUNK_ELEMENTS = 1 << 20  # units x samples per float64 block: bounded, reused temporaries


class _Workspace:
    """Flat buffers reused across points and batches (fresh large allocations cost page faults)."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, key: str, shape: tuple[int, ...], like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        numel = math.prod(shape)
        buf = self.buffers.get(key)
        if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != like.device:
            buf = self.buffers[key] = torch.empty(numel, dtype=dtype, device=like.device)
        return buf[:numel].view(shape)


class _Moments:
    """Running float64 sums for the B-by-A correlation matrix of one activation point."""

    def __init__(self) -> None:
        self.n = 0
        self.shift_a = self.shift_b = None
        self.sum_a = self.sum_b = self.sq_a = self.sq_b = self.cross = None

    def add(self, fa: torch.Tensor, fb: torch.Tensor, work: _Workspace) -> None:
        """Add samples given unit-first: ``fa`` (units of A, N, ...) and ``fb`` (units of B, N, ...),
        any float dtype and strides; every position of the trailing dimensions is a sample."""
        if fa.shape[1:] != fb.shape[1:]:
            raise ValueError(
                f"activation matching: A shows features of shape {tuple(fa.shape)} (units first) at a point, "
                f"B {tuple(fb.shape)}"
            )
        if fa.shape[1] == 0:
            return
        per_item = math.prod(fa.shape[2:])
        step = max(1, _CHUNK_ELEMENTS // (max(fa.shape[0], fb.shape[0]) * per_item))
        for start in range(0, fa.shape[1], step):
            a = self._centred(fa[:, start : start + step], "a", work)
            b = self._centred(fb[:, start : start + step], "b", work)
            self.sum_a += a.sum(1)
            self.sum_b += b.sum(1)
            self.sq_a += torch.linalg.vector_norm(a, dim=1).square()
            self.sq_b += torch.linalg.vector_norm(b, dim=1).square()
            self.cross.addmm_(b, a.T)
            self.n += a.shape[1]

    def _centred(self, f: torch.Tensor, side: str, work: _Workspace) -> torch.Tensor:
        """``f`` (units, ...) as float64 (units, samples) minus the side's shift (set from the first
        block seen: its mean, so sums of squares and products do not cancel)."""
        out = work.get(side, tuple(f.shape), f, torch.float64)
        out.copy_(f)
        out = out.view(f.shape[0], -1)
        if (self.shift_a if side == "a" else self.shift_b) is None:
            shift = out.mean(1)
            zeros = torch.zeros_like(shift)
            if side == "a":
                self.shift_a, self.sum_a, self.sq_a = shift, zeros, zeros.clone()
            else:
                self.shift_b, self.sum_b, self.sq_b = shift, zeros, zeros.clone()
                self.cross = out.new_zeros(out.shape[0], len(self.shift_a))
        return out.sub_((self.shift_a if side == "a" else self.shift_b)[:, None])

    def correlation(self) -> torch.Tensor:
        """Rows: B's units, columns: A's units. Units that never vary correlate 0 with all."""
        if self.n == 0:
            raise ValueError("activation matching saw no samples")
        mean_a, mean_b = self.sum_a / self.n, self.sum_b / self.n  # of the shifted features
        cov = self.cross / self.n - mean_b[:, None] * mean_a[None, :]
        std_a = (self.sq_a / self.n - mean_a * mean_a).clamp_min(0).sqrt()
        std_b = (self.sq_b / self.n - mean_b * mean_b).clamp_min(0).sqrt()
        denom = std_b[:, None] * std_a[None, :]
        corr = torch.where(denom > 0, cov / torch.where(denom > 0, denom, 1.0), 0.0)
        return corr.clamp_(-1.0, 1.0)


def _units_first(f: torch.Tensor) -> torch.Tensor:
    """(N, C, ...) -> a (C, N, ...) view."""
    if f.dim() < 2:
        raise ValueError(f"activation matching: a point shows a tensor of shape {tuple(f.shape)}, expected (N, C, ...)")
    return f.detach().transpose(0, 1)


def _first_tensor(x) -> torch.Tensor:
    """A batch may be an input tensor or an (input, target, ...) tuple."""
    return x[0] if isinstance(x, (tuple, list)) else x


@torch.no_grad()
def activation_correlations(
    spec: PermutationSpec,
    model_a: nn.Module,
    model_b: nn.Module,
    batches: Iterable[torch.Tensor],
    *,
    max_batches: int | None = None,
) -> dict[str, torch.Tensor]:
    """Per group, the float64 correlation matrix (B units x A units) summed over its points.

    ``batches`` yields inputs (or tuples whose first item is the input); at most ``max_batches``
    are used when given. Inputs are moved to model A's device.
    """
    missing = [p for p in spec.group_sizes if not spec.activation_points.get(p)]
    if missing:
        raise ValueError(f"activation matching: groups {missing} have no activation point in the spec")
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"activation matching: max_batches must be >= 1, got {max_batches}")
    points = sorted({m for ms in spec.activation_points.values() for m in ms})
    moments = {name: _Moments() for name in points}
    stored: dict[str, torch.Tensor] = {}  # A's features of the current batch, by point
    keep, work = _Workspace(), _Workspace()  # A's copies (one buffer per point); float64 blocks
    calls: dict[tuple[str, str], int] = {}

    def count(tag: str, name: str) -> None:
        calls[(tag, name)] = calls.get((tag, name), 0) + 1
        if calls[(tag, name)] > 1:
            raise ValueError(
                f"activation matching: point {name!r} of model {tag.upper()} runs more than once per forward "
                "pass, so its output does not show one location; give each location its own module"
            )

    def hook_a(name: str):
        def hook(_module, _inputs, out):
            count("a", name)
            f = _units_first(out)  # copied now: later in-place operations cannot reach the copy
            copy = keep.get(f"a:{name}", tuple(f.shape), f, f.dtype)
            stored[name] = copy.copy_(f)

        return hook

    def hook_b(name: str):
        def hook(_module, _inputs, out):
            count("b", name)
            if name not in stored:
                raise ValueError(f"activation matching: point {name!r} ran in model B but not in model A")
            moments[name].add(stored.pop(name), _units_first(out), work)

        return hook

    handles = []
    modes = {m: m.training for model in (model_a, model_b) for m in model.modules()}
    try:
        for tag, model, make in (("a", model_a, hook_a), ("b", model_b, hook_b)):
            modules = dict(model.named_modules())
            for name in points:
                if name not in modules:
                    raise ValueError(f"activation point {name!r} is not a module of model {tag.upper()}")
                handles.append(modules[name].register_forward_hook(make(name)))
        model_a.eval()
        model_b.eval()
        device = next(itertools.chain(model_a.parameters(), model_a.buffers()), torch.empty(0)).device
        for x in itertools.islice(batches, max_batches):
            x = _first_tensor(x).to(device)
            calls.clear()
            model_a(x)
            model_b(x)
            not_seen = [name for name in points if calls.get(("a", name)) != 1 or calls.get(("b", name)) != 1]
            if not_seen:
                raise ValueError(f"activation matching: points {not_seen} did not run once in each model")
    finally:
        stored.clear()
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    if any(m.n == 0 for m in moments.values()):
        raise ValueError("activation matching saw no data: the batch iterator was empty")
    corr = {name: m.correlation() for name, m in moments.items()}
    out = {}
    for p in spec.group_sizes:
        total = None
        for name in spec.activation_points[p]:
            c = corr[name]
            if c.shape != (spec.group_sizes[p], spec.group_sizes[p]):
                raise ValueError(
                    f"activation matching: point {name!r} shows {tuple(c.shape)} units, group {p!r} has "
                    f"{spec.group_sizes[p]}"
                )
            total = c.clone() if total is None else total.add_(c)
        out[p] = total
    return out


def activation_matching(
    spec: PermutationSpec,
    model_a: nn.Module,
    model_b: nn.Module,
    batches: Iterable[torch.Tensor],
    *,
    max_batches: int | None = None,
) -> tuple[Permutation, dict[str, float]]:
    """Find ``perm`` with ``apply_permutation(spec, perm, A) ≈ B``; also the mean matched correlation
    per group (divided by the number of points), a diagnostic of how alike the two models are."""
    perm, quality = {}, {}
    for p, corr in activation_correlations(spec, model_a, model_b, batches, max_batches=max_batches).items():
        rows, cols = linear_sum_assignment(corr.cpu().numpy(), maximize=True)
        perm[p] = torch.from_numpy(cols).long()
        quality[p] = float(corr[rows, cols].mean()) / len(spec.activation_points[p])
    return perm, quality
