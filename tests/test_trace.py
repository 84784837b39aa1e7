"""Derived permutation specs (torch.fx tracing) agree with the hand-written ones.

For every registered architecture the spec derived from the traced graph must partition the
(tensor, axis) pairs into exactly the groups the model file declares (up to group names). Ops the
tracer cannot reason about must raise an error naming the node, never give a wrong spec; and a
derived spec applied with a random permutation must keep the network's function (eval mode,
non-trivial BatchNorm statistics).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ticketalign.models import MODELS, build_model, permutation_spec
from ticketalign.permutation.spec import (
    PermutationSpec,
    canonical_partition,
    permute_model,
    random_permutation,
    spec_differences,
    specs_equivalent,
)
from ticketalign.permutation.trace import UnsupportedOperationError, derive_permutation_spec

NUM_CLASSES = 10

# (registry name, input shape, builder options)
ARCHITECTURES = [
    pytest.param("mlp", (1, 8, 8), {"depth": 1}, id="mlp-depth1"),
    pytest.param("mlp", (1, 8, 8), {"depth": 3}, id="mlp-depth3"),
    pytest.param("resnet20", (3, 32, 32), {"width": 1}, id="resnet20-w1"),
    pytest.param("resnet20", (3, 32, 32), {"width": 2}, id="resnet20-w2"),
    pytest.param("vgg11", (3, 32, 32), {}, id="vgg11"),
    pytest.param("vgg11_bn", (3, 32, 32), {}, id="vgg11_bn"),
    pytest.param("resnet50", (3, 64, 64), {}, id="resnet50"),
]


def _build(name: str, shape: tuple[int, ...], options: dict) -> nn.Module:
    if name not in MODELS:
        pytest.skip(f"{name} is not registered in ticketalign.models.MODELS yet")
    return build_model(name, shape, NUM_CLASSES, seed=0, **options)


def _module_names(model: nn.Module) -> set[str]:
    return {name for name, _ in model.named_modules()}


def _randomize_norm_state(model: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial BatchNorm affine parameters and running statistics."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.2)
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)


def _assert_function_preserved(model: nn.Module, spec: PermutationSpec, x: torch.Tensor, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    _randomize_norm_state(model, generator)
    model.eval()
    with torch.no_grad():
        before = model(x)
        perm = random_permutation(spec, generator)
        assert any(not torch.equal(p, torch.arange(len(p))) for p in perm.values())
        permute_model(spec, perm, model)
        after = model(x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("name", "shape", "options"), ARCHITECTURES)
def test_derived_spec_matches_hand_written(name, shape, options):
    model = _build(name, shape, options)
    derived = derive_permutation_spec(model, torch.randn(2, *shape))
    written = permutation_spec(model)
    assert spec_differences(derived, written) == []
    assert specs_equivalent(derived, written)
    assert canonical_partition(derived) == canonical_partition(written)
    # activation points: every group has some, all real module names
    names = _module_names(model)
    assert set(derived.activation_points) == set(derived.group_sizes)
    for group, points in derived.activation_points.items():
        assert points, f"group {group} has no activation point"
        assert set(points) <= names


@pytest.mark.parametrize(
    ("name", "shape", "options"),
    [p for p in ARCHITECTURES if p.id in ("mlp-depth3", "resnet20-w1", "vgg11_bn")]
    + [pytest.param("resnet50", (3, 32, 32), {}, id="resnet50", marks=pytest.mark.slow)],
)
def test_derived_spec_preserves_function(name, shape, options):
    model = _build(name, shape, options)
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))
    spec = derive_permutation_spec(model, x[:2])
    _assert_function_preserved(model, spec, x)


def test_derived_activation_points_match_resnet20():
    model = _build("resnet20", (3, 32, 32), {"width": 1})
    derived = derive_permutation_spec(model, torch.randn(2, 3, 32, 32))
    written = permutation_spec(model)
    rename = {frozenset(pairs): p for p, pairs in derived.perm_to_axes.items()}
    for group, pairs in written.perm_to_axes.items():
        assert sorted(derived.activation_points[rename[frozenset(pairs)]]) == sorted(written.activation_points[group])


def test_torchvision_resnet50_traces_like_the_rehoused_one():
    """torchvision's own ResNet50 (one ReLU module called three times per block, ``+=``)."""
    if "resnet50" not in MODELS:
        pytest.skip("resnet50 is not registered in ticketalign.models.MODELS yet")
    import torchvision  # a dependency of the project; imported here only because it is slow to import

    net = torchvision.models.resnet50(weights=None, num_classes=NUM_CLASSES)
    x = torch.randn(2, 3, 64, 64)
    derived = derive_permutation_spec(net, x)
    written = permutation_spec(build_model("resnet50", (3, 64, 64), NUM_CLASSES))
    assert spec_differences(derived, written) == []
    # the shared `relu` of a block is ambiguous to a forward hook: never offered as a point
    names = _module_names(net)
    for points in derived.activation_points.values():
        assert points and set(points) <= names
        assert not any(p.startswith("layer") and p.endswith(".relu") for p in points)


# -------------------------------------------------------------------------------------------
# Small hand-made graphs: functional ops, residual unification, and refusals
# -------------------------------------------------------------------------------------------


class FunctionalNet(nn.Module):
    """F.relu, F.max_pool2d, ``+=`` residual, a mean over space, view(x.size(0), -1)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.inner = nn.Conv2d(6, 5, 3, padding=1)
        self.back = nn.Conv2d(5, 6, 1)
        self.head = nn.Conv2d(6, 7, 1)
        self.fc1 = nn.Linear(7, 4)
        self.fc2 = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn(self.stem(x))), 2)
        out = self.back(torch.sigmoid(self.inner(x)))
        out += x
        x = F.relu(self.head(out)) * 0.5
        x = x.mean(dim=(2, 3), keepdim=True)
        x = x.view(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(x)))


def test_functional_graph_groups_and_function():
    model = FunctionalNet()
    x = torch.randn(3, 3, 8, 8)
    spec = derive_permutation_spec(model, x[:2])
    part = {frozenset(pairs): n for pairs, n in canonical_partition(spec).items()}
    stream = {
        ("stem.weight", 0),
        ("stem.bias", 0),
        ("bn.weight", 0),
        ("bn.bias", 0),
        ("bn.running_mean", 0),
        ("bn.running_var", 0),
        ("inner.weight", 1),
        ("back.weight", 0),
        ("back.bias", 0),
        ("head.weight", 1),
    }
    assert part[frozenset(stream)] == 6
    assert part[frozenset({("inner.weight", 0), ("inner.bias", 0), ("back.weight", 1)})] == 5
    assert part[frozenset({("head.weight", 0), ("head.bias", 0), ("fc1.weight", 1)})] == 7
    assert part[frozenset({("fc1.weight", 0), ("fc1.bias", 0), ("fc2.weight", 1)})] == 4
    assert len(part) == 4
    assert spec.axes_to_perm["fc2.bias"] == (None,) and spec.axes_to_perm["stem.weight"][1] is None
    # no activation module exists: points fall back to modules feeding an activation
    assert all(spec.activation_points[g] for g in spec.group_sizes)
    assert model.training  # the derivation restored the mode
    _assert_function_preserved(model, spec, x)


def test_residual_into_output_is_not_permuted():
    class OutputResidual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)

        def forward(self, x):
            return self.b(torch.relu(self.a(x))) + x  # the input space reaches the output

    spec = derive_permutation_spec(OutputResidual(), torch.randn(2, 4))
    assert spec.axes_to_perm["b.weight"][0] is None and spec.axes_to_perm["a.weight"][0] == "P0"
    assert list(spec.group_sizes) == ["P0"]


def test_module_called_twice_shares_its_groups():
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 6)
            self.mid = nn.Linear(6, 6)
            self.act = nn.ReLU()
            self.out = nn.Linear(6, 2)

        def forward(self, x):
            h = self.act(self.a(x))
            h = self.act(self.mid(h))
            h = self.act(self.mid(h))
            return self.out(h)

    model = Shared()
    x = torch.randn(3, 4)
    spec = derive_permutation_spec(model, x[:2])
    assert spec.group_sizes == {"P0": 6}
    assert spec.axes_to_perm["mid.weight"] == ("P0", "P0") and spec.axes_to_perm["out.weight"] == (None, "P0")
    assert spec.activation_points == {"P0": ["act"]}
    _assert_function_preserved(model, spec, x)


class CatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Conv2d(3, 4, 3, padding=1)
        self.right = nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(torch.cat([F.relu(self.left(x)), F.relu(self.right(x))], dim=1))


class GroupedConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(F.relu(self.grouped(F.relu(self.conv(x)))))


class SpatialFlattenNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.conv(x)), 1))


class MatmulNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(4, 4)
        self.k = nn.Linear(4, 1)

    def forward(self, x):
        return torch.matmul(self.q(x).unsqueeze(-1), self.k(x).unsqueeze(-1)).flatten(1)


class AttentionNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(4, 4)
        self.k = nn.Linear(4, 4)

    def forward(self, x):
        return torch.softmax(self.q(x) @ self.k(x).transpose(0, 1), dim=-1)


class ControlFlowNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


@pytest.mark.parametrize(
    ("model", "shape", "pattern"),
    [
        (CatNet(), (3, 8, 8), r"node 'cat' \(call_function torch\.cat\)"),
        (GroupedConvNet(), (3, 8, 8), r"node 'grouped' \(call_module 'grouped', Conv2d\).*grouped/depthwise"),
        (SpatialFlattenNet(), (3, 4, 4), r"node 'flatten' \(call_function torch\.flatten\).*spatial size > 1"),
        (MatmulNet(), (4,), r"node 'matmul' \(call_function torch\.matmul\)"),
        (AttentionNet(), (4,), r"node 'transpose' \(call_method 'transpose'\)"),
        (ControlFlowNet(), (4,), r"torch\.fx could not trace ControlFlowNet"),
    ],
    ids=["cat", "grouped-conv", "flatten-spatial", "matmul", "attention", "control-flow"],
)
def test_unsupported_operations_are_named(model, shape, pattern):
    with pytest.raises(UnsupportedOperationError, match=pattern):
        derive_permutation_spec(model, torch.randn(2, *shape))


def test_flatten_of_the_input_is_fine():
    """The MLP flattens the image input: the input space is never permuted, so that is allowed."""
    model = build_model("mlp", (1, 8, 8), NUM_CLASSES, depth=2)
    spec = derive_permutation_spec(model, torch.randn(2, 1, 8, 8))
    assert spec.axes_to_perm["layers.0.weight"] == ("P0", None)


def test_spec_differences_detect_wrong_specs():
    model = build_model("mlp", (1, 8, 8), NUM_CLASSES, depth=2)
    spec = permutation_spec(model)
    renamed = PermutationSpec(
        {k: tuple({"P0": "b", "P1": "a"}.get(p, p) if p else None for p in v) for k, v in spec.axes_to_perm.items()},
        {"b": spec.group_sizes["P0"], "a": spec.group_sizes["P1"]},
    )
    assert specs_equivalent(spec, renamed)

    merged = dict(spec.axes_to_perm)
    merged["layers.1.weight"] = ("P0", "P0")
    merged["layers.1.bias"] = ("P0",)
    merged["layers.2.weight"] = (None, "P0")
    diffs = spec_differences(spec, PermutationSpec(merged, {"P0": spec.group_sizes["P0"]}))
    assert diffs and "differ" in diffs[0]

    missing = {k: v for k, v in spec.axes_to_perm.items() if k != "layers.1.bias"}
    assert spec_differences(spec, PermutationSpec(missing, dict(spec.group_sizes))) == [
        "tensor 'layers.1.bias' only in the first spec"
    ]

    unpermuted = dict(spec.axes_to_perm)
    unpermuted["layers.1.bias"] = (None,)
    diffs = spec_differences(spec, PermutationSpec(unpermuted, dict(spec.group_sizes)))
    assert any("layers.1.bias axis 0" in d for d in diffs)


def test_registry_traces_a_model_without_a_hand_written_spec():
    from ticketalign.models import permutation_spec

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.act = nn.Linear(6, 9), nn.Linear(9, 3), nn.ReLU()

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    spec = permutation_spec(Plain(), (6,))
    assert spec.axes_to_perm["fc1.weight"][0] == spec.axes_to_perm["fc2.weight"][1] is not None
    assert list(spec.group_sizes.values()) == [9]
    with pytest.raises(TypeError, match="no permutation_spec"):
        permutation_spec(Plain())
