"""Masks: which weights are prunable, and the name -> bool tensor dicts that prune them.

A mask dict maps a parameter name to a bool tensor of that parameter's shape (``True`` = kept).
Which parameters are prunable is something a model declares, as it declares its symmetry: a model
with a ``prunable_names()`` method lists them itself (every model in ``ticketalign.models`` does).
Any other model gets the paper's convention (:func:`default_prunable_names`): the weight of every
Conv2d and Linear, first conv and classifier included, except shortcut/downsample convs. Biases
and norm parameters are never pruned, and density/sparsity are counted over the masked weights
only.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

Masks = dict[str, torch.Tensor]

#: module names whose Conv2d/Linear weights the default convention never prunes
EXCLUDED_PARTS = ("shortcut", "downsample")


def default_prunable_names(model: nn.Module) -> list[str]:
    """The convention: weights of every Conv2d/Linear not inside a shortcut/downsample, in model order."""
    names = []
    for mod_name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and not any(p in mod_name.split(".") for p in EXCLUDED_PARTS):
            names.append(f"{mod_name}.weight" if mod_name else "weight")
    return names


def prunable_names(model: nn.Module) -> list[str]:
    """Parameter names of the prunable weights: the model's ``prunable_names()`` or the convention."""
    declared = getattr(model, "prunable_names", None)
    names = list(declared()) if callable(declared) else default_prunable_names(model)
    params = dict(model.named_parameters())
    unknown = [n for n in names if n not in params]
    if unknown:
        raise ValueError(f"{type(model).__name__}.prunable_names() lists {unknown}, not parameters of the model")
    return names


def dense_masks(model: nn.Module) -> Masks:
    """An all-kept mask for every prunable weight of ``model``."""
    params = dict(model.named_parameters())
    return {n: torch.ones_like(params[n], dtype=torch.bool) for n in prunable_names(model)}


def apply_masks(model: nn.Module, masks: Masks | None) -> None:
    """Zero every pruned weight in place."""
    if not masks:
        return
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, m in masks.items():
            params[name].mul_(m.to(params[name].dtype))


def kept_count(masks: Mapping[str, torch.Tensor]) -> int:
    return int(sum(int(m.sum()) for m in masks.values()))


def total_count(masks: Mapping[str, torch.Tensor]) -> int:
    return int(sum(m.numel() for m in masks.values()))


def keep_for_sparsity(total: int, target: float) -> int:
    """How many weights survive at sparsity ``target``: exactly ``total - round(target * total)``."""
    return total - round(target * total)


def density(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of masked weights that are kept."""
    return kept_count(masks) / total_count(masks)


def sparsity(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of masked weights that are pruned."""
    return 1.0 - density(masks)


def random_masks_like(masks: Masks, generator: torch.Generator) -> Masks:
    """Masks with each layer's density kept and positions drawn uniformly at random."""
    out = {}
    for name, m in masks.items():
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[torch.randperm(m.numel(), generator=generator)[: int(m.sum())]] = True
        out[name] = flat.view_as(m).to(m.device)
    return out
