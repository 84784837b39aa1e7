"""The config is validated before any job: one message naming the key and the allowed values."""

import copy
from pathlib import Path

import pytest
import yaml

from ticketalign.config import ConfigError, load_config_files, load_schema, validate_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(ROOT / "workflow/schemas/config.schema.yaml")


@pytest.fixture
def default():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_default_config_is_valid_and_defaults_are_filled(default):
    cfg = validate_config(default, SCHEMA)
    assert cfg["runtime"]["checkpoint_every"] == 5
    assert cfg["dataset"]["root"] == "resources/data"
    assert cfg["imp"]["mode"] == "ft"
    assert "runtime" not in default or "checkpoint_every" not in default["runtime"]  # input untouched


def _mutate(cfg, path, value):
    cfg = copy.deepcopy(cfg)
    node = cfg
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return cfg


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (("dense", "learning_rate"), 0.1, ["'dense.learning_rate'", "allowed keys", "lr", "epochs"]),
        (("colour",), "red", ["'colour'", "allowed keys", "sparsities"]),
        (("sparsities",), [0.8, 1.2], ["'sparsities[1]'", "1.2", "< 1"]),
        (("model", "name"), "transformer", ["'model.name'", "transformer", "resnet20", "mlp"]),
        (("dataset", "name"), "svhn", ["'dataset.name'", "cifar10"]),
        (("rewind_epochs",), [0, 25], ["'rewind_epochs[1]'", "25", "< 20"]),
        (("matching", "methods"), ["weight", "optimal-transport"], ["'matching.methods[1]'", "activation"]),
        (("sparse", "train", "epochs"), "many", ["'sparse.train.epochs'", "expected type: integer"]),
        (("seed_pairs",), [[1, 1]], ["'seed_pairs[0]'", "must differ"]),
        (("sparse", "train", "warmup_epochs"), 19, ["'sparse.train.warmup_epochs' is 19", "<= 18"]),
    ],
)
def test_bad_config_is_rejected_with_one_clear_message(default, path, value, expected):
    with pytest.raises(ConfigError) as err:
        validate_config(_mutate(default, path, value), SCHEMA)
    message = str(err.value)
    assert "\n" not in message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_imp_rewind_epoch_must_lie_inside_dense_training(default):
    cfg = _mutate(default, ("imp", "mode"), "rewind")
    cfg["imp"]["rewind_epoch"] = 20
    with pytest.raises(ConfigError, match="'imp.rewind_epoch' is 20"):
        validate_config(cfg, SCHEMA)


def test_schema_lists_exactly_the_registered_models_and_datasets():
    from ticketalign.data import DATASETS
    from ticketalign.models import MODELS

    props = SCHEMA["properties"]
    assert set(props["model"]["properties"]["name"]["enum"]) == set(MODELS)
    assert set(props["dataset"]["properties"]["name"]["enum"]) == set(DATASETS)


def test_a_config_file_replaces_the_default_rather_than_merging(tmp_path, default):
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump({k: v for k, v in default.items() if k != "model"}))
    cfg = load_config_files([preset], {"sparse": {"train": {"lr": "0.5"}}})  # as snakemake --config passes it
    assert "model" not in cfg
    assert cfg["sparse"]["train"] == {**default["sparse"]["train"], "lr": 0.5}
    with pytest.raises(ConfigError, match="missing a required key: 'model'"):
        validate_config(cfg, SCHEMA)
