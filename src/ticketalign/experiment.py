"""The paper's experiment: which starting weights train with which mask.

For one seed pair (A, B), one target sparsity and one rewind epoch k, with A's IMP mask m_A and
pi, the permutation of A's hidden units that aligns A with B (``apply_permutation(spec, pi, A) ≈ B``):

============  =================  =========================================================
run           starts from        mask
============  =================  =========================================================
lth           A@k                m_A (the upper reference: the ticket with its own weights)
naive         B@k                m_A (the ticket moved to a new init as it is)
permuted_<m>  B@k                pi(m_A), pi found by matching method <m>: m_A moved onto B's units
random        B@k                random, each layer as dense as in m_A (the floor)
============  =================  =========================================================

Every run of one (pair, sparsity, k) sees the same data order (seed of B), so the runs differ
only in their weights and mask. A run from k trains ``epochs - k`` epochs
(:meth:`~ticketalign.config.TrainConfig.remaining`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ticketalign.config import VARIANTS, sparse_run_names
from ticketalign.masks import Masks, random_masks_like
from ticketalign.seeding import derive_seed


@dataclass(frozen=True)
class SparseRun:
    """One sparse-training run: its directory name, what it is, and what it starts from."""

    name: str  # lth, naive, permuted_<method>, random
    variant: str
    match_method: str  # the matching method of a permuted run, "" otherwise
    start: Mapping[str, torch.Tensor]  # the dense weights at rewind epoch k
    mask: Masks
    seed: int  # data order


def sparse_runs(
    *,
    a_rewind: Mapping[str, torch.Tensor],
    b_rewind: Mapping[str, torch.Tensor],
    mask: Masks,
    permuted_masks: Mapping[str, Masks],
    variants: Sequence[str],
    seed: int,
    sparsity: float,
) -> dict[str, SparseRun]:
    """The runs of one (seed pair, sparsity, rewind epoch k), by name, in a fixed order.

    ``a_rewind`` / ``b_rewind``: the states of dense A and B at epoch k; ``mask``: A's IMP mask
    for target ``sparsity``; ``permuted_masks``: that mask permuted by each matching method's pi
    (method -> mask); ``seed``: the data order of every run (B's seed), also seeding the random
    mask together with the target sparsity.
    """
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown sparse variants {unknown}; allowed: {', '.join(VARIANTS)}")
    if "permuted" in variants and not permuted_masks:
        raise ValueError("variant 'permuted' needs A's mask permuted by at least one matching method")
    start = {"lth": a_rewind}
    masks = {"lth": mask, "naive": mask}
    if "random" in variants:
        generator = torch.Generator().manual_seed(derive_seed(seed, round(sparsity * 1e6)))
        masks["random"] = random_masks_like(mask, generator)
    runs = {}
    for name, variant, method in sparse_run_names(variants, list(permuted_masks)):
        run_mask = permuted_masks[method] if variant == "permuted" else masks[variant]
        runs[name] = SparseRun(name, variant, method, start.get(variant, b_rewind), run_mask, seed)
    return runs
