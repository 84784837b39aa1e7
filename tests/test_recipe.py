"""The CUDA recipe (bf16 autocast, channels_last, torch.compile) run on the CPU.

On a GPU these settings are what make training fast; on the CPU they only cost time, but the
loop honours them on every device so that the suite runs the code paths a GPU run takes:
training under each setting, resuming under it, an IMP chain under it.

torch.compile's default backend (inductor) generates and compiles C++ on the CPU, tens of
seconds per graph; the default suite compiles with the ``aot_eager`` backend, which runs the same
capture (dynamo) and autograd (AOT) machinery without the code generation, and one slow test
runs inductor itself.
"""

import dataclasses
import math

import pytest
import torch

from ticketalign.data import InMemoryDataset
from ticketalign.masks import dense_masks, kept_count
from ticketalign.models import build_model
from ticketalign.pruning import plan_imp, run_imp
from ticketalign.train import Runtime, TrainConfig, evaluate, train

RECIPES = {
    "amp": Runtime(amp=True),
    "channels_last": Runtime(channels_last=True),
    "compile": Runtime(compile=True),
    "all": Runtime(amp=True, channels_last=True, compile=True),
}
CFG = TrainConfig(epochs=3, lr=0.2, batch_size=32)


@pytest.fixture(scope="module")
def images():
    """A learnable 4-class set of 3x8x8 images (a fixed colour pattern per class + noise),
    augmented like CIFAR; 256 images, so every batch of 32 has the same shape (compile traces once)."""
    gen = torch.Generator().manual_seed(0)
    patterns = torch.rand(4, 3, 8, 8, generator=gen) * 160 + 40

    def make(n):
        y = torch.randint(0, 4, (n,), generator=gen)
        x = patterns[y] + torch.randn(n, 3, 8, 8, generator=gen) * 30
        return x.clamp(0, 255).to(torch.uint8), y

    (xtr, ytr), (xte, yte) = make(256), make(128)
    stats = torch.full((3, 1, 1), 0.5)
    return InMemoryDataset("toy_images", xtr, ytr, xte, yte, 4, mean=stats, std=stats, augment=True, crop_padding=1)


@pytest.fixture
def compiles(monkeypatch):
    """torch.compile with the aot_eager backend (module docstring); counts the models compiled."""
    calls = []
    real = torch.compile

    def fake(model, **kwargs):
        calls.append(model)
        return real(model, **{"backend": "aot_eager", **kwargs})

    monkeypatch.setattr(torch, "compile", fake)
    yield calls
    torch._dynamo.reset()


def _net(data, seed=0):
    return build_model("resnet20", data.input_shape, data.num_classes, width=0.25, seed=seed)


def _random_masks(model, keep=0.5, seed=2):
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.rand(m.shape, generator=gen) < keep for n, m in dense_masks(model).items()}


class _Crash(Exception):
    pass


def _crash(_epoch, _model):
    raise _Crash


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_trains_masked_and_resumes_exactly(name, images, compiles, tmp_path):
    rt = RECIPES[name]
    masks = _random_masks(_net(images))
    model = _net(images)
    ref = train(model, images, CFG, seed=3, runtime=rt, masks=masks, log=None)
    losses = [row["train_loss"] for row in ref.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0] - 0.2, losses
    params = dict(model.named_parameters())
    for n, m in masks.items():  # masks stay exact under every recipe
        assert params[n].dtype == torch.float32
        assert (params[n][~m] == 0).all(), n
        assert (params[n][m] != 0).float().mean() > 0.99, n
    if rt.channels_last:
        conv = next(p for p in model.parameters() if p.ndim == 4)
        assert conv.is_contiguous(memory_format=torch.channels_last)
    assert len(compiles) == (1 if rt.compile else 0)

    # interrupted in epoch 3, resumed from its checkpoint under the same recipe: the same run
    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(_Crash):
        train(_net(images), images, CFG, seed=3, runtime=dataclasses.replace(rt, checkpoint_every=1), masks=masks,
              checkpoint=ckpt, snapshot_epochs=(3,), on_snapshot=_crash, log=None)
    resumed = _net(images)
    lines = []
    again = train(resumed, images, CFG, seed=3, runtime=dataclasses.replace(rt, checkpoint_every=1), masks=masks,
                  checkpoint=ckpt, log=lines.append)
    assert any("resumed" in line and "epoch 2" in line for line in lines)
    for n, t in model.state_dict().items():
        assert torch.equal(resumed.state_dict()[n], t), n
    assert again.history == [{**row, "samples_per_s": a["samples_per_s"]} for row, a in zip(ref.history, again.history)]


@pytest.mark.parametrize("name", ["channels_last", "compile"])
def test_layout_and_compile_compute_what_eager_fp32_computes(name, images, compiles):
    """channels_last and compile change how, not what: the trained weights match eager fp32's
    up to float reordering. bf16 does change the numbers (next test)."""
    fp32, other = _net(images), _net(images)
    cfg = TrainConfig(epochs=2, lr=0.05, batch_size=128)  # 4 steps: float differences stay small
    train(fp32, images, cfg, seed=1, log=None)
    train(other, images, cfg, seed=1, runtime=RECIPES[name], log=None)
    for (n, a), b in zip(fp32.state_dict().items(), other.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=2e-4, msg=n)


def test_amp_changes_the_numbers_and_eval_under_autocast_is_close_to_fp32(images):
    fp32, bf16 = _net(images), _net(images)
    train(fp32, images, CFG, seed=1, log=None)
    train(bf16, images, CFG, seed=1, runtime=RECIPES["amp"], log=None)
    assert any(not torch.equal(a, b) for a, b in zip(fp32.parameters(), bf16.parameters()))  # autocast was on
    exact, auto = evaluate(bf16, images), evaluate(bf16, images, amp=True)
    assert abs(exact["test_acc"] - auto["test_acc"]) <= 100 * 3 / images.num_test  # at most 3 of 128 flip
    assert auto["test_loss"] == pytest.approx(exact["test_loss"], rel=0.03)
    x, _ = next(images.test_batches(128))
    bf16.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = bf16(x).float()
    with torch.no_grad():
        high = bf16(x)
    assert (low - high).abs().max() <= 0.05 * high.abs().max()


@pytest.mark.parametrize("name", ["amp", "compile"])
def test_an_imp_chain_under_the_recipe_lands_exactly_on_its_target(name, images, compiles, tmp_path):
    model = _net(images)
    train(model, images, TrainConfig(epochs=1, lr=0.05, batch_size=64), seed=0, log=None)
    total = kept_count(dense_masks(model))
    plan = plan_imp(total, [0.5])
    found = {}
    run_imp(model, images, plan=plan, train_cfg=TrainConfig(epochs=1, lr=0.01, batch_size=64), seed=0,
            cache_dir=tmp_path, runtime=RECIPES[name], on_target=found.__setitem__, log=None)
    mask = found[0.5]
    assert kept_count(mask) == total - round(0.5 * total)
    params = dict(model.named_parameters())
    level_masks = torch.load(tmp_path / f"level{plan.targets[0.5][0]}.pt", weights_only=True)["data"]["masks"]
    for n, m in level_masks.items():  # the last trained level kept its pruned weights at exactly 0
        assert (params[n][~m] == 0).all(), n
        assert (mask[n] <= m).all()  # the target's mask prunes further, never revives
    assert plan.trained_levels >= 2 and len(compiles) == (plan.trained_levels if name == "compile" else 0)


@pytest.mark.slow
def test_inductor_compile_on_cpu_trains_like_eager(images):
    """The real torch.compile (inductor generates C++): slow, so outside the default suite."""
    eager, compiled = _net(images), _net(images)
    cfg = TrainConfig(epochs=2, lr=0.05, batch_size=128)
    train(eager, images, cfg, seed=1, log=None)
    try:
        train(compiled, images, cfg, seed=1, runtime=Runtime(compile=True), log=None)
    finally:
        torch._dynamo.reset()
    for (n, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=2e-4, msg=n)



@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_gpu_recipe_on_cuda_trains_resumes_and_keeps_masks(images, tmp_path):
    """The presets' recipe (bf16, channels_last, inductor compile) on the GPU itself. cuDNN's
    backward kernels are not deterministic, so the resumed run is held close, not equal."""
    rt = Runtime(amp=True, channels_last=True, compile=True, checkpoint_every=1)
    data = images.to("cuda")
    masks = _random_masks(_net(images))
    model = _net(images).cuda()
    lines = []
    try:
        ref = train(model, data, CFG, seed=3, runtime=rt, masks=masks, log=None)
        with pytest.raises(_Crash):
            train(_net(images).cuda(), data, CFG, seed=3, runtime=rt, masks=masks, checkpoint=tmp_path / "c.ckpt",
                  snapshot_epochs=(3,), on_snapshot=_crash, log=None)
        resumed = _net(images).cuda()
        again = train(resumed, data, CFG, seed=3, runtime=rt, masks=masks, checkpoint=tmp_path / "c.ckpt",
                      log=lines.append)
    finally:
        torch._dynamo.reset()
    assert any("resumed" in line and "epoch 2" in line for line in lines)
    losses = [row["train_loss"] for row in ref.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0] - 0.2, losses
    for m in (model, resumed):
        params = dict(m.named_parameters())
        assert all((params[n][~m_.cuda()] == 0).all() for n, m_ in masks.items())
    assert again.history[-1]["train_loss"] == pytest.approx(ref.history[-1]["train_loss"], abs=0.1)
    assert abs(again.final["test_acc"] - ref.final["test_acc"]) <= 10
