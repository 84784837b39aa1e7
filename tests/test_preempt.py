"""A signal mid-epoch (a scheduler's time limit or preemption): checkpoint at once, exit for a retry,
and the retry ends bit-for-bit where an uninterrupted run ends."""

import gc
import os
import signal

import pytest
import torch

from ticketalign import preempt
from ticketalign.masks import dense_masks
from ticketalign.models import build_model
from ticketalign.train import Runtime, TrainConfig, train


class SignalAt:
    """The dataset, except that drawing batch ``batch`` of epoch ``epoch`` sends ``signum`` to this process."""

    def __init__(self, data, epoch, batch, signum):
        self.data, self.at, self.signum = data, (epoch, batch), signum

    def __getattr__(self, name):
        return getattr(self.data, name)

    def train_batches(self, batch_size, seed, epoch, **kw):
        for i, b in enumerate(self.data.train_batches(batch_size, seed=seed, epoch=epoch, **kw)):
            if (epoch, i) == self.at:
                os.kill(os.getpid(), self.signum)
            yield b


def _mlp(digits):
    return build_model("mlp", digits.input_shape, digits.num_classes, seed=3, hidden=32)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_checkpoints_mid_epoch_and_retry_equals_uninterrupted(digits, tmp_path, signum):
    cfg = TrainConfig(epochs=3, lr=0.1, batch_size=64)
    masks = {n: torch.rand(m.shape, generator=torch.Generator().manual_seed(2)) > 0.3
             for n, m in dense_masks(_mlp(digits)).items()}
    full = _mlp(digits)
    ref = train(full, digits, cfg, seed=7, masks=masks, log=None)

    ckpt = tmp_path / "run.ckpt"
    rt = Runtime(checkpoint_every=100)  # no periodic checkpoint before the end: only the signal's
    lines = []
    with pytest.raises(preempt.Preempted) as exc:
        train(_mlp(digits), SignalAt(digits, 1, 5, signum), cfg, seed=7, masks=masks,
              runtime=rt, checkpoint=ckpt, log=lines.append)
    assert exc.value.code == preempt.EXIT_CODE
    # the signal arrives while batch 5 is drawn: it is not trained, the checkpoint holds batches 0-4
    assert any(signal.Signals(signum).name in line and "epoch 2/3 after 5 batches" in line for line in lines)
    assert ckpt.exists()

    lines.clear()
    resumed_model = _mlp(digits)
    resumed = train(resumed_model, digits, cfg, seed=7, masks=masks, runtime=rt, checkpoint=ckpt,
                    log=lines.append)
    assert any("resumed" in line and "epoch 1, batch 5" in line for line in lines)
    for name, t in full.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], t), name
    for got, want in zip(resumed.history, ref.history, strict=True):
        assert {k: v for k, v in got.items() if k != "samples_per_s"} == \
               {k: v for k, v in want.items() if k != "samples_per_s"}


def test_signal_outside_training_keeps_its_usual_effect(digits):
    """After train() returns nobody listens: the handler hands the signal to the one it replaced."""
    train(_mlp(digits), digits, TrainConfig(epochs=1, lr=0.1), seed=0, checkpoint=None, log=None)
    seen = []
    previous = signal.signal(signal.SIGUSR1, lambda s, f: seen.append(s))
    try:
        listener = preempt.listen()  # installs ours over the lambda
        del listener  # the training run ended
        gc.collect()  # and so did those of the tests before (pytest's tracebacks hold their frames)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert seen == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)
