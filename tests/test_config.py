"""The config is validated before any job: one message naming the key and the allowed values."""

import copy
import dataclasses
import re
import typing
from pathlib import Path

import pytest
import yaml

from ticketalign.config import (
    IMP_MODES,
    VARIANTS,
    ConfigError,
    ExperimentConfig,
    ImpConfig,
    Runtime,
    TrainConfig,
    WeightMatchingConfig,
    load_config_files,
    load_schema,
    read_yaml_file,
    validate_config,
)

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
        (("sparse", "train", "warmup_epochs"), 39, ["'sparse.train.warmup_epochs' is 39", "<= 38"]),
    ],
)
def test_bad_config_is_rejected_with_one_clear_message(default, path, value, expected):
    with pytest.raises(ConfigError) as err:
        validate_config(_mutate(default, path, value), SCHEMA)
    message = str(err.value)
    assert "\n" not in message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_imp_reset_epoch_must_lie_inside_dense_training(default):
    cfg = _mutate(default, ("imp", "mode"), "reset")
    cfg["imp"]["reset_epoch"] = 20
    with pytest.raises(ConfigError, match="'imp.reset_epoch' is 20"):
        validate_config(cfg, SCHEMA)


@pytest.mark.parametrize(
    "imp, expected",
    [
        ({"rewind_epoch": 2}, "'imp.rewind_epoch' was renamed 'imp.reset_epoch'"),
        ({"mode": "rewind"}, "'imp.mode' is 'rewind', which was renamed 'reset'"),
    ],
)
def test_old_imp_names_are_refused_with_their_new_name(default, imp, expected):
    cfg = copy.deepcopy(default)
    cfg["imp"].update(imp)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        validate_config(cfg, SCHEMA)


@pytest.mark.parametrize("section", ["dense", "imp.train"])
def test_warmup_longer_than_a_run_is_refused_by_the_one_rule_naming_the_key(default, section):
    cfg = copy.deepcopy(default)
    block = cfg[section] if section == "dense" else cfg["imp"]["train"]
    block["warmup_epochs"] = block["epochs"] + 1
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, SCHEMA)
    assert str(err.value) == (f"config: '{section}.warmup_epochs' is {block['epochs'] + 1}; allowed values: "
                              f">= 0 and <= {block['epochs']} ({section}.epochs = {block['epochs']})")
    # the same rule guards a recipe built in Python (the scripts build theirs from their flags)
    with pytest.raises(ValueError, match="'warmup_epochs' is 3"):
        TrainConfig(epochs=2, lr=0.1, warmup_epochs=3)


def test_defaults_are_filled_from_the_dataclasses(default):
    cfg = validate_config({k: v for k, v in default.items() if k != "runtime"}, SCHEMA)
    assert cfg["runtime"] == dataclasses.asdict(Runtime())
    assert cfg["imp"]["prune_rate"] == ImpConfig.prune_rate
    assert cfg["matching"]["activation"]["batches"] == default["matching"]["activation"]["batches"]
    assert cfg["matching"]["weight"]["seed"] == WeightMatchingConfig.seed


def _schema_node(node, root=SCHEMA):
    ref = node.get("$ref")
    if ref:
        target = root
        for part in ref[2:].split("/"):
            target = target[part]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string", list: "array", dict: "object"}


def _compare(cls, node, key="<top>", root=SCHEMA):
    """Every difference between a section dataclass and its schema node: fields, types, required, defaults."""
    node = _schema_node(node, root)
    problems = []
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    if set(fields) != set(node["properties"]):
        problems.append(f"{key}: dataclass fields {sorted(fields)} != schema keys {sorted(node['properties'])}")
    required = {n for n, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    if required != set(node.get("required", [])):
        problems.append(f"{key}: required {sorted(required)} != schema required {node.get('required', [])}")
    for name in set(fields) & set(node["properties"]):
        f, sub, typ = fields[name], _schema_node(node["properties"][name], root), hints[name]
        where = f"{key}.{name}"
        if dataclasses.is_dataclass(typ):
            problems += _compare(typ, sub, where, root)
            want_type = "object"
        else:
            want_type = JSON_TYPES[typing.get_origin(typ) or typ]
        found_type = sub.get("type", "string" if "enum" in sub else None)
        if found_type != want_type:
            problems.append(f"{where}: type {typ} but schema type {found_type}")
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
            default = {} if dataclasses.is_dataclass(default) else default  # a section of defaults: {}
        else:
            default = dataclasses.MISSING
        if default is dataclasses.MISSING:
            if "default" in sub:
                problems.append(f"{where}: required in the dataclass, schema default {sub['default']!r}")
        elif not _same(sub.get("default", dataclasses.MISSING), default):
            problems.append(f"{where}: default {default!r} but schema default {sub.get('default', 'none')!r}")
    return problems


def _same(a, b):
    return a == b and isinstance(a, bool) == isinstance(b, bool)  # False == 0, but not as a default


def test_schema_fields_types_and_defaults_equal_the_dataclasses():
    assert _compare(ExperimentConfig, SCHEMA) == []


def test_schema_lists_exactly_the_imp_modes_and_sparse_variants():
    props = SCHEMA["properties"]
    assert tuple(props["imp"]["properties"]["mode"]["enum"]) == IMP_MODES
    assert tuple(props["sparse"]["properties"]["variants"]["items"]["enum"]) == VARIANTS


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


# --- repairs and checks of issue 8 (the dry runs through snakemake are in test_faults.py) -----------


def test_yaml_floats_without_a_dot_are_numbers_and_a_repeated_key_names_file_and_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: 1e6\nb: 1.0e6\nc: -2E-3\nd: '1e6'\ne: 7\nf: 1_000\n")
    assert read_yaml_file(path) == {"a": 1e6, "b": 1e6, "c": -2e-3, "d": "1e6", "e": 7, "f": 1000}
    path.write_text("name: x\nsparsities: [0.9]\ndense: {epochs: 3}\nsparsities: [0.8]\n")
    with pytest.raises(ConfigError, match=re.escape(
            f"config file {path}, line 4, column 1: key 'sparsities' appears twice in one mapping (first on line 2)")):
        read_yaml_file(path)
    path.write_text("name: x\ndense:\n  epochs: 3\n   lr: 0.1\n")
    with pytest.raises(ConfigError, match=re.escape(f"config file {path}, line 4, column 6: mapping values")):
        load_config_files([path])


def test_integral_floats_become_ints_where_the_schema_wants_integers(default):
    cfg = copy.deepcopy(default)
    cfg["dense"]["epochs"] = 20.0
    cfg["rewind_epochs"] = [0, 2.0]
    cfg["seed_pairs"] = [[0, 100.0], [1, 101]]
    cfg["rewind_epochs_by_width"] = {1: [0, 1.0]}
    cfg["dense"]["lr"] = 1  # a number field keeps what it was given
    out = validate_config(cfg, SCHEMA)
    assert out["dense"]["epochs"] == 20 and type(out["dense"]["epochs"]) is int
    assert out["rewind_epochs"] == [0, 2] and all(type(k) is int for k in out["rewind_epochs"])
    assert out["seed_pairs"][0] == [0, 100] and type(out["seed_pairs"][0][1]) is int
    assert [type(k) for k in out["rewind_epochs_by_width"]["1"]] == [int, int]
    with pytest.raises(ConfigError, match=re.escape("'dense.epochs' is 20.5; expected type: integer")):
        validate_config(_mutate(default, ("dense", "epochs"), 20.5), SCHEMA)


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (("sparsities",), [0.9, 0.9000001], "'sparsities[1]' is 0.9000001, which shares the results folder s0.9 "
                                            "with 'sparsities[0]' (0.9)"),
        (("model", "widths"), [1, 1.0000001], "'model.widths[1]' is 1.0000001, which shares the results folder w1"),
        (("sparsities",), [0.80000001], "'sparsities[0]' is 0.80000001; allowed values: numbers of at most 6 "
                                        "significant digits (results paths would round it to s0.8)"),
    ],
)
def test_numbers_that_share_or_misname_a_results_folder_are_refused(default, path, value, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        validate_config(_mutate(default, path, value), SCHEMA)


@pytest.mark.parametrize(
    "model, dataset, expected",
    [
        ({"options": {"hiddn": 64}}, "digits",
         "config: unknown key 'model.options.hiddn' for model 'mlp'; allowed keys: hidden, depth"),
        ({"options": {"depth": 0}}, "digits", "config: 'model.options' is {'depth': 0}; allowed values: options "
                                              "build_mlp accepts (MLP depth must be at least 1 hidden layer, got 0)"),
        ({"name": "resnet20", "options": {}, "widths": [1, 1.1]}, "cifar10",
         "config: 'model.widths[1]' is 1.1; allowed values: widths resnet20 can be built with (resnet20 width 1.1 "
         "gives 17.6 channels"),
        ({"name": "resnet20", "options": {}}, "digits", "config: 'model.name' is 'resnet20'; allowed values: a model "
                                                        "for dataset digits's inputs of shape (64,)"),
        ({"name": "vgg11", "options": {"hidden": 3}}, "cifar10",
         "config: unknown key 'model.options.hidden' for model 'vgg11'; allowed keys: none"),
    ],
)
def test_the_model_is_built_on_the_meta_device_at_every_width_before_any_job(default, model, dataset, expected):
    cfg = copy.deepcopy(default)
    cfg["model"].update(model)
    cfg["dataset"]["name"] = dataset
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, SCHEMA)
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)


def test_a_cuda_device_must_exist_where_the_jobs_run(default, monkeypatch):
    import torch

    cfg = _mutate(default, ("runtime",), {"device": "cuda:7"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=re.escape("'runtime.device' is 'cuda:7'; allowed values: auto or cpu "
                                                    "(this machine has no CUDA device and the jobs run here;")):
        validate_config(cfg, SCHEMA)
    assert validate_config(cfg, SCHEMA, jobs_run_here=False)["runtime"]["device"] == "cuda:7"  # a cluster's business
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=re.escape("allowed values: auto, cpu, cuda or cuda:0 to cuda:1")):
        validate_config(cfg, SCHEMA)
    assert validate_config(_mutate(default, ("runtime",), {"device": "cuda:1"}), SCHEMA)


def test_a_layer_that_changes_model_name_replaces_model_options(tmp_path, default):
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump(default))
    # as snakemake parses --config "model={name: resnet20}": the MLP's hidden/depth go with the MLP
    switched = load_config_files([preset], {"model": {"name": "resnet20"}})
    assert switched["model"] == {"name": "resnet20", "widths": [1]}  # options: the default, {}
    own = load_config_files([preset], {"model": {"name": "resnet20", "options": {"kaiming_mode": "fan_in"}}})
    assert own["model"]["options"] == {"kaiming_mode": "fan_in"}
    same = load_config_files([preset], {"model": {"name": "mlp", "options": {"hidden": "64"}}})
    # same model: options merge key by key
    assert same["model"]["options"] == {**default["model"]["options"], "hidden": 64}
    later = tmp_path / "later.yaml"
    later.write_text("model: {name: vgg11}\n")
    assert "options" not in load_config_files([preset, later])["model"]  # a later --configfile too
