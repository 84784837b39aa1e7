"""Weight and activation matching: exact recovery of known permutations, monotone descent, real
alignment of independently trained networks, and exact Pearson statistics.

Recovery models are made *identifiable*: every unit must be distinguishable from every other one
(random weights do that for weight matching), and for activation matching every unit must vary
on the test inputs. A ReLU that never fires correlates 0 with everything and could be matched to
any other dead unit, so :func:`_identifiable` gives BatchNorms random affine parameters and the
inputs' statistics, and shifts the biases of BN-free networks by a data quantile (the way a
data-dependent init does).
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from torch import nn

from ticketalign.models import build_model, permutation_spec
from ticketalign.permutation.activation_matching import activation_correlations, activation_matching
from ticketalign.permutation.spec import (
    PermutationSpec,
    apply_permutation,
    identity_permutation,
    permute_model,
    random_permutation,
)
from ticketalign.permutation.weight_matching import matching_objective, weight_matching

NUM_CLASSES = 10
SHAPES = {
    "mlp": (64,),
    "resnet20": (3, 32, 32),
    "vgg11": (3, 32, 32),
    "vgg11_bn": (3, 32, 32),
    "resnet50": (3, 64, 64),
}
FAST = [("mlp", 1), ("resnet20", 1), ("resnet20", 2), ("vgg11", 1), ("vgg11_bn", 1)]
CASES = FAST + [pytest.param("resnet50", 1, marks=pytest.mark.slow)]


def _inputs(name: str, seed: int, n: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SHAPES[name], generator=g)


class _Stop(Exception):
    """Raised by a hook to end a forward pass early."""


def _identifiable_without_bn(model: nn.Module, xs: torch.Tensor, g: torch.Generator) -> None:
    """He-init every layer and shift each hidden layer's biases so that each unit is active on
    30-70% of ``xs`` (layer by layer, like a data-dependent init)."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for m in layers:  # He init keeps the signal alive through VGG's depth (PyTorch's default shrinks it)
        m.weight.normal_(0.0, (2.0 / m.weight[0].numel()) ** 0.5, generator=g)
        m.bias.uniform_(-0.1, 0.1, generator=g)
    for m in layers[:-1]:  # the classifier feeds no ReLU

        def stop(_module, _inputs, out):
            raise _Stop(out.detach())

        handle = m.register_forward_hook(stop)
        try:
            model(xs)
        except _Stop as seen:
            f = seen.args[0].movedim(1, -1).reshape(-1, m.bias.shape[0]).sort(0).values
        finally:
            handle.remove()
        rank = ((0.3 + 0.4 * torch.rand(f.shape[1], generator=g)) * (len(f) - 1)).long()
        m.bias -= f[rank, torch.arange(f.shape[1])]


@functools.cache
def _identifiable(name: str, width: float, seed: int = 0) -> nn.Module:
    """A random model in eval mode in which every hidden unit varies on the test inputs.

    With BatchNorm: random affine parameters and running statistics of the test inputs (one
    batch), so every BN output has mean ``bias`` and std ``weight`` over them and every ReLU fires
    on a good share of samples. Without: see :func:`_identifiable_without_bn`. Cached: tests
    deep-copy it before changing it.
    """
    model = build_model(name, SHAPES[name], NUM_CLASSES, width=width, seed=seed)
    g = torch.Generator().manual_seed(100 + seed)
    xs = torch.cat([_inputs(name, s) for s in (1, 2)])
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        if not bns:
            _identifiable_without_bn(model, xs, g)
        for m in bns:
            m.weight.uniform_(0.5, 1.5, generator=g)
            m.bias.uniform_(-0.3, 0.3, generator=g)
            m.reset_running_stats()
            m.momentum = None  # cumulative: running statistics become the inputs' statistics
        model.train()
        model(xs)
        for m in bns:
            m.momentum = 0.1
    return model.eval()


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters()}


def _permuted_copy(model: nn.Module, spec: PermutationSpec, seed: int) -> tuple[nn.Module, dict]:
    perm = random_permutation(spec, torch.Generator().manual_seed(seed))
    other = copy.deepcopy(model)
    permute_model(spec, perm, other)
    return other, perm


def _assert_same_permutation(found: dict, expected: dict) -> None:
    assert found.keys() == expected.keys()
    wrong = {p: int((found[p] != expected[p]).sum()) for p in expected if not torch.equal(found[p], expected[p])}
    assert not wrong, f"units matched wrongly, per group: {wrong}"


# --------------------------------------------------------------------------- exact recovery


@pytest.mark.parametrize(("name", "width"), CASES)
def test_weight_matching_recovers_a_known_permutation(name, width):
    a = _identifiable(name, width)
    spec = permutation_spec(a)
    b, perm = _permuted_copy(a, spec, seed=7)
    found, history = weight_matching(spec, _params(a), _params(b))
    _assert_same_permutation(found, perm)
    # at the optimum pi(A) == B, so the objective is |A|^2 (over the matched tensors)
    norm2 = sum(float((p.double() ** 2).sum()) for n, p in _params(a).items() if n in spec.axes_to_perm)
    assert history[-1] == pytest.approx(norm2, rel=1e-12)
    aligned = apply_permutation(spec, found, a.state_dict())
    assert all(torch.equal(aligned[k], v) for k, v in b.state_dict().items())


@pytest.mark.parametrize(("name", "width"), CASES)
def test_activation_matching_recovers_a_known_permutation(name, width):
    a = _identifiable(name, width)
    spec = permutation_spec(a)
    b, perm = _permuted_copy(a, spec, seed=8)
    batches = [_inputs(name, s) for s in (1, 2)]
    found, quality = activation_matching(spec, a, b, batches)
    _assert_same_permutation(found, perm)
    # B computes A's features up to float32 rounding: every matched unit correlates ~1
    assert min(quality.values()) > 1 - 1e-4


# --------------------------------------------------------------------------- weight-matching descent


@pytest.mark.parametrize(("name", "width", "seed"), [("mlp", 1, 0), ("resnet20", 1, 3), ("vgg11_bn", 0.25, 5)])
def test_weight_matching_objective_never_decreases(name, width, seed):
    a = build_model(name, SHAPES[name], NUM_CLASSES, width=width, seed=1)
    b = build_model(name, SHAPES[name], NUM_CLASSES, width=width, seed=2)
    spec = permutation_spec(a)
    pa, pb = _params(a), _params(b)
    perm, history = weight_matching(spec, pa, pb, seed=seed)
    assert len(history) >= 3  # at least two sweeps: the test would be vacuous otherwise
    assert all(later >= earlier for earlier, later in zip(history, history[1:])), history
    assert history[-1] > history[0]
    # the bookkeeping is the real objective of the permutations, in float64
    scale = sum(float(t.double().abs().pow(2).sum()) for t in pa.values()) ** 0.5
    assert history[0] == pytest.approx(matching_objective(spec, identity_permutation(spec), pa, pb), abs=1e-9 * scale)
    assert history[-1] == pytest.approx(matching_objective(spec, perm, pa, pb), abs=1e-9 * scale)
    # the same descent stopped after k sweeps: its permutations' true objectives never decrease
    objectives = [
        matching_objective(spec, weight_matching(spec, pa, pb, seed=seed, max_sweeps=k)[0], pa, pb)
        for k in range(len(history))
    ]
    assert objectives == pytest.approx(history, abs=1e-9 * scale)
    assert all(later >= earlier for earlier, later in zip(objectives, objectives[1:]))


def test_weight_matching_is_deterministic_and_honours_init():
    a = build_model("resnet20", SHAPES["resnet20"], NUM_CLASSES, seed=1)
    b = build_model("resnet20", SHAPES["resnet20"], NUM_CLASSES, seed=2)
    spec = permutation_spec(a)
    pa, pb = _params(a), _params(b)
    first, h1 = weight_matching(spec, pa, pb, seed=4)
    again, h2 = weight_matching(spec, pa, pb, seed=4)
    _assert_same_permutation(again, first)
    assert h1 == h2
    # starting at the answer, one sweep finds nothing better
    _, h3 = weight_matching(spec, pa, pb, init=first)
    assert h3 == pytest.approx([h1[-1]] * len(h3), rel=1e-12) and len(h3) == 2
    # float64 parameters give the same matching (the search is float32, the bookkeeping float64)
    p64 = {n: t.double() for n, t in pa.items()}
    same, _ = weight_matching(spec, p64, {n: t.double() for n, t in pb.items()}, seed=4)
    _assert_same_permutation(same, first)
    assert all(torch.equal(pa[n], a.get_parameter(n)) for n in pa)  # inputs untouched


def test_weight_matching_rejects_mismatched_models():
    a = build_model("mlp", (64,), NUM_CLASSES, seed=0)
    b = build_model("mlp", (64,), NUM_CLASSES, width=0.5, seed=0)
    with pytest.raises(ValueError, match="layers.0.weight"):
        weight_matching(permutation_spec(a), _params(a), _params(b))


# --------------------------------------------------------------------------- trained networks


@pytest.fixture(scope="module")
def trained_digit_mlps(digits):
    from ticketalign.train import TrainConfig, train

    models = []
    for seed in (0, 1):
        model = build_model("mlp", digits.input_shape, digits.num_classes, seed=seed)
        result = train(model, digits, TrainConfig(epochs=4, lr=0.05, batch_size=64), seed=seed, log=None)
        assert result.final["test_acc"] > 85
        models.append(model.eval())
    return models


def _distance(spec: PermutationSpec, perm: dict, a: nn.Module, b: nn.Module) -> float:
    aligned = apply_permutation(spec, perm, _params(a))
    return sum(float((aligned[n] - p).double().pow(2).sum()) for n, p in _params(b).items()) ** 0.5


def test_weight_matching_aligns_independently_trained_mlps(trained_digit_mlps):
    a, b = trained_digit_mlps
    spec = permutation_spec(a)
    perm, history = weight_matching(spec, _params(a), _params(b))
    identity = identity_permutation(spec)
    assert history[-1] > history[0] + 1.0
    assert history[0] == pytest.approx(matching_objective(spec, identity, _params(a), _params(b)), rel=1e-12)
    assert _distance(spec, perm, a, b) < 0.95 * _distance(spec, identity, a, b)
    assert all(float((perm[p] != identity[p]).float().mean()) > 0.5 for p in spec.group_sizes)


def test_activation_matching_aligns_independently_trained_mlps(trained_digit_mlps, digits):
    a, b = trained_digit_mlps
    spec = permutation_spec(a)
    batches = [x for x, _ in digits.train_batches(256, seed=0, epoch=0)]
    corr = activation_correlations(spec, a, b, batches)
    perm, quality = activation_matching(spec, a, b, batches)
    identity = identity_permutation(spec)
    for p, c in corr.items():
        matched = float(c[torch.arange(len(c)), perm[p]].mean())
        assert matched == pytest.approx(quality[p])
        assert matched > float(c.diagonal().mean()) + 0.2
    assert _distance(spec, perm, a, b) < 0.95 * _distance(spec, identity, a, b)


# --------------------------------------------------------------------------- exact statistics


def _features(model: nn.Module, points: list[str], batches: list[torch.Tensor]) -> dict[str, np.ndarray]:
    """Every point's output over all batches as float64 (samples x units), read independently."""
    modules = dict(model.named_modules())
    got: dict[str, list[np.ndarray]] = {p: [] for p in points}

    def hook(point):
        def read(_module, _inputs, out):
            got[point].append(out.detach().movedim(1, -1).reshape(-1, out.shape[1]).double().numpy().copy())

        return read

    handles = [modules[p].register_forward_hook(hook(p)) for p in points]
    with torch.no_grad():
        for x in batches:
            model(x)
    for h in handles:
        h.remove()
    return {p: np.concatenate(v) for p, v in got.items()}


def _numpy_correlation(fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
    """B-by-A Pearson correlation by np.corrcoef; undefined entries (constant units) -> 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        full = np.corrcoef(np.concatenate([fb, fa], axis=1), rowvar=False)
    cross = full[: fb.shape[1], fb.shape[1] :]
    return np.nan_to_num(cross, nan=0.0)


def test_correlations_equal_numpy_pearson_with_a_dead_unit():
    a = build_model("mlp", (64,), NUM_CLASSES, hidden=24, seed=0).eval()
    b = build_model("mlp", (64,), NUM_CLASSES, hidden=24, seed=1).eval()
    with torch.no_grad():
        a.layers[0].bias[3] = -1e4  # never active: a constant 0 feature in A
        b.layers[1].bias[5] = -1e4  # and one in B's second layer
        a.layers[1].bias += 25.0  # large means next to small spreads: E[xy] - E[x]E[y] would cancel
    spec = permutation_spec(a)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, 64, generator=g) for n in (50, 37, 64)]  # unequal: statistics are global
    corr = activation_correlations(spec, a, b, batches)
    fa = _features(a, ["acts.0", "acts.1"], batches)
    fb = _features(b, ["acts.0", "acts.1"], batches)
    assert np.all(fa["acts.0"][:, 3] == 0) and np.all(fb["acts.1"][:, 5] == 0)
    for p, point in (("P0", "acts.0"), ("P1", "acts.1")):
        expected = _numpy_correlation(fa[point], fb[point])
        got = corr[p].numpy()
        assert not np.isnan(got).any()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)
    assert np.all(corr["P0"].numpy()[:, 3] == 0) and np.all(corr["P1"].numpy()[5, :] == 0)


def test_correlations_of_conv_streams_are_sums_over_points():
    """Conv features: every spatial position is a sample; a stream sums its points' matrices."""
    a = _identifiable("resnet20", 1, seed=0)
    b = _identifiable("resnet20", 1, seed=1)
    spec = permutation_spec(a)
    g = torch.Generator().manual_seed(3)
    batches = [torch.randn(n, 3, 8, 8, generator=g) for n in (3, 5)]
    corr = activation_correlations(spec, a, b, batches, max_batches=2)
    points = sorted({m for ms in spec.activation_points.values() for m in ms})
    fa, fb = _features(a, points, batches), _features(b, points, batches)
    for p in ("layer1", "layer2.0.inner", "layer3"):
        expected = sum(_numpy_correlation(fa[m], fb[m]) for m in spec.activation_points[p])
        np.testing.assert_allclose(corr[p].numpy(), expected, rtol=0, atol=1e-10)
    assert len(spec.activation_points["layer1"]) == 4  # stem + three blocks


class _InPlaceAfterPoint(nn.Module):
    """An MLP whose hooked ReLU output is squared in place afterwards."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)

    def forward(self, x):
        h = self.act(self.fc1(x))
        return self.fc2(h.pow_(2))

    def permutation_spec(self) -> PermutationSpec:
        axes = {"fc1.weight": ("h", None), "fc1.bias": ("h",), "fc2.weight": (None, "h"), "fc2.bias": (None,)}
        return PermutationSpec(axes, {"h": 16}, {"h": ["act"]})


def test_activation_matching_reads_features_before_later_in_place_ops():
    torch.manual_seed(0)
    a = _InPlaceAfterPoint()
    spec = a.permutation_spec()
    b, perm = _permuted_copy(a, spec, seed=1)
    batches = [torch.randn(64, 8) for _ in range(2)]
    corr = activation_correlations(spec, a, b, batches)
    expected = _numpy_correlation(*(_features(m, ["act"], [x.clone() for x in batches])["act"] for m in (a, b)))
    # _features copies inside the hook too, so it sees the ReLU output, not its square
    np.testing.assert_allclose(corr["h"].numpy(), expected, atol=1e-10)
    found, _ = activation_matching(spec, a, b, batches)
    _assert_same_permutation(found, perm)


def test_activation_matching_restores_modes_and_rejects_bad_input():
    a = build_model("mlp", (64,), NUM_CLASSES, seed=0)
    b = build_model("mlp", (64,), NUM_CLASSES, seed=1)
    a.train()
    b.eval()
    spec = permutation_spec(a)
    activation_matching(spec, a, b, iter([torch.randn(8, 64)]))
    assert a.training and not b.training
    with pytest.raises(ValueError, match="empty"):
        activation_matching(spec, a, b, [])
    relu_twice = nn.Sequential(nn.Linear(64, 128), nn.ReLU())
    relu_twice.forward = lambda x: relu_twice[1](relu_twice[1](relu_twice[0](x)))  # one module, two calls
    twice_spec = PermutationSpec({"0.weight": ("h", None)}, {"h": 128}, {"h": ["1"]})
    with pytest.raises(ValueError, match="more than once"):
        activation_correlations(twice_spec, relu_twice, relu_twice, [torch.randn(4, 64)])
