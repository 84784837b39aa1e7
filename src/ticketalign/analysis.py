"""Diagnostics that explain the paper's result: basins, mask overlap and ensemble diversity.

The paper argues that A and B sit in basins one permutation apart. Three measurements test the
argument on real runs, with no retraining:

* **linear mode connectivity** (:func:`linear_path`, :func:`barrier`): test loss and error along
  the straight line between two trained models. A high barrier between A and B that (nearly)
  vanishes between pi(A) and B says that pi really maps A into B's basin. For models with
  BatchNorm the running statistics of every interpolated model are recomputed on training data
  (:func:`reset_bn_stats`): averaged weights with averaged statistics describe no network, so
  without this the barrier would measure stale statistics, not the loss landscape.
* **mask overlap** (:func:`mask_jaccard`): how much of A's mask survives as it is on B's units
  once permuted; a random permutation of the same mask gives the chance level, which for a
  layer of density d is about d / (2 - d) (:func:`chance_jaccard`).
* **ensemble diversity** (:func:`diversity`): whether the sparse solutions reached from pi(m_A)
  are as different from each other as independent runs (the paper's diversity table):
  ensemble accuracy, pairwise disagreement, KL and JS divergence of the softmax outputs.

Everything here is a pure function of tensors and models; the workflow's scripts load the
artifacts and save the results.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ticketalign.data import Dataset
from ticketalign.train import evaluate

State = Mapping[str, torch.Tensor]

# ---------------------------------------------------------------------------------------------
# Linear mode connectivity
# ---------------------------------------------------------------------------------------------


def interpolate(a: State, b: State, alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * a + alpha * b`` for floating tensors; integer buffers (BatchNorm's
    ``num_batches_tracked``) are taken from ``a`` (they are reset with the statistics anyway)."""
    if a.keys() != b.keys():
        raise ValueError(f"states differ in their tensors: {sorted(set(a) ^ set(b))}")
    out = {}
    for name, ta in a.items():
        tb = b[name]
        if ta.shape != tb.shape:
            raise ValueError(f"{name}: shapes {tuple(ta.shape)} and {tuple(tb.shape)} differ")
        out[name] = torch.lerp(ta, tb.to(ta.dtype), alpha) if ta.is_floating_point() else ta.clone()
    return out


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def reset_bn_stats(model: nn.Module, data: Dataset, batches: int, batch_size: int, seed: int = 0) -> None:
    """Recompute every BatchNorm layer's running statistics as exact averages over ``batches``
    training batches (train mode, no gradient, no weight change), as Git Re-Basin does."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch counts the same
    was_training = model.training
    model.train()
    device = next(model.parameters()).device
    for i, (x, _) in enumerate(data.train_batches(batch_size, seed=seed, epoch=0)):
        if i >= batches:
            break
        model(x.to(device))
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
    model.train(was_training)


def linear_path(
    model: nn.Module,
    state_a: State,
    state_b: State,
    data: Dataset,
    *,
    points: int = 11,
    bn_batches: int = 10,
    bn_batch_size: int = 256,
) -> list[dict[str, float]]:
    """Test loss and error (%) at ``points`` evenly spaced alphas from ``state_a`` (alpha 0) to
    ``state_b`` (alpha 1), loaded into ``model`` in turn; BatchNorm statistics recomputed at
    every point (the end points included, so every point is measured the same way)."""
    if points < 2:
        raise ValueError(f"a linear path needs at least 2 points, got {points}")
    bn = has_batchnorm(model)
    rows = []
    for i in range(points):
        alpha = i / (points - 1)
        model.load_state_dict(interpolate(state_a, state_b, alpha))
        if bn:
            reset_bn_stats(model, data, bn_batches, bn_batch_size)
        scores = evaluate(model, data)  # eval mode, the whole test split
        loss, err = scores["test_loss"], 100.0 - scores["test_acc"]
        rows.append({"alpha": alpha, "test_loss": loss, "test_error": err})
    return rows


def barrier(values: Sequence[float]) -> float:
    """The barrier height of a curve sampled at evenly spaced alphas: the largest rise above
    the straight line between its end points (0 when the path is at or below that line)."""
    n = len(values)
    if n < 2:
        raise ValueError("a barrier needs a curve of at least 2 points")
    first, last = values[0], values[-1]
    return max(0.0, max(v - ((1 - i / (n - 1)) * first + i / (n - 1) * last) for i, v in enumerate(values)))


# ---------------------------------------------------------------------------------------------
# Mask overlap
# ---------------------------------------------------------------------------------------------


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a ∩ b| / |a ∪ b| of two boolean masks of one shape (1 for two empty masks)."""
    if a.shape != b.shape:
        raise ValueError(f"masks of shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be compared")
    a, b = a.bool(), b.bool()
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def mask_jaccard(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Jaccard similarity per tensor, and ``overall`` over all kept weights together."""
    if a.keys() != b.keys():
        raise ValueError(f"masks differ in their tensors: {sorted(set(a) ^ set(b))}")
    out = {name: jaccard(a[name], b[name]) for name in a}
    inter = sum((a[n].bool() & b[n].bool()).sum().item() for n in a)
    union = sum((a[n].bool() | b[n].bool()).sum().item() for n in a)
    out["overall"] = 1.0 if union == 0 else inter / union
    return out


def chance_jaccard(density: float) -> float:
    """Expected Jaccard of two independent random masks of density ``d``: d² / (2d - d²) = d / (2 - d)."""
    return density / (2 - density) if density > 0 else 1.0


def chance_jaccard_masks(mask: Mapping[str, torch.Tensor]) -> float:
    """Expected overall Jaccard of ``mask`` with an independent random mask of the same per-layer
    densities: expected shared kept weights over expected kept-in-either, summed over layers
    (layers of different density make this differ from :func:`chance_jaccard` of the overall density)."""
    inter = union = 0.0
    for t in mask.values():
        n, d = t.numel(), t.float().mean().item()
        inter += n * d * d
        union += n * (2 * d - d * d)
    return inter / union if union else 1.0


# ---------------------------------------------------------------------------------------------
# Ensemble diversity
# ---------------------------------------------------------------------------------------------


def _kl(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per sample from log-probabilities (float64)."""
    return (p_log.exp() * (p_log - q_log)).sum(1)


def _js(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence per sample (natural log, at most ln 2)."""
    m_log = torch.logsumexp(torch.stack([p_log, q_log]), 0) - math.log(2)
    return 0.5 * _kl(p_log, m_log) + 0.5 * _kl(q_log, m_log)


def diversity(logits: Sequence[torch.Tensor], labels: torch.Tensor) -> dict[str, float]:
    """How different the members of an ensemble are, and what averaging them gives.

    ``logits``: one (samples, classes) tensor per member, the same test samples in the same
    order; ``labels``: the true classes. Returns the members' mean accuracy, the accuracy of the
    ensemble (argmax of the mean softmax), and over all unordered pairs of members the mean
    disagreement (% of samples whose predicted classes differ), the mean KL divergence
    (symmetrized: the average of KL(p||q) and KL(q||p), so the order of a pair does not matter)
    and the mean JS divergence of the softmax outputs, averaged over samples. Needs >= 2 members.
    """
    if len(logits) < 2:
        raise ValueError(f"ensemble diversity needs at least 2 members, got {len(logits)}")
    shapes = {tuple(t.shape) for t in logits}
    if len(shapes) != 1 or labels.shape != (next(iter(shapes))[0],):
        raise ValueError(f"logits of shapes {sorted(shapes)} and labels of shape {tuple(labels.shape)} do not match")
    logp = [F.log_softmax(t.double(), 1) for t in logits]
    preds = [t.argmax(1) for t in logp]
    ensemble = torch.stack([t.exp() for t in logp]).mean(0).argmax(1)
    pairs = list(itertools.combinations(range(len(logp)), 2))
    return {
        "members": len(logp),
        "member_acc": 100.0 * sum((p == labels).double().mean().item() for p in preds) / len(preds),
        "ensemble_acc": 100.0 * (ensemble == labels).double().mean().item(),
        "disagreement": 100.0 * _mean(lambda i, j: (preds[i] != preds[j]).double().mean().item(), pairs),
        "kl": _mean(lambda i, j: 0.5 * (_kl(logp[i], logp[j]) + _kl(logp[j], logp[i])).mean().item(), pairs),
        "js": _mean(lambda i, j: _js(logp[i], logp[j]).mean().item(), pairs),
    }


def _mean(f: Callable[[int, int], float], pairs: Sequence[tuple[int, int]]) -> float:
    return sum(f(i, j) for i, j in pairs) / len(pairs)


#: the columns of :func:`diversity_rows`, in order
DIVERSITY_COLUMNS = ("scope", "width", "sparsity", "rewind_epoch", "runs", "pairs", "members", "member_acc",
                     "ensemble_acc", "disagreement", "kl", "js")


def diversity_rows(runs: Sequence[tuple[Mapping[str, object], torch.Tensor]], labels: torch.Tensor) -> list[dict]:
    """Ensemble diversity of the sparse runs, two ways (``runs``: (metadata, test logits) each,
    metadata with ``width``, ``sparsity``, ``rewind_epoch``, ``run`` and ``seed_a``):

    * ``scope = "seed pairs"``: the runs of one (width, sparsity, k, run) across seed pairs, as
      one ensemble (are permuted solutions as diverse as independent ones?);
    * ``scope = "variants"``: two runs of one seed pair and setting that differ in their run
      (e.g. naive vs permuted_weight), as a two-member ensemble, averaged over seed pairs (does
      training B from pi(m_A) end near the solution A's own ticket finds?).
    """
    groups: dict[tuple, list[tuple[int, torch.Tensor]]] = {}
    for meta, logits in runs:
        key = (float(meta["width"]), float(meta["sparsity"]), int(meta["rewind_epoch"]), str(meta["run"]))
        groups.setdefault(key, []).append((int(meta["seed_a"]), logits))
    rows = []
    for key, members in sorted(groups.items()):
        if len(members) >= 2:
            rows.append({"scope": "seed pairs", "width": key[0], "sparsity": key[1], "rewind_epoch": key[2],
                         "runs": key[3], "pairs": len(members),
                         **diversity([t for _, t in sorted(members, key=lambda m: m[0])], labels)})
    settings = sorted({k[:3] for k in groups})
    for setting in settings:
        names = sorted({k[3] for k in groups if k[:3] == setting})
        for r1, r2 in itertools.combinations(names, 2):
            by_seed = [dict(groups[(*setting, r)]) for r in (r1, r2)]
            seeds = sorted(set(by_seed[0]) & set(by_seed[1]))
            if not seeds:
                continue
            each = [diversity([by_seed[0][s], by_seed[1][s]], labels) for s in seeds]
            rows.append({"scope": "variants", "width": setting[0], "sparsity": setting[1], "rewind_epoch": setting[2],
                         "runs": f"{r1} vs {r2}", "pairs": len(seeds),
                         **{k: sum(d[k] for d in each) / len(each) for k in each[0]}})
    return rows
