"""Divergence guard: a training run whose loss or weights stop being finite fails at once.

The error names the run (the scripts describe it: rule, width, seed(s), sparsity, k, variant),
the epoch, the step and the learning rate, so the job fails and writes no metrics.json: a
diverged run can never reach a table. The check is cheap: the loss of every step is kept as
the 0-d tensor the step computes anyway and they are checked together every ``check_every``
steps and at the end of every epoch (one device sync each); the weights and buffers are checked
once per epoch, before any snapshot or checkpoint is saved, so no saved state is ever non-finite.

:func:`nonfinite_tensors` is the same check for a loaded state (``ticketalign.cli`` refuses a
model file holding a NaN, naming the file).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn


class DivergenceError(RuntimeError):
    """A training run's loss or weights became NaN or infinite."""


def nonfinite_tensors(state: Mapping[str, torch.Tensor]) -> list[str]:
    """``name (n NaN, m inf)`` for every floating tensor of ``state`` that is not all finite."""
    names = [k for k, t in state.items() if torch.is_tensor(t) and t.is_floating_point()]
    if not names:
        return []
    finite = torch.stack([torch.isfinite(state[k]).all() for k in names]).cpu()
    if bool(finite.all()):
        return []
    out = []
    for name, ok in zip(names, finite.tolist()):
        if not ok:
            t = state[name]
            out.append(f"{name} ({int(torch.isnan(t).sum())} NaN, {int(torch.isinf(t).sum())} inf)")
    return out


@dataclass
class DivergenceGuard:
    """Checks one run; ``run`` names it in the error, ``config_key`` is the config section of its
    recipe (``dense``, ``imp.train``, ``sparse.train``) so the error says which learning rate to lower."""

    run: str = "training run"
    config_key: str = ""
    check_every: int = 50
    _pending: list = field(default_factory=list, init=False, repr=False)

    def after_step(self, loss: torch.Tensor, *, epoch: int, epochs: int, step: int, lr: float) -> None:
        """Record the loss of step ``step`` (1-based, over the run) in epoch ``epoch`` (0-based) of ``epochs``."""
        self._pending.append((epoch, epochs, step, lr, loss.detach()))
        if len(self._pending) >= self.check_every:
            self._check_losses()

    def end_of_epoch(self, model: nn.Module, *, epoch: int, epochs: int, step: int, lr: float) -> None:
        """Check the epoch's remaining losses, then every weight and buffer of ``model``."""
        self._check_losses()
        bad = nonfinite_tensors(model.state_dict())
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            self._fail(f"weights are not finite after epoch {epoch + 1}/{epochs} (step {step}, lr {lr:.4g}): {shown}")

    def _check_losses(self) -> None:
        if not self._pending:
            return
        losses = torch.stack([p[-1] for p in self._pending])
        finite = torch.isfinite(losses)
        if bool(finite.all()):
            self._pending.clear()
            return
        i = int((~finite).nonzero()[0])
        epoch, epochs, step, lr, loss = self._pending[i]
        self._fail(f"training loss is {float(loss)} at epoch {epoch + 1}/{epochs}, step {step} (lr {lr:.4g})")

    def _fail(self, what: str) -> None:
        self._pending.clear()
        fix = f"lower {self.config_key}.lr (or add {self.config_key}.warmup_epochs)" if self.config_key else \
            "lower the learning rate"
        raise DivergenceError(f"{self.run} diverged: {what}; nothing was saved from it. To fix: {fix} and rerun")
