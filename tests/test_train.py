"""The training loop: optimizer semantics, masks, snapshots, schedule, resume."""

import copy

import pytest
import torch

from ticketalign.masks import dense_masks
from ticketalign.models import build_model
from ticketalign.train import SGD, Runtime, TrainConfig, lr_factor, train


def _mlp(digits, seed=0):
    return build_model("mlp", digits.input_shape, digits.num_classes, seed=seed, hidden=32)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_torch_optim(nesterov):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    ref = copy.deepcopy(net)
    cfg = TrainConfig(epochs=1, lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=nesterov)
    ours = SGD(list(net.parameters()), cfg)
    theirs = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=nesterov)
    for step in range(5):
        x = torch.randn(8, 5)
        lr = 0.1 * (1 - step / 10)
        for model in (net, ref):
            model.zero_grad()
            model(x).square().mean().backward()
        ours.step(lr)
        theirs.param_groups[0]["lr"] = lr
        theirs.step()
    for a, b in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_lr_schedule_warmup_then_cosine_to_zero():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10) == pytest.approx(0.0)


def test_masked_weights_stay_zero_and_receive_no_update(digits):
    model = _mlp(digits)
    masks = dense_masks(model)
    gen = torch.Generator().manual_seed(1)
    masks = {n: torch.rand(m.shape, generator=gen) > 0.7 for n, m in masks.items()}
    seen = []

    def check(_epoch, m):
        for name, mask in masks.items():
            seen.append(bool((dict(m.named_parameters())[name][~mask] == 0).all()))

    train(model, digits, TrainConfig(epochs=3, lr=0.1, batch_size=64), seed=0, masks=masks,
          snapshot_epochs=(0, 1, 2, 3), on_snapshot=check, log=None)
    assert seen and all(seen)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert (params[name][~mask] == 0).all()
        assert (params[name][mask] != 0).float().mean() > 0.99  # kept weights do train


def test_snapshot_epoch_zero_is_the_initialization_and_last_is_final(digits):
    model = _mlp(digits, seed=3)
    init = copy.deepcopy(model.state_dict())
    snaps = {}
    train(model, digits, TrainConfig(epochs=2, lr=0.1, batch_size=128), seed=0, snapshot_epochs=(0, 2),
          on_snapshot=lambda k, m: snaps.__setitem__(k, copy.deepcopy(m.state_dict())), log=None)
    for name, t in init.items():
        assert torch.equal(snaps[0][name], t)
        assert torch.equal(snaps[2][name], model.state_dict()[name])
        assert not torch.equal(snaps[2][name], t)


def test_snapshot_outside_training_is_rejected(digits):
    with pytest.raises(ValueError, match="snapshot epochs"):
        train(_mlp(digits), digits, TrainConfig(epochs=2, lr=0.1), seed=0, snapshot_epochs=(3,), log=None)


class _Crash(Exception):
    pass


def test_resume_equals_uninterrupted(digits, tmp_path):
    cfg = TrainConfig(epochs=4, lr=0.1, batch_size=64)
    masks = {n: torch.rand(m.shape, generator=torch.Generator().manual_seed(2)) > 0.5
             for n, m in dense_masks(_mlp(digits)).items()}
    full = _mlp(digits)
    ref = train(full, digits, cfg, seed=7, masks=masks, log=None)

    def crash(_k, _m):
        raise _Crash

    ckpt = tmp_path / "run.ckpt"
    rt = Runtime(checkpoint_every=1)
    with pytest.raises(_Crash):
        train(_mlp(digits), digits, cfg, seed=7, masks=masks, runtime=rt, checkpoint=ckpt,
              snapshot_epochs=(3,), on_snapshot=crash, log=None)
    assert ckpt.exists()
    lines = []
    resumed_model = _mlp(digits)
    resumed = train(resumed_model, digits, cfg, seed=7, masks=masks, runtime=rt, checkpoint=ckpt, log=lines.append)
    assert any("resumed" in line and "epoch 2" in line for line in lines)
    for name, t in full.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], t), name
    assert resumed.final["test_acc"] == ref.final["test_acc"]
    assert len(resumed.history) == 4


def test_checkpoint_of_another_recipe_is_not_resumed(digits, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    train(_mlp(digits), digits, TrainConfig(epochs=1, lr=0.1), seed=0, checkpoint=ckpt, log=None)
    lines = []
    train(_mlp(digits), digits, TrainConfig(epochs=1, lr=0.2), seed=0, checkpoint=ckpt, log=lines.append)
    assert any("not resuming" in line for line in lines)


def test_checkpoint_from_another_starting_point_is_not_resumed(digits, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    cfg = TrainConfig(epochs=1, lr=0.1)
    train(_mlp(digits, seed=0), digits, cfg, seed=0, checkpoint=ckpt, log=None)
    lines = []
    train(_mlp(digits, seed=1), digits, cfg, seed=0, checkpoint=ckpt, log=lines.append)  # same recipe, new init
    assert any("not resuming" in line for line in lines)
    lines.clear()  # the checkpoint now belongs to the seed-1 run, which resumes from it
    train(_mlp(digits, seed=1), digits, cfg, seed=0, checkpoint=ckpt, log=lines.append)
    assert any("resumed" in line for line in lines)
