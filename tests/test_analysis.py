"""Diagnostics: barriers on linear paths, BatchNorm re-estimation, mask overlap, ensemble diversity."""

import math

import pytest
import torch
from torch import nn

from ticketalign.analysis import (
    DIVERSITY_COLUMNS,
    barrier,
    chance_jaccard,
    chance_jaccard_masks,
    diversity,
    diversity_rows,
    interpolate,
    jaccard,
    linear_path,
    mask_jaccard,
    reset_bn_stats,
)
from ticketalign.config import TrainConfig
from ticketalign.models import build_model, permutation_spec
from ticketalign.permutation.spec import apply_permutation, random_permutation
from ticketalign.train import train


def _trained(digits, seed):
    model = build_model("mlp", digits.input_shape, digits.num_classes, seed=seed, hidden=32)
    train(model, digits, TrainConfig(epochs=4, lr=0.1, batch_size=64), seed=seed, log=None)
    return model


@pytest.fixture(scope="module")
def two_models(digits):
    return _trained(digits, 0), _trained(digits, 1)


def test_barrier_of_a_curve():
    assert barrier([1.0, 1.0, 1.0]) == 0.0
    assert barrier([1.0, 3.0, 2.0]) == pytest.approx(1.5)  # 3 above the chord's 1.5
    assert barrier([2.0, 0.5, 1.0]) == 0.0  # below the chord: no barrier
    with pytest.raises(ValueError):
        barrier([1.0])


def test_interpolation_ends_and_middle():
    a, b = {"w": torch.zeros(3), "n": torch.tensor(5)}, {"w": torch.ones(3), "n": torch.tensor(9)}
    assert torch.equal(interpolate(a, b, 0.0)["w"], a["w"]) and torch.equal(interpolate(a, b, 1.0)["w"], b["w"])
    assert torch.allclose(interpolate(a, b, 0.25)["w"], torch.full((3,), 0.25))
    assert interpolate(a, b, 0.5)["n"].item() == 5  # integer buffers are not averaged


def test_no_barrier_to_a_models_own_permutation_and_one_between_independent_models(digits, two_models):
    a, c = two_models
    spec = permutation_spec(a, digits.input_shape)
    perm = random_permutation(spec, torch.Generator().manual_seed(3))
    state_a = a.state_dict()
    b = apply_permutation(spec, perm, state_a)  # the same function, its units shuffled
    probe = build_model("mlp", digits.input_shape, digits.num_classes, hidden=32)
    aligned = linear_path(probe, apply_permutation(spec, perm, state_a), b, digits, points=11)
    assert len(aligned) == 11 and aligned[0]["alpha"] == 0.0 and aligned[-1]["alpha"] == 1.0
    assert barrier([r["test_loss"] for r in aligned]) < 1e-6
    unaligned = linear_path(probe, state_a, b, digits, points=11)
    independent = linear_path(probe, state_a, c.state_dict(), digits, points=11)
    assert unaligned[0]["test_loss"] == pytest.approx(unaligned[-1]["test_loss"], abs=1e-5)
    assert barrier([r["test_loss"] for r in unaligned]) > 0.3
    assert barrier([r["test_loss"] for r in independent]) > 0.05


def test_batchnorm_statistics_are_recomputed_from_training_data(digits):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 10))
    bn = model[2]
    bn.running_mean.fill_(100.0)
    reset_bn_stats(model, digits, batches=2, batch_size=700)
    x = torch.cat([x for i, (x, _) in zip(range(2), digits.train_batches(700, seed=0, epoch=0))])
    with torch.no_grad():
        h = model[1](x.flatten(1))
    # two equal batches: the cumulative average of their means is the mean of all samples
    assert torch.allclose(bn.running_mean, h.mean(0), atol=1e-5)
    assert bn.momentum == 0.1 and model.training  # momentum and mode restored


def test_jaccard_of_a_mask_with_itself_and_by_hand():
    m = {"a": torch.tensor([[1, 0], [1, 1]], dtype=torch.bool), "b": torch.tensor([1, 0, 0], dtype=torch.bool)}
    assert mask_jaccard(m, m) == {"a": 1.0, "b": 1.0, "overall": 1.0}
    other = {"a": torch.tensor([[1, 1], [0, 1]], dtype=torch.bool), "b": torch.tensor([0, 1, 0], dtype=torch.bool)}
    got = mask_jaccard(m, other)
    assert got["a"] == pytest.approx(2 / 4) and got["b"] == 0.0
    assert got["overall"] == pytest.approx(2 / 6)  # 2 shared of 6 kept in either
    with pytest.raises(ValueError):
        jaccard(torch.ones(2, 2), torch.ones(4))
    # layers of density 1/4 (4 weights) and 1/3 (3 weights): (4/16 + 3/9) / (4·7/16 + 3·5/9)
    assert chance_jaccard_masks(m | {"a": torch.tensor([1, 0, 0, 0])}) == pytest.approx(
        (4 / 16 + 3 / 9) / (4 * 7 / 16 + 3 * 5 / 9))


@pytest.mark.parametrize("d", [0.05, 0.2, 0.5])
def test_jaccard_under_a_random_permutation_is_the_chance_level(digits, d):
    model = build_model("mlp", digits.input_shape, digits.num_classes, hidden=256)
    spec = permutation_spec(model, digits.input_shape)
    g = torch.Generator().manual_seed(0)
    mask = {n: torch.rand(p.shape, generator=g) < d for n, p in model.named_parameters() if n.endswith("weight")}
    shuffled = apply_permutation(spec, random_permutation(spec, g), mask, strict=True)
    got = mask_jaccard(mask, shuffled)
    assert chance_jaccard(d) == pytest.approx(d / (2 - d))
    assert got["overall"] == pytest.approx(chance_jaccard(d), abs=0.015)
    assert chance_jaccard_masks(mask) == pytest.approx(chance_jaccard(d), abs=0.01)  # one density everywhere
    # the input layer's columns (pixels) are not permuted, only its rows: still chance level
    assert got["layers.0.weight"] == pytest.approx(chance_jaccard(d), abs=0.03)


def test_diversity_of_identical_members_is_zero():
    logits = torch.randn(50, 10, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 10, (50,), generator=torch.Generator().manual_seed(1))
    got = diversity([logits, logits.clone(), logits.clone()], labels)
    assert got["disagreement"] == 0.0 and got["kl"] == pytest.approx(0, abs=1e-12)
    assert got["js"] == pytest.approx(0, abs=1e-12)
    assert got["ensemble_acc"] == pytest.approx(got["member_acc"]) and got["members"] == 3


def test_diversity_equals_hand_computed_values():
    # two members, two samples, two classes; softmax outputs chosen by their log-probabilities
    p = [[0.25, 0.75], [0.8, 0.2]]
    q = [[0.6, 0.4], [0.8, 0.2]]
    logits = [torch.tensor(p).log(), torch.tensor(q).log()]
    labels = torch.tensor([1, 0])
    got = diversity(logits, labels)
    kl = lambda a, b: sum(x * math.log(x / y) for x, y in zip(a, b))  # noqa: E731
    m = [(x + y) / 2 for x, y in zip(p[0], q[0])]  # [0.425, 0.575]: the ensemble predicts class 1
    assert got["member_acc"] == pytest.approx(75.0)  # first member 2/2 right, second 1/2
    assert got["ensemble_acc"] == pytest.approx(100.0)
    assert got["disagreement"] == pytest.approx(50.0)  # only the first sample's predictions differ
    assert got["kl"] == pytest.approx((0.5 * (kl(p[0], q[0]) + kl(q[0], p[0])) + 0) / 2, rel=1e-6)
    assert got["js"] == pytest.approx((0.5 * kl(p[0], m) + 0.5 * kl(q[0], m) + 0) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        diversity(logits[:1], labels)


def test_diversity_rows_group_across_seed_pairs_and_across_variants():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (20,), generator=g)
    runs = []
    for seed_a in (0, 1):
        for run in ("naive", "permuted_weight"):
            meta = {"width": 1, "sparsity": 0.9, "rewind_epoch": 0, "run": run, "seed_a": seed_a}
            runs.append((meta, torch.randn(20, 3, generator=g)))
    rows = diversity_rows(runs, labels)
    assert all(list(r) == list(DIVERSITY_COLUMNS) for r in rows)
    assert [(r["scope"], r["runs"], r["pairs"]) for r in rows] == [
        ("seed pairs", "naive", 2), ("seed pairs", "permuted_weight", 2), ("variants", "naive vs permuted_weight", 2)]
    by_hand = [diversity([runs[i][1], runs[i + 1][1]], labels)["disagreement"] for i in (0, 2)]
    assert rows[2]["disagreement"] == pytest.approx(sum(by_hand) / 2)
    assert rows[0]["disagreement"] == pytest.approx(diversity([runs[0][1], runs[2][1]], labels)["disagreement"])
