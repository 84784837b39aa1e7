"""Global magnitude pruning and the IMP chain (IMP-FT, and IMP that resets the survivors).

Which weights are prunable, and how sparsity is counted, is :mod:`ticketalign.masks`'s business.

IMP prunes ``imp.prune_rate`` (20%) of the remaining prunable weights per level, by global magnitude (one
threshold across all tensors). All target sparsities share ONE chain of levels: the mask for
target ``s`` is one capped prune from the deepest chain level that is still denser than ``s``,
landing exactly on ``round(s * N)`` pruned weights. The weights after that capped prune are
never needed for the mask, so only the chain levels are trained: 15 for the paper's
80/90/95/97% targets, where rerunning IMP per target costs 49.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ticketalign.artifacts import ArtifactError, load_artifact, save_artifact
from ticketalign.config import ImpConfig
from ticketalign.data import Dataset
from ticketalign.guards import DivergenceGuard
from ticketalign.masks import (  # noqa: F401 (keep_for_sparsity: pruning's own API too)
    Masks,
    apply_masks,
    dense_masks,
    keep_for_sparsity,
    kept_count,
    sparsity,
    total_count,
)
from ticketalign.seeding import derive_seed
from ticketalign.train import Runtime, TrainConfig, state_fingerprint, train


def magnitude_prune(weights: Mapping[str, torch.Tensor], masks: Masks, keep: int) -> Masks:
    """Keep exactly the ``keep`` largest-magnitude surviving weights, globally across tensors.

    A weight already pruned is never revived, whatever its current value.
    """
    current = kept_count(masks)
    if not 0 <= keep <= current:
        raise ValueError(f"cannot keep {keep} weights when {current} survive")
    names = list(masks)
    scores = torch.cat(
        [torch.where(masks[n], weights[n].detach().abs().float(), float("-inf")).flatten().cpu() for n in names]
    )
    chosen = torch.zeros_like(scores, dtype=torch.bool)
    chosen[torch.topk(scores, keep, sorted=False).indices] = True
    out, offset = {}, 0
    for n in names:
        size = masks[n].numel()
        out[n] = chosen[offset : offset + size].view_as(masks[n]).to(masks[n].device)
        offset += size
    return out


@dataclass(frozen=True)
class ImpPlan:
    """The shared IMP chain: ``keep[L]`` weights survive at level L (level 0 is dense), each level
    pruning ``rate`` of the weights the one before kept.

    ``targets[s] = (L, k)``: target ``s`` is one capped prune from chain level ``L`` to ``k``.
    """

    total: int
    rate: float
    keep: tuple[int, ...]
    targets: dict[float, tuple[int, int]]

    @property
    def trained_levels(self) -> int:
        """Chain levels that must be trained (levels 1..this)."""
        return max((base for base, _ in self.targets.values()), default=0)


def plan_imp(total: int, targets: list[float], rate: float = ImpConfig.prune_rate) -> ImpPlan:
    """Plan one chain of levels, each pruning ``rate`` of the remaining weights, for all targets."""
    if not 0 < rate < 1:
        raise ValueError(f"IMP prune rate must lie in (0, 1), got {rate}")
    bad = [t for t in targets if not 0 < t < 1]
    if bad:
        raise ValueError(f"target sparsities must lie in (0, 1), got {bad}")
    goal = min(keep_for_sparsity(total, t) for t in targets)
    keep = [total]
    while True:
        nxt = keep[-1] - round(rate * keep[-1])
        if nxt <= goal or nxt == keep[-1]:
            break
        keep.append(nxt)
    plan = {}
    for t in targets:
        k = keep_for_sparsity(total, t)
        base = max(L for L, kl in enumerate(keep) if kl > k)
        plan[t] = (base, k)
    return ImpPlan(total=total, rate=rate, keep=tuple(keep), targets=plan)


def run_imp(
    model: nn.Module,
    data: Dataset,
    *,
    plan: ImpPlan,
    train_cfg: TrainConfig,
    seed: int,
    cache_dir: str | Path,
    reset_state: Mapping[str, torch.Tensor] | None = None,
    runtime: Runtime = Runtime(),
    on_target: Callable[[float, Masks], None],
    log: Callable[[str], None] | None = print,
    guard: DivergenceGuard | None = None,
) -> list[dict[str, Any]]:
    """Run the IMP chain on ``model`` (trained dense A, modified in place); emit each target's mask.

    IMP-FT (``reset_state=None``): each level prunes, then fine-tunes from the pruned weights.
    IMP with resetting (Frankle et al.'s "rewinding"): each level prunes, resets the surviving
    weights to ``reset_state`` (A at ``imp.reset_epoch``) and retrains. Each trained level is
    cached in ``cache_dir`` with the fingerprint of everything that made it
    (:func:`chain_fingerprint`), so a rerun after a crash, or with one more target, trains only
    what is new, and a level of another recipe is never reused: a cached level that cannot be read,
    or was made by another recipe, is discarded with a log line and trained again. ``guard`` (its
    run named per level) stops a diverging level.
    """
    cache_dir = Path(cache_dir)
    masks = dense_masks(model)
    if total_count(masks) != plan.total:
        raise ValueError(f"plan is for {plan.total} prunable weights, model has {total_count(masks)}")
    expect = {"fingerprint": chain_fingerprint(model, data, plan.rate, train_cfg, seed, reset_state, runtime)}
    level, levels = 0, []  # the chain's current level and the metrics of levels 1..level
    for t in sorted(plan.targets, key=lambda t: plan.targets[t][0]):
        base, keep = plan.targets[t]
        # jump to the deepest level on disk up to base: only that one is read, however long the chain
        for cached_level in range(base, level, -1):
            path = cache_dir / f"level{cached_level}.pt"
            if not path.exists():
                continue
            try:
                state, masks_found, levels_found = _read_level(path, model, {**expect, "level": cached_level})
            except ArtifactError as err:
                if log:
                    log(f"discarding {path} (it will be trained again): {err.problem}")
                continue
            model.load_state_dict(state)
            masks, levels, level = masks_found, levels_found, cached_level
            if log:
                log(f"levels 1-{level}: loaded from {path}")
            break
        while level < base:
            level += 1
            masks = magnitude_prune(dict(model.named_parameters()), masks, plan.keep[level])
            if reset_state is not None:
                model.load_state_dict(reset_state)
            apply_masks(model, masks)
            if log:
                log(f"level {level}: sparsity {sparsity(masks):.4f}, training {train_cfg.epochs} epochs")
            ckpt = cache_dir / f"level{level}.ckpt"
            level_guard = None if guard is None else replace(guard, run=f"{guard.run}, IMP level {level}")
            result = train(model, data, train_cfg, seed=derive_seed(seed, level), runtime=runtime, masks=masks,
                           checkpoint=ckpt, log=log, guard=level_guard)
            levels = levels + [{"level": level, "sparsity": sparsity(masks), **result.final}]
            save_artifact(cache_dir / f"level{level}.pt", "imp_level",
                          {"state": model.state_dict(), "masks": masks, "levels": levels}, **expect, level=level)
            ckpt.unlink(missing_ok=True)
        on_target(t, magnitude_prune(dict(model.named_parameters()), masks, keep))
    return levels


def _read_level(path: Path, model: nn.Module, expect: dict[str, Any]) -> tuple[dict, Masks, list]:
    """A cached level's (state, masks, levels), checked to fit ``model`` before anything is loaded into it."""
    cached, _ = load_artifact(path, "imp_level", expect=expect)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        state, masks, levels = cached["state"], cached["masks"], cached["levels"]
        fits = {k: tuple(v.shape) for k, v in state.items()} == shapes and set(masks) == set(dense_masks(model))
    except (KeyError, TypeError, AttributeError):
        fits = False
    if not fits or not isinstance(levels, list):
        raise ArtifactError(path, "not an IMP level of this model")
    return state, masks, levels


def chain_fingerprint(
    model: nn.Module,
    data: Dataset,
    rate: float,
    train_cfg: TrainConfig,
    seed: int,
    reset_state: Mapping[str, torch.Tensor] | None,
    runtime: Runtime,
) -> str:
    """A hash of everything that determines the chain's levels: the dense model it starts from
    (architecture, exact weights), the data, the prune rate, the levels' recipe and seed, the
    reset state and bf16 autocast. Not the targets: a level does not depend on them, so cached
    levels serve every target's job."""
    recipe = {
        "model": type(model).__name__,
        "dense": state_fingerprint(model.state_dict()),
        "data": [data.name, data.num_train, data.num_classes, list(data.input_shape)],
        "prune_rate": rate,
        "train": asdict(train_cfg),
        "seed": seed,
        "reset": state_fingerprint(reset_state) if reset_state is not None else None,
        "amp": runtime.amp,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]

