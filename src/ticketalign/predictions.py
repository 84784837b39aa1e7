"""What a finished run keeps for diagnostics computed later: its outputs on the test split.

Kept apart from :mod:`ticketalign.analysis` on purpose: the sparse-training rule depends on this
file, so editing the diagnostics never retrains a model.
"""

from __future__ import annotations

import torch
from torch import nn

from ticketalign.data import Dataset


@torch.no_grad()
def test_logits(
    model: nn.Module, data: Dataset, batch_size: int = 1024, amp: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, labels)`` of the whole test split in eval mode, on the CPU; ``amp`` as the run's
    own evaluation (bf16 autocast), so the diagnostics see the outputs its test accuracy counts."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outs, ys = [], []
    for x, y in data.test_batches(batch_size):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            outs.append(model(x.to(device)).float().cpu())
        ys.append(y.cpu())
    model.train(was_training)
    return torch.cat(outs), torch.cat(ys)
