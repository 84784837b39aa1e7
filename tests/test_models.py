"""Architectures and their permutation specs: a permuted network computes the same function.

Models are checked in eval mode with non-trivial BatchNorm state (random affine parameters and
running statistics collected from shifted random data), so forgetting to permute any tensor,
running statistics included, changes the logits; negative controls show that it does.
"""

from __future__ import annotations

import copy
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ticketalign.models import MODELS, build_model, permutation_spec
from ticketalign.permutation.spec import (
    PermutationSpec,
    apply_permutation,
    compose_permutations,
    invert_permutation,
    permute_model,
    random_permutation,
)

NUM_CLASSES = 10
SHAPES = {"resnet20": (3, 32, 32), "vgg11": (3, 32, 32), "vgg11_bn": (3, 32, 32), "resnet50": (3, 64, 64)}
# Two widths per architecture. ResNet50's width scales the bottleneck only; 0.5 keeps it cheap.
CASES = [
    ("resnet20", 1),
    ("resnet20", 2),
    ("vgg11", 1),
    ("vgg11", 2),
    ("vgg11_bn", 1),
    ("vgg11_bn", 2),
    ("resnet50", 1),
    ("resnet50", 0.5),
]
RTOL = 1e-4  # max |logit change| allowed, relative to max |logit|


def _inputs(name: str, seed: int = 1, n: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SHAPES[name], generator=g) * 2.0 + 0.5  # shifted: BN statistics are non-trivial


@functools.cache
def _prepared(name: str, width: float) -> nn.Module:
    """A model in eval mode whose BatchNorms have random affine parameters and real statistics.

    Cached: tests must deep-copy it before changing it.
    """
    model = build_model(name, SHAPES[name], NUM_CLASSES, width=width, seed=0)
    g = torch.Generator().manual_seed(2)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.copy_(1.0 + 0.5 * torch.randn(bn.num_features, generator=g))
            bn.bias.copy_(0.5 * torch.randn(bn.num_features, generator=g))
            bn.momentum = None  # cumulative average: running stats become the data's statistics
        if bns:
            model.train()
            for seed in (10, 11):
                model(_inputs(name, seed))
    model.eval()
    for bn in bns:
        assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    return model


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _permuted_logits(model: nn.Module, spec: PermutationSpec, perm: dict, x: torch.Tensor) -> torch.Tensor:
    other = copy.deepcopy(model)
    other.load_state_dict(apply_permutation(spec, perm, model.state_dict()))
    return _logits(other, x)


def _without(spec: PermutationSpec, names: list[str]) -> PermutationSpec:
    axes = {k: v for k, v in spec.axes_to_perm.items() if k not in names}
    return PermutationSpec(axes, dict(spec.group_sizes), dict(spec.activation_points))


def _weight_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def _random_masks(model: nn.Module, seed: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    masks = {}
    for i, name in enumerate(_weight_modules(model)):
        shape = model.get_parameter(f"{name}.weight").shape
        density = 0.05 + 0.9 * (i % 7) / 6
        masks[f"{name}.weight"] = torch.rand(shape, generator=g) < density
    return masks


# --------------------------------------------------------------------------- function equivalence


@pytest.mark.parametrize(("name", "width"), CASES)
def test_permuted_model_computes_the_same_function(name, width):
    model = _prepared(name, width)
    spec = permutation_spec(model)
    x = _inputs(name)
    before = _logits(model, x)
    scale = before.abs().max().item()
    assert scale > 0

    perm = random_permutation(spec, torch.Generator().manual_seed(4))
    permuted = copy.deepcopy(model)
    permute_model(spec, perm, permuted)
    first = next(iter(spec.axes_to_perm))
    assert not torch.equal(permuted.state_dict()[first], model.state_dict()[first])
    change = (_logits(permuted, x) - before).abs().max().item()
    assert change <= RTOL * scale, f"{name} w{width}: logits moved by {change:.3g} (scale {scale:.3g})"

    # Negative control: leave out the BN running statistics (or, without BN, the conv biases).
    state = model.state_dict()
    left_out = [k for k in spec.axes_to_perm if k.endswith(("running_mean", "running_var"))]
    if not left_out:
        left_out = [k for k in spec.axes_to_perm if k.endswith(".bias") and spec.axes_to_perm[k][0] is not None]
    assert left_out and all(k in state for k in left_out)
    broken = (_permuted_logits(model, _without(spec, left_out), perm, x) - before).abs().max().item()
    assert broken > 100 * RTOL * scale, f"{name}: leaving out {left_out[:2]}... did not change the function"


@pytest.mark.parametrize("name", ["resnet20", "vgg11", "vgg11_bn"])
def test_every_spec_entry_is_needed(name):
    """Leaving out any one tensor of the spec changes the function (the spec has no dead entries)."""
    model = _prepared(name, 1)
    spec = permutation_spec(model)
    x = _inputs(name, n=2)
    before = _logits(model, x)
    scale = before.abs().max().item()
    perm = random_permutation(spec, torch.Generator().manual_seed(5))
    other = copy.deepcopy(model)
    state = model.state_dict()
    permuted = apply_permutation(spec, perm, state)
    for key, axes in spec.axes_to_perm.items():
        if all(p is None for p in axes):
            continue
        other.load_state_dict({**permuted, key: state[key]})
        change = (_logits(other, x) - before).abs().max().item()
        assert change > RTOL * scale, f"{name}: leaving {key} unpermuted would pass the equivalence test"


@pytest.mark.parametrize(("name", "width"), [("resnet20", 1), ("vgg11_bn", 1), ("resnet50", 0.5)])
def test_activation_points_show_their_group_permuted(name, width):
    """After pi, the features at each activation point are the original ones, reindexed by pi."""
    model = _prepared(name, width)
    spec = permutation_spec(model)
    perm = random_permutation(spec, torch.Generator().manual_seed(6))
    permuted = copy.deepcopy(model)
    permute_model(spec, perm, permuted)

    def features(net: nn.Module) -> dict[str, torch.Tensor]:
        seen: dict[str, torch.Tensor] = {}
        modules = dict(net.named_modules())
        handles = [
            modules[point].register_forward_hook(lambda _m, _i, out, point=point: seen.__setitem__(point, out.clone()))
            for points in spec.activation_points.values()
            for point in points
        ]
        _logits(net, _inputs(name, n=2))
        for h in handles:
            h.remove()
        return seen

    original, after = features(model), features(permuted)
    for group, points in spec.activation_points.items():
        for point in points:
            assert original[point].shape[1] == spec.group_sizes[group], (group, point)
            expected = original[point].index_select(1, perm[group])
            scale = expected.abs().max().item()
            assert (after[point] - expected).abs().max().item() <= RTOL * scale, (group, point)


def test_resnet50_matches_torchvision_and_keeps_its_keys():
    torchvision = pytest.importorskip("torchvision")
    from ticketalign.models.resnet_imagenet import ResNetImageNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torchvision.models.resnet50(weights=None, num_classes=NUM_CLASSES, width_per_group=32).eval()
    ours = ResNetImageNet(net).eval()
    assert list(ours.state_dict()) == list(net.state_dict())
    x = _inputs("resnet50", n=2)
    assert torch.equal(_logits(net, x), _logits(ours, x))


# ----------------------------------------------------------------------------------- spec shape


def _expected_groups(name: str, width: float) -> dict[str, int]:
    if name == "resnet20":
        out = {}
        for s, c in enumerate((16, 32, 64), start=1):
            out[f"layer{s}"] = int(c * width)
            out.update({f"layer{s}.{b}.inner": int(c * width) for b in range(3)})
        return out
    if name in ("vgg11", "vgg11_bn"):
        return {f"conv{i}": int(c * width) for i, c in enumerate((64, 128, 256, 256, 512, 512, 512, 512))}
    if name == "resnet50":
        out = {"stem": 64}
        for s, blocks in enumerate((3, 4, 6, 3), start=1):
            out[f"layer{s}"] = 256 * 2 ** (s - 1)
            for b in range(blocks):
                inner = int(64 * 2 ** (s - 1) * width)
                out[f"layer{s}.{b}.inner1"] = inner
                out[f"layer{s}.{b}.inner2"] = inner
        return out
    raise AssertionError(name)


@pytest.mark.parametrize("width", [1, 2])
@pytest.mark.parametrize("name", ["resnet20", "vgg11", "vgg11_bn", "resnet50"])
def test_spec_covers_the_model(name, width):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = build_model(name, SHAPES[name], NUM_CLASSES, width=width, seed=0)
    spec = permutation_spec(model)  # runs spec.check
    assert spec.group_sizes == _expected_groups(name, width)

    state = model.state_dict()
    unlisted = [k for k in state if k not in spec.axes_to_perm and not k.endswith("num_batches_tracked")]
    assert not unlisted, f"{name}: tensors missing from the spec: {unlisted}"
    weights = _weight_modules(model)
    first, last = next(iter(weights)), next(reversed(weights))
    assert isinstance(weights[last], nn.Linear) and weights[last].out_features == NUM_CLASSES
    for module_name in weights:
        out_group, in_group = spec.axes_to_perm[f"{module_name}.weight"][:2]
        assert (out_group is None) == (module_name == last), module_name  # hidden outputs are permuted
        assert (in_group is None) == (module_name == first), module_name  # the input pixels are not

    modules = dict(model.named_modules())
    assert set(spec.activation_points) == set(spec.group_sizes)
    all_points = [p for points in spec.activation_points.values() for p in points]
    assert len(all_points) == len(set(all_points)), "a point is listed for two groups"
    assert all(isinstance(modules.get(p), nn.ReLU) for p in all_points)
    assert len({id(modules[p]) for p in all_points}) == len(all_points), "one ReLU module serves two points"


def test_residual_streams_are_observed_at_every_block():
    spec = permutation_spec(build_model("resnet20", SHAPES["resnet20"], NUM_CLASSES, seed=0))
    assert spec.activation_points["layer1"] == ["relu", "layer1.0.relu2", "layer1.1.relu2", "layer1.2.relu2"]
    assert spec.activation_points["layer3"] == [f"layer3.{b}.relu2" for b in range(3)]
    assert spec.activation_points["layer2.1.inner"] == ["layer2.1.relu1"]
    assert spec.axes_to_perm["layer2.0.shortcut.0.weight"] == ("layer2", "layer1", None, None)
    assert spec.axes_to_perm["fc.weight"] == (None, "layer3")


def test_resnet20_shortcuts_only_where_the_shape_changes():
    model = build_model("resnet20", SHAPES["resnet20"], NUM_CLASSES, seed=0)
    with_shortcut = [n for n, m in model.named_modules() if getattr(m, "shortcut", None) is not None]
    assert with_shortcut == ["layer2.0", "layer3.0"]


@pytest.mark.parametrize(
    ("name", "shape", "width"),
    [("resnet20", (3, 32, 32), 0.3), ("vgg11", (3, 32, 32), 0.01), ("resnet50", (3, 64, 64), 0.3),
     ("vgg11", (1, 28, 28), 1), ("resnet20", (32, 32), 1)],
)
def test_bad_width_or_shape_is_rejected(name, shape, width):
    with pytest.raises(ValueError, match=name):
        build_model(name, shape, NUM_CLASSES, width=width)


def test_registry_and_lazy_torchvision():
    assert {"mlp", "resnet20", "vgg11", "vgg11_bn", "resnet50"} <= set(MODELS)
    code = (
        "import sys; from ticketalign.models import build_model\n"
        "for n in ('resnet20', 'vgg11', 'vgg11_bn'): build_model(n, (3, 32, 32), 10)\n"
        "assert 'torchvision' not in sys.modules, 'torchvision was imported'\n"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------ masks and algebra


@pytest.mark.parametrize(("name", "width"), [("resnet20", 1), ("vgg11", 1), ("resnet50", 0.5)])
def test_permuted_mask_keeps_density_and_commutes_with_masking(name, width):
    model = _prepared(name, width)
    spec = permutation_spec(model)
    perm = random_permutation(spec, torch.Generator().manual_seed(7))
    masks = _random_masks(model)
    permuted_masks = apply_permutation(spec, perm, masks)
    assert permuted_masks.keys() == masks.keys()
    for key, mask in masks.items():
        assert permuted_masks[key].dtype == torch.bool
        assert int(permuted_masks[key].sum()) == int(mask.sum()), key
    moved = [k for k in masks if not torch.equal(masks[k], permuted_masks[k])]
    assert len(moved) == len(masks), "a random permutation should move every mask"

    state = model.state_dict()
    masked_then_permuted = apply_permutation(spec, perm, {k: state[k] * m for k, m in masks.items()})
    permuted = apply_permutation(spec, perm, state)
    for key, mask in permuted_masks.items():
        assert torch.equal(masked_then_permuted[key], permuted[key] * mask), key


def test_strict_permutation_refuses_tensors_the_spec_does_not_know():
    model = _prepared("resnet20", 1)
    spec = permutation_spec(model)
    perm = random_permutation(spec, torch.Generator().manual_seed(7))
    masks = _random_masks(model)
    assert apply_permutation(spec, perm, masks, strict=True).keys() == masks.keys()
    for key, mask in apply_permutation(spec, perm, masks, strict=True).items():
        assert torch.equal(mask, apply_permutation(spec, perm, masks)[key]), key  # strict changes nothing else
    # a tensor the spec does not know would silently stay unpermuted: strict mode names it and the spec
    extra = {**masks, "head.weight": torch.ones(3, 3, dtype=torch.bool), "conv0.weight": masks["conv1.weight"]}
    assert torch.equal(apply_permutation(spec, perm, extra)["head.weight"], extra["head.weight"])
    with pytest.raises(ValueError, match=r"\['conv0.weight', 'head.weight'\] are not in the permutation spec of "
                                         r"\d+ tensors and groups layer1, layer1.0.inner"):
        apply_permutation(spec, perm, extra, strict=True)
    # so is a known tensor whose shape does not fit (index_select would silently cut it)
    wide = {**masks, "fc.weight": torch.ones(NUM_CLASSES, 128, dtype=torch.bool)}
    with pytest.raises(ValueError, match="group 'layer3' has 64 units but 'fc.weight' axis 1 has 128"):
        apply_permutation(spec, perm, wide, strict=True)
    # a state dict is not a strict dict: num_batches_tracked is in no spec
    with pytest.raises(ValueError, match="num_batches_tracked"):
        apply_permutation(spec, perm, model.state_dict(), strict=True)


def test_invert_and_compose():
    model = _prepared("resnet20", 1)
    spec = permutation_spec(model)
    state = model.state_dict()
    g = torch.Generator().manual_seed(8)
    p, q = random_permutation(spec, g), random_permutation(spec, g)

    restored = apply_permutation(spec, invert_permutation(p), apply_permutation(spec, p, state))
    assert all(torch.equal(restored[k], state[k]) for k in state)

    once = apply_permutation(spec, compose_permutations(p, q), state)
    twice = apply_permutation(spec, q, apply_permutation(spec, p, state))
    assert all(torch.equal(once[k], twice[k]) for k in state)
    assert any(not torch.equal(once[k], state[k]) for k in spec.axes_to_perm)


def test_resnet50_takes_other_input_channels():
    with torch.device("meta"):
        model = build_model("resnet50", (1, 64, 64), NUM_CLASSES, seed=0)
    assert model.conv1.in_channels == 1
    assert permutation_spec(model).axes_to_perm["conv1.weight"] == ("stem", None, None, None)


def test_mlp_kaiming_normal_init_scales_hidden_layers_like_the_resnets():
    """Hidden weights ~ N(0, 2/fan_in) with zero biases; the classifier keeps PyTorch's default."""
    model = build_model("mlp", (64,), 10, seed=0, hidden=512, init="kaiming_normal")
    first, second, head = model.layers
    assert first.weight.std().item() == pytest.approx((2 / 64) ** 0.5, rel=0.03)
    assert second.weight.std().item() == pytest.approx((2 / 512) ** 0.5, rel=0.03)
    assert not first.bias.any() and not second.bias.any()
    assert head.weight.abs().max() <= 512 ** -0.5 and head.bias.any()  # PyTorch's uniform(±1/sqrt(fan_in))
    default = build_model("mlp", (64,), 10, seed=0, hidden=512)
    assert default.layers[0].weight.std().item() == pytest.approx((1 / (3 * 64)) ** 0.5, rel=0.05)
    with pytest.raises(ValueError, match="kaiming_normal"):
        build_model("mlp", (64,), 10, init="xavier")
