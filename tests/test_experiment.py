"""The paper's experiment: which starting weights pair with which mask, and the permutation's direction."""

import pytest
import torch

from ticketalign.experiment import sparse_runs
from ticketalign.models import build_model, permutation_spec
from ticketalign.permutation import apply_permutation, invert_permutation, random_permutation
from ticketalign.permutation.weight_matching import weight_matching
from ticketalign.pruning import dense_masks, magnitude_prune

ALL = ["lth", "naive", "permuted", "random"]


def _masks(seed):
    gen = torch.Generator().manual_seed(seed)
    return {"l0.weight": torch.rand(6, 8, generator=gen) > 0.7, "l1.weight": torch.rand(3, 6, generator=gen) > 0.4}


@pytest.fixture
def parts():
    return {
        "a_rewind": {"l0.weight": torch.zeros(6, 8)},
        "b_rewind": {"l0.weight": torch.ones(6, 8)},
        "mask": _masks(0),
        "permuted_masks": {"weight": _masks(1), "activation": _masks(2)},
        "seed": 100,
        "sparsity": 0.7,
    }


def test_each_run_pairs_the_papers_weights_with_the_papers_mask(parts):
    runs = sparse_runs(**parts, variants=ALL)
    assert list(runs) == ["lth", "naive", "permuted_weight", "permuted_activation", "random"]
    assert runs["lth"].start is parts["a_rewind"] and runs["lth"].mask is parts["mask"]  # A@k, m_A
    assert runs["naive"].start is parts["b_rewind"] and runs["naive"].mask is parts["mask"]  # B@k, m_A
    for method in ("weight", "activation"):  # B@k, pi(m_A) of that method
        run = runs[f"permuted_{method}"]
        assert (run.variant, run.match_method) == ("permuted", method)
        assert run.start is parts["b_rewind"] and run.mask is parts["permuted_masks"][method]
    assert runs["random"].start is parts["b_rewind"]  # B@k, a random mask as dense as m_A per layer
    for name, m in parts["mask"].items():
        assert int(runs["random"].mask[name].sum()) == int(m.sum())
        assert runs["random"].mask[name].shape == m.shape
    assert not torch.equal(runs["random"].mask["l0.weight"], parts["mask"]["l0.weight"])
    assert {r.seed for r in runs.values()} == {100}  # one data order for every run
    assert {r.match_method for r in runs.values() if r.variant != "permuted"} == {""}


def test_the_random_mask_is_a_function_of_seed_and_target_sparsity(parts):
    first = sparse_runs(**parts, variants=["random"])["random"].mask
    again = sparse_runs(**parts, variants=["random"])["random"].mask
    other = sparse_runs(**{**parts, "sparsity": 0.8}, variants=["random"])["random"].mask
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not all(torch.equal(first[n], other[n]) for n in first)


def test_only_the_variants_asked_for_and_clear_errors(parts):
    assert list(sparse_runs(**parts, variants=["naive"])) == ["naive"]
    assert list(sparse_runs(**{**parts, "permuted_masks": {}}, variants=["lth", "naive"])) == ["lth", "naive"]
    with pytest.raises(ValueError, match="needs A's mask permuted"):
        sparse_runs(**{**parts, "permuted_masks": {}}, variants=["permuted"])
    with pytest.raises(ValueError, match="unknown sparse variants"):
        sparse_runs(**parts, variants=["lth", "shuffled"])


def test_the_permuted_mask_lines_up_with_b():
    """B is A with its hidden units moved by a known pi; matching must find pi (pi(A) = B), and pi(m_A)
    must then be exactly B's own ticket: the run B@k with pi(m_A) computes what A@k with m_A does."""
    model_a = build_model("mlp", (8,), 3, seed=0, hidden=6)
    spec = permutation_spec(model_a, (8,))
    true_pi = random_permutation(spec, torch.Generator().manual_seed(3))
    assert any(not torch.equal(true_pi[p], invert_permutation(true_pi)[p]) for p in true_pi)  # direction shows
    a = {n: t.detach().clone() for n, t in model_a.state_dict().items()}
    b = apply_permutation(spec, true_pi, a)
    perm, _ = weight_matching(spec, a, b)
    assert all(torch.equal(perm[p], true_pi[p]) for p in true_pi)

    keep = round(0.3 * sum(m.numel() for m in dense_masks(model_a).values()))
    mask_a = magnitude_prune(a, dense_masks(model_a), keep)
    mask_b = magnitude_prune(b, dense_masks(model_a), keep)  # B's own ticket, found on B's weights
    permuted = {"weight": apply_permutation(spec, perm, mask_a)}
    runs = sparse_runs(a_rewind=a, b_rewind=b, mask=mask_a, permuted_masks=permuted, variants=ALL, seed=0, sparsity=0.7)
    assert all(torch.equal(runs["permuted_weight"].mask[n], mask_b[n]) for n in mask_b)
    assert not all(torch.equal(runs["naive"].mask[n], mask_b[n]) for n in mask_b)
    wrong_way = apply_permutation(spec, invert_permutation(perm), mask_a)
    assert not all(torch.equal(wrong_way[n], mask_b[n]) for n in mask_b)

    x = torch.randn(5, 8)

    def masked_output(run):
        model = build_model("mlp", (8,), 3, hidden=6)
        model.load_state_dict({n: t * run.mask[n] if n in run.mask else t for n, t in run.start.items()})
        return model(x)

    assert torch.allclose(masked_output(runs["permuted_weight"]), masked_output(runs["lth"]), atol=1e-6)
    assert not torch.allclose(masked_output(runs["naive"]), masked_output(runs["lth"]), atol=1e-3)
