"""The one training loop: dense training, IMP fine-tuning and sparse training all use it.

SGD with momentum and weight decay, a per-step learning-rate schedule (optional linear warmup,
then cosine to 0), and an optional mask that is kept applied: pruned weights start at zero,
their gradients are zeroed before every step and the mask is re-applied after it, so neither
weight decay nor momentum can revive them. Snapshots are taken at requested epochs, where
epoch 0 is the initialization and epoch ``k`` the state after exactly ``k`` full epochs.

With a ``checkpoint`` path the loop saves everything it needs to continue (model, optimizer,
step, epoch, history, RNG states) every ``checkpoint_every`` epochs and resumes from it when
rerun; because data order depends only on ``(seed, epoch)``, a resumed run ends exactly where
an uninterrupted one does. On SIGTERM or SIGUSR1 (a scheduler's time limit or preemption) it also
saves one mid-epoch, before the next batch, and exits for a retry (``ticketalign.preempt``).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ticketalign import preempt
from ticketalign.artifacts import ArtifactError, load_artifact, save_artifact
from ticketalign.config import Runtime, TrainConfig
from ticketalign.data import Dataset
from ticketalign.distributed import Replicas
from ticketalign.guards import DivergenceGuard
from ticketalign.masks import Masks, apply_masks


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warmup to 1, then cosine decay to exactly 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup_steps, span) / span))


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, batch_size: int = 1024, amp: bool = False) -> dict[str, float]:
    """Test accuracy (%) and mean cross-entropy over the whole test split."""
    was_training = model.training
    model.eval()
    correct, loss, n = 0, 0.0, 0
    device = next(model.parameters()).device
    for x, y in data.test_batches(batch_size):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        loss += F.cross_entropy(out.float(), y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
        n += len(y)
    model.train(was_training)
    return {"test_acc": 100.0 * correct / n, "test_loss": loss / n}


class SGD:
    """SGD with momentum, weight decay and optional Nesterov, exactly torch.optim.SGD's update.

    Written out (with foreach kernels) because constructing any ``torch.optim`` optimizer
    imports ``torch._dynamo``, which costs ~1.8 s in every job of the pipeline.
    Update: ``d = g + wd * p``; ``buf = momentum * buf + d`` (``buf = d`` on the first step);
    ``p -= lr * (d + momentum * buf if nesterov else buf)``.
    """

    def __init__(self, params: list[nn.Parameter], cfg: TrainConfig):
        self.params = params
        self.momentum, self.weight_decay, self.nesterov = cfg.momentum, cfg.weight_decay, cfg.nesterov
        self.buffers: list[torch.Tensor] | None = None

    @torch.no_grad()
    def step(self, lr: float) -> None:
        params = self.params
        if any(p.grad is None for p in params):
            raise RuntimeError("every trainable parameter must receive a gradient")
        grads = [p.grad for p in params]
        if self.weight_decay:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        if self.momentum:
            if self.buffers is None:
                self.buffers = [g.detach().clone() for g in grads]
            else:
                torch._foreach_mul_(self.buffers, self.momentum)
                torch._foreach_add_(self.buffers, grads)
            grads = torch._foreach_add(grads, self.buffers, alpha=self.momentum) if self.nesterov else self.buffers
        torch._foreach_add_(params, grads, alpha=-lr)

    def state_dict(self) -> dict[str, Any]:
        return {"buffers": self.buffers}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        bufs = state["buffers"]
        self.buffers = None if bufs is None else [b.to(p.device) for b, p in zip(bufs, self.params)]


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def train(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    *,
    seed: int,
    runtime: Runtime = Runtime(),
    masks: Masks | None = None,
    snapshot_epochs: tuple[int, ...] = (),
    on_snapshot: Callable[[int, nn.Module], None] | None = None,
    checkpoint: str | Path | None = None,
    log: Callable[[str], None] | None = print,
    guard: DivergenceGuard | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data``; see the module docstring for the semantics.

    ``guard`` (default: one naming no run) stops a diverging run (:mod:`ticketalign.guards`)."""
    device = next(model.parameters()).device
    bad = [k for k in snapshot_epochs if not 0 <= k <= cfg.epochs]
    if bad:
        raise ValueError(f"snapshot epochs {bad} lie outside [0, {cfg.epochs}]")
    masks = {k: v.to(device=device, dtype=torch.bool) for k, v in (masks or {}).items()}
    params = dict(model.named_parameters())
    missing = set(masks) - set(params)
    if missing:
        raise ValueError(f"mask names {sorted(missing)} are not parameters of the model")
    use_amp = runtime.amp  # bf16 autocast, channels_last and compile on any device: CPU tests run them
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    replicas = Replicas.current()  # one process, or this one's place in a multi-GPU job

    optimizer = SGD(list(model.parameters()), cfg)
    steps_per_epoch = math.ceil(data.num_train / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    result = TrainResult()
    start_epoch, step, partial = 0, 0, None
    # a checkpoint resumes only the run that made it: same recipe, seed, starting weights and mask
    ckpt_meta = {"config": asdict(cfg), "seed": seed, "start": state_fingerprint(model.state_dict(), masks)}

    resumed = _resume(checkpoint, ckpt_meta, model, optimizer, device, log)
    if resumed is not None:
        start_epoch, step, result.history, partial = resumed
    else:
        apply_masks(model, masks)
        if 0 in snapshot_epochs and on_snapshot:
            on_snapshot(0, model)

    guard = guard or DivergenceGuard()
    step_model = replicas.wrap(model)
    step_model = torch.compile(step_model) if runtime.compile else step_model
    stop = preempt.listen() if checkpoint is not None else None

    def save_checkpoint(epochs_done: int, partial: dict[str, Any] | None = None) -> None:
        save_artifact(
            checkpoint,
            "train_checkpoint",
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epochs_done,
                "step": step,
                "history": result.history,
                "partial": partial,  # mid-epoch (at a signal): batches done and the epoch's sums so far
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            },
            **ckpt_meta,
        )

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen, skip = 0, 0
        if partial is not None:  # resuming mid-epoch: the batches done are drawn again and skipped
            skip, seen = partial["batch"], partial["seen"]
            loss_sum.copy_(partial["loss_sum"])
            correct.copy_(partial["correct"])
            partial = None
        for batch, ((x, y), weight) in enumerate(replicas.train_batches(data, cfg.batch_size, seed=seed,
                                                                          epoch=epoch)):
            if batch < skip:
                continue
            if stop is not None and stop.requested:
                save_checkpoint(epoch, {"batch": batch, "seen": seen, "loss_sum": loss_sum, "correct": correct})
                stop.exit(f"{checkpoint}, epoch {epoch + 1}/{cfg.epochs} after {batch} batches", log)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if runtime.channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            lr = cfg.lr * lr_factor(step, total_steps, warmup_steps)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = step_model(x)
                loss = F.cross_entropy(out.float(), y)
            model.zero_grad(set_to_none=True)
            (loss * weight if weight != 1.0 else loss).backward()
            if masks:
                for name, m in masks.items():
                    g = params[name].grad
                    if g is not None:
                        g.mul_(m)
            optimizer.step(lr)
            apply_masks(model, masks)
            loss_sum += loss.detach() * len(y)
            correct += (out.detach().argmax(1) == y).sum()
            seen += len(y)
            step += 1
            guard.after_step(loss, epoch=epoch, epochs=cfg.epochs, step=step, lr=lr)
        loss_sum, correct, seen = replicas.sum(loss_sum, correct, torch.tensor(seen, device=device))
        seen = int(seen)
        elapsed = time.perf_counter() - t0
        guard.end_of_epoch(model, epoch=epoch, epochs=cfg.epochs, step=step, lr=lr)  # before any state is saved
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum.item() / max(seen, 1),
            "train_acc": 100.0 * correct.item() / max(seen, 1),
            "lr": lr,
            "samples_per_s": seen / max(elapsed, 1e-9),
        }
        last = epoch + 1 == cfg.epochs
        if last or (runtime.eval_every > 0 and (epoch + 1) % runtime.eval_every == 0):
            row.update(evaluate(model, data, amp=use_amp))
        result.history.append(row)
        if log:
            log(_format_row(row, cfg.epochs))
        if epoch + 1 in snapshot_epochs and on_snapshot:
            on_snapshot(epoch + 1, model)
        if checkpoint is not None and (last or (epoch + 1) % max(runtime.checkpoint_every, 1) == 0):
            save_checkpoint(epoch + 1)
    if cfg.epochs == 0 or not result.history:
        result.history.append({"epoch": cfg.epochs, **evaluate(model, data, amp=use_amp)})
    return result


def state_fingerprint(state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor] | None = None) -> str:
    """A short hash of tensors' names, shapes and exact values (e.g. a run's starting point)."""
    h = hashlib.sha256()
    for group in (state, masks or {}):
        for name in sorted(group):
            t = group[name].detach().cpu().contiguous().reshape(-1)
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _resume(
    path: str | Path | None,
    meta: dict[str, Any],
    model: nn.Module,
    optimizer: SGD,
    device: torch.device,
    log: Callable[[str], None] | None,
) -> tuple[int, int, list[dict[str, float]], dict[str, Any] | None] | None:
    """Load the checkpoint into model and optimizer; None (start afresh) if absent or not this run's."""
    if path is None or not Path(path).exists():
        return None
    try:
        state, _ = load_artifact(path, "train_checkpoint", expect=meta, map_location=str(device))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (ArtifactError, RuntimeError, KeyError) as err:
        if log:
            log(f"not resuming from {path}: {getattr(err, 'problem', err)}")
        return None
    # the checkpoint was loaded onto the training device; RNG states must be CPU byte tensors
    torch.set_rng_state(state["rng_cpu"].cpu())
    if device.type == "cuda" and state.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(state["rng_cuda"].cpu(), device)
    if log:
        where = f", batch {state['partial']['batch']}" if state.get("partial") else ""
        log(f"resumed from {path} at epoch {state['epoch']}{where}")
    return state["epoch"], state["step"], state["history"], state.get("partial")


def _format_row(row: dict[str, float], epochs: int) -> str:
    parts = [f"epoch {row['epoch']:>3}/{epochs}", f"loss {row['train_loss']:.4f}", f"train {row['train_acc']:.2f}%"]
    if "test_acc" in row:
        parts.append(f"test {row['test_acc']:.2f}%")
    parts += [f"lr {row['lr']:.4g}", f"{row['samples_per_s']:.0f} samples/s"]
    return "  ".join(parts)
