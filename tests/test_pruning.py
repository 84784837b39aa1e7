"""Global magnitude pruning and the shared IMP chain."""

import copy
import shutil

import pytest
import torch

from ticketalign.masks import dense_masks, kept_count, sparsity, total_count
from ticketalign.models import build_model
from ticketalign.pruning import keep_for_sparsity, magnitude_prune, plan_imp, run_imp
from ticketalign.train import Runtime, TrainConfig, train


def test_magnitude_prune_is_global_exact_and_never_revives():
    gen = torch.Generator().manual_seed(0)
    weights = {"a": torch.randn(50, 40, generator=gen), "b": 3 * torch.randn(30, generator=gen)}
    masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    total = total_count(masks)
    first = magnitude_prune(weights, masks, keep_for_sparsity(total, 0.5))
    assert kept_count(first) == total - round(0.5 * total)
    # global: one threshold across tensors, so the larger-scale tensor keeps a larger share
    assert first["b"].float().mean() > first["a"].float().mean()
    threshold = min(weights[n][first[n]].abs().min() for n in weights)
    assert all((weights[n][~first[n]].abs() <= threshold).all() for n in weights)
    # make every pruned weight huge: pruning further must still not bring any of them back
    boosted = {n: torch.where(first[n], weights[n], torch.full_like(weights[n], 1e6)) for n in weights}
    second = magnitude_prune(boosted, first, keep_for_sparsity(total, 0.9))
    assert kept_count(second) == total - round(0.9 * total)
    assert all((second[n] <= first[n]).all() for n in weights)
    with pytest.raises(ValueError, match="cannot keep"):
        magnitude_prune(weights, second, kept_count(second) + 1)


def test_plan_shares_one_chain_and_matches_the_paper_level_counts():
    total = 270_000  # ResNet20-sized
    plan = plan_imp(total, [0.8, 0.9, 0.95, 0.97], rate=0.2)
    # the paper: 80% -> 8 levels, 90% -> 11, 95% -> 14, 97% -> 16 (the last one capped)
    assert {t: base + 1 for t, (base, _) in plan.targets.items()} == {0.8: 8, 0.9: 11, 0.95: 14, 0.97: 16}
    assert plan.trained_levels == 15  # one shared chain instead of 8 + 11 + 14 + 16 = 49 trained levels
    for t, (base, keep) in plan.targets.items():
        assert keep == total - round(t * total)
        assert plan.keep[base] > keep
        assert base + 1 >= len(plan.keep) or plan.keep[base + 1] <= keep
    assert all(b == a - round(0.2 * a) for a, b in zip(plan.keep, plan.keep[1:]))


def test_plan_rejects_bad_targets():
    with pytest.raises(ValueError, match="target sparsities"):
        plan_imp(1000, [0.5, 1.2])


@pytest.mark.parametrize("mode", ["ft", "reset"])
def test_imp_lands_exactly_on_each_target_with_nested_masks(digits, tmp_path, mode):
    model = build_model("mlp", digits.input_shape, digits.num_classes, seed=0, hidden=32)
    snaps = {}
    train(model, digits, TrainConfig(epochs=2, lr=0.1), seed=0, snapshot_epochs=(1,),
          on_snapshot=lambda k, m: snaps.__setitem__(k, copy.deepcopy(m.state_dict())), log=None)
    total = total_count(dense_masks(model))
    targets = [0.5, 0.8, 0.9]
    plan = plan_imp(total, targets)
    found, lines = {}, []
    kwargs = dict(plan=plan, train_cfg=TrainConfig(epochs=1, lr=0.01), seed=0,
                  cache_dir=tmp_path / "levels", reset_state=snaps[1] if mode == "reset" else None,
                  on_target=found.__setitem__, log=lines.append)
    levels = run_imp(copy.deepcopy(model), digits, **kwargs)
    assert len(levels) == plan.trained_levels
    assert sorted(found) == targets
    for t, m in found.items():
        assert kept_count(m) == total - round(t * total)
        assert sparsity(m) == pytest.approx(t, abs=1 / total)
    assert all((found[0.9][n] <= found[0.8][n]).all() and (found[0.8][n] <= found[0.5][n]).all() for n in found[0.5])
    # a rerun finds every trained level on disk and trains none
    lines.clear()
    again = {}
    run_imp(copy.deepcopy(model), digits, **{**kwargs, "on_target": again.__setitem__})
    assert not any("training" in line for line in lines)
    assert all(torch.equal(again[t][n], found[t][n]) for t in targets for n in found[t])
    # another recipe never reuses those levels: run_imp fingerprints every input itself
    dense = copy.deepcopy(model)
    with torch.no_grad():
        next(dense.parameters()).add_(1e-3)
    other_state = {n: t + 1e-3 if t.is_floating_point() else t for n, t in snaps[1].items()}
    others = [{"train_cfg": TrainConfig(epochs=1, lr=0.02)}, {"seed": 1}, {"plan": plan_imp(total, targets, 0.3)},
              {"reset_state": None if mode == "reset" else snaps[1]}, {"runtime": Runtime(amp=not Runtime().amp)},
              {"model": dense}]
    if mode == "reset":
        others.append({"reset_state": other_state})
    for i, change in enumerate(others):
        lines.clear()
        cache = shutil.copytree(tmp_path / "levels", tmp_path / f"copy{i}")
        change = {"model": copy.deepcopy(model), **change}
        run_imp(change.pop("model"), digits, **{**kwargs, **change, "cache_dir": cache, "on_target": lambda *_: None})
        assert any("training" in line for line in lines), change

