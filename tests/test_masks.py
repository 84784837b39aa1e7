"""Masks: which tensors each model declares prunable, counts, density, random masks."""

import pytest
import torch
from torch import nn

from ticketalign.masks import (
    apply_masks,
    default_prunable_names,
    dense_masks,
    density,
    kept_count,
    prunable_names,
    random_masks_like,
    sparsity,
    total_count,
)
from ticketalign.models import MODELS, build_model

NUM_CLASSES = 10
SHAPES = {"mlp": (64,), "resnet20": (3, 32, 32), "vgg11": (3, 32, 32), "vgg11_bn": (3, 32, 32),
          "resnet50": (3, 64, 64)}


def test_prunable_weights_are_conv_and_linear_weights_except_shortcuts():
    mlp = build_model("mlp", (64,), 10)
    assert prunable_names(mlp) == ["layers.0.weight", "layers.1.weight", "layers.2.weight"]
    resnet = build_model("resnet20", (3, 32, 32), 10)
    names = prunable_names(resnet)
    assert not any("shortcut" in n for n in names)
    assert any("shortcut" in n for n, _ in resnet.named_parameters())
    convs_and_linears = [n for n, m in resnet.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(names) == len(convs_and_linears) - sum("shortcut" in n for n in convs_and_linears)
    assert names[0] == prunable_names(resnet)[0] and names[-1].endswith("weight")  # stem and classifier kept
    assert all(n.endswith(".weight") for n in names)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_declares_the_papers_prunable_weights(name):
    assert set(SHAPES) == set(MODELS), "add the new model's input shape here"
    with torch.device("meta"):  # names and shapes only
        model = build_model(name, SHAPES[name], NUM_CLASSES)
    assert callable(getattr(model, "prunable_names", None)), f"{name} declares no prunable_names()"
    declared = model.prunable_names()
    # METHOD.md: the weight of every Conv2d and Linear, first conv and classifier included,
    # except shortcut/downsample convs; biases and norm parameters never
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    projections = [n for n in layers if {"shortcut", "downsample"} & set(n.split("."))]
    assert all(isinstance(layers[n], nn.Conv2d) and layers[n].kernel_size == (1, 1) for n in projections)
    expected = [f"{n}.weight" for n in layers if n not in projections]
    assert declared == expected  # model order: masks, artifacts and pruning ties follow it
    first, classifier = next(iter(layers)), next(reversed(layers))
    assert f"{first}.weight" in declared
    assert isinstance(layers[classifier], nn.Linear) and layers[classifier].out_features == NUM_CLASSES
    assert f"{classifier}.weight" in declared
    if name.startswith("resnet"):
        assert projections, f"{name} has no projection shortcut: the exclusion is untested"
    modules = dict(model.named_modules())
    for n in declared:  # never a bias, never a norm's parameter
        owner, _, tensor = n.rpartition(".")
        assert tensor == "weight" and isinstance(modules[owner], (nn.Conv2d, nn.Linear)), n
    # the convention (used for models that do not declare) says the same
    assert default_prunable_names(model) == declared
    assert prunable_names(model) == declared


class _Undeclared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.downsample = nn.Sequential(nn.Conv2d(1, 4, 1))
        self.fc = nn.Linear(4, 2)


def test_a_model_without_a_declaration_gets_the_convention_and_a_wrong_one_is_refused():
    model = _Undeclared()
    assert prunable_names(model) == ["conv.weight", "fc.weight"]
    assert prunable_names(nn.Linear(3, 2)) == ["weight"]
    model.prunable_names = lambda: ["conv.weight", "fc.wieght"]
    with pytest.raises(ValueError, match=r"_Undeclared.prunable_names\(\) lists \['fc.wieght'\]"):
        dense_masks(model)


def test_counts_density_sparsity_and_apply():
    model = _Undeclared()
    masks = dense_masks(model)
    assert {n: m.dtype for n, m in masks.items()} == {"conv.weight": torch.bool, "fc.weight": torch.bool}
    assert total_count(masks) == 4 * 9 + 4 * 2 and kept_count(masks) == total_count(masks)
    masks["conv.weight"][:2] = False
    assert kept_count(masks) == 2 * 9 + 8
    assert density(masks) == pytest.approx(26 / 44) and sparsity(masks) == pytest.approx(18 / 44)
    bias = model.conv.bias.detach().clone()
    apply_masks(model, masks)
    assert torch.all(model.conv.weight[:2] == 0) and torch.all(model.conv.weight[2:] != 0)
    assert torch.equal(model.conv.bias, bias)  # only masked tensors change
    apply_masks(model, None)  # no mask: nothing to do


def test_random_masks_keep_each_layers_density():
    gen = torch.Generator().manual_seed(0)
    masks = {"a": torch.rand(20, 30, generator=gen) > 0.9, "b": torch.rand(7, generator=gen) > 0.5}
    rnd = random_masks_like(masks, torch.Generator().manual_seed(1))
    assert all(int(rnd[n].sum()) == int(masks[n].sum()) for n in masks)
    assert not torch.equal(rnd["a"], masks["a"])
