"""The paper's qualitative claims on a real pipeline run (slow: ~10 minutes on 2 quiet cores, 21
under load; `pytest -m slow tests/test_paper_claims.py`).

The runner and the check live in benchmarks/paper_claims.py and ticketalign.report.check_claims
(whose logic the fast tests in test_report.py pin on hand-made grids). Measured on the
Fashion-MNIST preset's smallest grid (2 seed pairs, 90 / 97%, k = 0 / 1): permuted beats naive
everywhere (+1.0 to +2.1 points), but at k = 0 the gain does not grow from 90% to 97% (+1.02 ->
+0.98 activation, +1.33 -> +1.27 weight); at k = 1 it does. The second test records that as a
strict expected failure: it turns into an error the day the claim holds here.
"""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("paper_claims", ROOT / "benchmarks" / "paper_claims.py")
paper_claims = importlib.util.module_from_spec(spec)
spec.loader.exec_module(paper_claims)


@pytest.fixture(scope="module")
def fashion_claims(tmp_path_factory):
    from ticketalign.data import load_dataset

    work = tmp_path_factory.mktemp("claims")
    try:
        load_dataset("fashion_mnist", root=str(work / "none"))
    except Exception as err:  # noqa: BLE001 - any failure to find the data skips, with its message
        pytest.skip(f"Fashion-MNIST not available: {err}")
    return {claim: (holds, evidence) for claim, holds, evidence in
            paper_claims.run_claims(ROOT / "presets/fashion_mnist_mlp.yaml", work)}


def _claim(claims, start):
    (holds, evidence), = [v for k, v in claims.items() if k.startswith(start)]
    return holds, evidence


@pytest.mark.slow
def test_permuted_is_never_below_naive_from_90_percent_sparsity(fashion_claims):
    holds, evidence = _claim(fashion_claims, "permuted >= naive")
    assert holds, evidence


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="measured: at k = 0 the gain is flat from 90% to 97% sparsity (see module doc)")
def test_the_gain_grows_with_sparsity(fashion_claims):
    holds, evidence = _claim(fashion_claims, "the gain grows")
    assert holds, evidence


def test_the_claims_grid_is_the_smallest_meaningful_one():
    import yaml

    preset = yaml.safe_load((ROOT / "presets/fashion_mnist_mlp.yaml").read_text())
    grid = paper_claims.smallest_grid(preset)
    assert grid["sparsities"] == [0.9, 0.97] and grid["rewind_epochs"] == preset["rewind_epochs"]
    assert len(grid["seed_pairs"]) == 2 and not any(grid["diagnostics"].values())
    digits = paper_claims.smallest_grid(yaml.safe_load((ROOT / "config.yaml").read_text()))
    assert digits["sparsities"] == [0.9, 0.98]
