"""The experiment config: one dataclass per section, the one source of every default.

``validate_config`` is the one validation path, run by the Snakefile before any job starts:
1. old key names are refused with their new name;
2. the JSON schema (workflow/schemas/config.schema.yaml) checks each key's type and range, and
   its errors become one sentence naming the key and the allowed values;
3. the dataclasses below fill the defaults and check what a schema cannot express: a section's
   own rules in its ``__post_init__`` (warmup within the run), rules across sections in
   :class:`ExperimentConfig` (a rewind epoch past the end of training).
4. what only the library knows (:func:`check_model`, :func:`check_device`): the model builds
   with its options at every width (on the meta device: no memory, no init), and a CUDA
   ``runtime.device`` exists where the jobs run.
Values are normalized on the way: an integral float where the schema wants an integer
(``epochs: 6.0``) becomes an int, a non-integral one is refused; numbers that results paths
would round (``0.9000001`` is ``s0.9``), or two that land in one folder, are refused by name.
The scripts build the same dataclasses from their flags (``ticketalign.cli`` generates every flag
and its default from the fields), so a rule is written once and holds on both paths. The schema
documents the keys; a test holds its fields, types and defaults equal to the dataclasses'.

Config files are read as YAML with two repairs of PyYAML's YAML 1.1 reading: ``1e6`` and
``1.0e6`` are numbers (YAML 1.2), and a key written twice in one mapping is an error naming the
file and line (as is any syntax error), not a silent override.

This module imports neither torch nor (until they are needed) yaml and jsonschema: the Snakefile
and every training script import it at start-up; the checks of step 4 import torch when run.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jsonschema


class ConfigError(ValueError):
    """The config is invalid; the message names the key, the value found and what is allowed."""


class BadValue(ConfigError):
    """``key`` holds ``value`` outside ``allowed``; ``related`` are the keys (and values) the rule
    compares with. Raised by a section with keys relative to it; :meth:`within` prefixes them."""

    def __init__(self, key: str, value: Any, allowed: str, related: Mapping[str, Any] | None = None, note: str = ""):
        self.key, self.value, self.allowed, self.related, self.note = key, value, allowed, dict(related or {}), note
        why = ", ".join(f"{k} = {v!r}" for k, v in self.related.items())
        why = "; ".join(x for x in (why, note) if x)
        super().__init__(f"config: {key!r} is {value!r}; allowed values: {allowed}" + (f" ({why})" if why else ""))

    def within(self, section: str) -> BadValue:
        """The same error, its keys named from the top of the config (``warmup_epochs`` -> ``dense.warmup_epochs``)."""
        if not section:
            return self
        related = {f"{section}.{k}": v for k, v in self.related.items()}
        return BadValue(f"{section}.{self.key}", self.value, self.allowed, related, self.note)


def _opt(default: Any = dataclasses.MISSING, help: str = "", factory: Any = dataclasses.MISSING) -> Any:
    """A field with its help text (the scripts' ``--help`` shows it)."""
    return field(default=default, default_factory=factory, metadata={"help": help})


# ---------------------------------------------------------------------------------------------
# The sections
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (the config's ``train`` blocks map onto these)."""

    epochs: int = _opt(help="total epochs of the run")
    lr: float = _opt(help="peak learning rate (cosine to 0)")
    momentum: float = _opt(0.9, "SGD momentum")
    weight_decay: float = _opt(5e-4, "L2 weight decay")
    batch_size: int = _opt(128, "training batch size")
    warmup_epochs: float = _opt(0, "linear warmup before the cosine, in epochs")
    nesterov: bool = _opt(False, "Nesterov momentum")

    def __post_init__(self) -> None:
        if not 0 <= self.warmup_epochs <= max(self.epochs, 0):
            raise BadValue("warmup_epochs", self.warmup_epochs, f">= 0 and <= {self.epochs}", {"epochs": self.epochs})

    def remaining(self, start_epoch: int) -> TrainConfig:
        """The recipe of a run that starts at epoch ``start_epoch`` of this one: it trains the epochs left."""
        return dataclasses.replace(self, epochs=self.epochs - start_epoch)


IMP_MODES = ("ft", "reset")


@dataclass(frozen=True)
class ImpConfig:
    """Iterative magnitude pruning of model A."""

    train: TrainConfig = _opt(help="the recipe of each level's training")
    mode: str = _opt("ft", "ft: fine-tune after each prune (the paper's IMP-FT); "
                           "reset: reset the survivors to A at reset_epoch and retrain (Frankle et al.)")
    reset_epoch: int = _opt(0, "mode reset: the epoch of dense A the survivors are reset to")
    prune_rate: float = _opt(0.2, "fraction of the remaining prunable weights pruned per level")


@dataclass(frozen=True)
class WeightMatchingConfig:
    """Git Re-Basin weight matching (coordinate descent over the permutation groups)."""

    max_sweeps: int = _opt(100, "weight matching: most sweeps over the groups")
    tol: float = _opt(1e-12, "weight matching: a sweep gaining at most this (relative) stops")
    seed: int = _opt(0, "weight matching: seed of the order of the groups")


@dataclass(frozen=True)
class ActivationMatchingConfig:
    """Activation matching (correlation of post-activation features on training data)."""

    batches: int = _opt(20, "activation matching: training batches to correlate over")
    batch_size: int = _opt(256, "activation matching: batch size")


@dataclass(frozen=True)
class Runtime:
    """How to run, not what to compute: changing it never changes a result.

    ``device``, ``threads``, ``jobs_per_gpu`` and ``gpus`` are applied by the script
    (``ticketalign.cli.runtime``); the training loop runs on the model's device and reads the rest.
    ``amp``, ``channels_last`` and ``compile`` are honoured on every device, so the CUDA recipe
    runs in the CPU test suite; they default to off, so the embedded default computes in fp32
    everywhere, and the GPU presets turn them on."""

    device: str = _opt("auto", "auto (CUDA when present), cpu, cuda, cuda:N")
    threads: int = _opt(1, "CPU threads for torch, per job")
    amp: bool = _opt(False, "bf16 autocast on any device (fast on CUDA; on CPU for testing the recipe)")
    channels_last: bool = _opt(False, "channels-last memory format for conv nets (fast on CUDA; on CPU for testing)")
    compile: bool = _opt(False, "torch.compile the model (on CPU for testing; slow to start)")
    jobs_per_gpu: int = _opt(1, "concurrent jobs that share one GPU (--resources gpu= then counts these slots)")
    gpus: int = _opt(1, "GPUs per training job: more than 1 runs it with DistributedDataParallel (torchrun); "
                        "with device cpu, processes (for testing)")
    eval_every: int = _opt(1, "evaluate on the test split every N epochs (and after the last)")
    checkpoint_every: int = _opt(5, "write a resumable checkpoint every N epochs")
    max_job_hours: float = _opt(24, "cap of every job's time request on a cluster; longer training continues "
                                    "over several submissions, resuming from the checkpoint it writes at the limit")

    def __post_init__(self) -> None:
        if self.gpus > 1 and self.jobs_per_gpu > 1:
            raise BadValue("jobs_per_gpu", self.jobs_per_gpu, "1 when gpus > 1", {"gpus": self.gpus},
                           "a job on several GPUs takes them whole; share GPUs among one-GPU jobs only")


@dataclass(frozen=True)
class DatasetConfig:
    name: str = _opt(help="dataset name (see ticketalign.data.DATASETS)")
    root: str = _opt("resources/data", "folder holding the dataset files")
    download: bool = _opt(False, "download when missing (needs internet)")


@dataclass(frozen=True)
class ModelConfig:
    name: str = _opt(help="architecture name (see ticketalign.models.MODELS)")
    widths: list[float] = _opt(help="width multipliers")
    options: dict[str, Any] = _opt(help="extra keyword arguments of the model builder", factory=dict)


@dataclass(frozen=True)
class MatchingConfig:
    methods: list[str] = _opt(help="weight and/or activation")
    weight: WeightMatchingConfig = _opt(factory=WeightMatchingConfig)
    activation: ActivationMatchingConfig = _opt(factory=ActivationMatchingConfig)


VARIANTS = ("lth", "naive", "permuted", "random")


@dataclass(frozen=True)
class SparseConfig:
    train: TrainConfig = _opt(help="epochs is the total; a run from rewind epoch k trains epochs - k")
    variants: list[str] = _opt(help="sparse runs per (pair, sparsity, k)", factory=lambda: ["lth", "naive", "permuted"])


@dataclass(frozen=True)
class DiagnosticsConfig:
    """The diagnostics that explain the result (ticketalign.analysis); each is one cached rule."""

    lmc: bool = _opt(True, "linear mode connectivity: test loss/error on the line A<->B and pi(A)<->B")
    lmc_points: int = _opt(11, "linear mode connectivity: evenly spaced points on each line, ends included")
    bn_batches: int = _opt(20, "BatchNorm models: training batches that recompute the running statistics "
                               "at each point of a line")
    bn_batch_size: int = _opt(256, "BatchNorm models: batch size of that recomputation")
    mask_overlap: bool = _opt(True, "Jaccard overlap of m_A with pi(m_A) per layer, and with a random permutation")
    diversity: bool = _opt(True, "ensemble diversity of the sparse runs across seed pairs and across variants "
                                 "(from their saved test logits)")


def sparse_run_names(variants: Sequence[str], methods: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(run name, variant, matching method)`` of every sparse run, in order: a permuted run per method."""
    runs = [(v, v, "") for v in ("lth", "naive") if v in variants]
    runs += [(f"permuted_{m}", "permuted", m) for m in methods] if "permuted" in variants else []
    runs += [("random", "random", "")] if "random" in variants else []
    return runs


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole config; ``rewind_epochs`` are the epochs k of dense A and B that sparse training starts from."""

    name: str
    dataset: DatasetConfig
    model: ModelConfig
    seed_pairs: list[list[int]]
    dense: TrainConfig
    imp: ImpConfig
    sparsities: list[float]
    rewind_epochs: list[int]
    matching: MatchingConfig
    sparse: SparseConfig
    rewind_epochs_by_width: dict[str, list[int]] = field(default_factory=dict)
    runtime: Runtime = field(default_factory=Runtime)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rewind_epochs_by_width", _rewinds_by_width(self))
        dense_epochs, sparse_epochs = self.dense.epochs, self.sparse.train.epochs
        epochs = {"dense.epochs": dense_epochs, "sparse.train.epochs": sparse_epochs}
        lists = {"rewind_epochs": self.rewind_epochs}
        lists |= {f"rewind_epochs_by_width.{w}": ks for w, ks in self.rewind_epochs_by_width.items()}
        for key, ks in lists.items():
            for i, k in enumerate(ks):
                if k >= min(dense_epochs, sparse_epochs):
                    raise BadValue(f"{key}[{i}]", k, f"0 <= k < {min(dense_epochs, sparse_epochs)}", epochs)
        if self.imp.mode == "reset" and not self.imp.reset_epoch < dense_epochs:
            raise BadValue("imp.reset_epoch", self.imp.reset_epoch, f"0 <= k < {dense_epochs}",
                           {"dense.epochs": dense_epochs})
        for i, pair in enumerate(self.seed_pairs):
            if pair[0] == pair[1]:
                raise ConfigError(f"config: 'seed_pairs[{i}]' is {pair}; seeds of A and B must differ")
        try:
            self.sparse.train.remaining(max(k for ks in lists.values() for k in ks))
        except BadValue as err:
            raise BadValue("sparse.train.warmup_epochs", err.value, err.allowed,
                           note="the shortest sparse run, from the largest rewind epoch") from None


def _rewinds_by_width(cfg: ExperimentConfig) -> dict[str, list[int]]:
    """``rewind_epochs_by_width`` keyed by the width as paths spell it (``4`` -> ``"4"``).

    YAML reads ``4:`` as an int and ``"4":`` as a string; both name model width 4.
    """
    widths = {f"{float(w):g}" for w in cfg.model.widths}
    out: dict[str, list[int]] = {}
    for key, ks in cfg.rewind_epochs_by_width.items():
        try:
            width = f"{float(key):g}"
        except (TypeError, ValueError):
            width = None
        if width not in widths or width in out:
            problem = "names a width twice" if width in out else "is not one of model.widths"
            raise ConfigError(
                f"config: 'rewind_epochs_by_width' key {key!r} {problem}; allowed keys: {', '.join(sorted(widths))}"
            )
        out[width] = list(ks)
    return out


def build(cls: type, values: Mapping[str, Any], key: str = "") -> Any:
    """``cls`` (a section dataclass) from a config mapping, nested sections included; defaults
    fill what ``values`` leaves out. Errors name the key from the top of the config."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            value, sub = values[f.name], hints[f.name]
            if dataclasses.is_dataclass(sub):
                value = build(sub, value, f"{key}.{f.name}".lstrip("."))
            kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except BadValue as err:
        raise err.within(key) from None


# ---------------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------------

# old key -> (new key, what it means); a config using an old name stops with this message
RENAMED_KEYS = {
    ("imp", "rewind_epoch"): ("imp.reset_epoch", "the epoch IMP in mode 'reset' resets the surviving weights to"),
}
RENAMED_VALUES = {("imp", "mode"): {"rewind": "reset"}}


def load_schema(path: str | Path) -> dict[str, Any]:
    import yaml

    with open(path) as f:
        return yaml.safe_load(f)


def deep_update(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``new`` into ``base`` recursively (dicts merge, everything else replaces)."""
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def load_config_files(paths: list[str | Path], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config made of exactly these files (later ones win) and ``--config`` overrides.

    Snakemake merges ``--configfile`` on top of the Snakefile's default config.yaml, so a preset
    that leaves a key out would silently inherit the digits default; a preset must stand alone.
    Layers merge key by key, except that ``model.options`` belong to ``model.name``: a layer (a
    later file, or ``--config``) that changes ``model.name`` drops the options of the old model,
    keeping only the options it gives itself.
    """
    cfg: dict[str, Any] = {}
    for path in paths:
        loaded = read_yaml_file(path)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys, found {type(loaded).__name__}")
        merge_layer(cfg, loaded)
    return merge_layer(cfg, _typed(overrides or {}))


def merge_layer(cfg: dict[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    """``deep_update(cfg, layer)``, but a layer that changes ``model.name`` replaces ``model.options``."""
    model, new = cfg.get("model"), layer.get("model")
    if isinstance(model, dict) and isinstance(new, Mapping) and "name" in new and new["name"] != model.get("name"):
        model.pop("options", None)
    return deep_update(cfg, layer)


def read_yaml_file(path: str | Path) -> Any:
    """A YAML file read with :func:`yaml_loader`; a syntax error or a repeated key is a
    :class:`ConfigError` naming the file, line and column."""
    import yaml

    try:
        with open(path) as f:
            return yaml.load(f, Loader=yaml_loader())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config file {path}{where}: {problem} (not valid YAML)") from None


@functools.cache
def yaml_loader() -> type:
    """yaml.SafeLoader that reads ``1e6`` / ``1.0e6`` / ``2E-3`` as floats (YAML 1.2; PyYAML's YAML 1.1
    reads them as strings) and refuses a key repeated in one mapping."""
    import re

    import yaml

    class ConfigLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            lines: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = lines.get(key)
                except TypeError:  # an unhashable key: SafeLoader refuses it itself
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} appears twice in one mapping (first on line {first + 1})",
                        key_node.start_mark)
                lines[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    exponent = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
    ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", exponent, list("-+0123456789."))
    return ConfigLoader


def _typed(value: Any) -> Any:
    """``--config`` values arrive as strings below the top level ('0.02'); read them as YAML."""
    import yaml

    if isinstance(value, Mapping):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if isinstance(value, str):
        try:
            return yaml.load(value, Loader=yaml_loader())
        except yaml.YAMLError:
            return value
    return value


def validate_config(
    config: Mapping[str, Any], schema: Mapping[str, Any], *, jobs_run_here: bool = True
) -> dict[str, Any]:
    """The config with every default filled in (a new dict), or :class:`ConfigError` naming the key.

    ``jobs_run_here``: the jobs run on this machine (Snakemake's local executor), so a CUDA
    ``runtime.device`` must exist here; with a cluster executor the check is left to the jobs.
    """
    import jsonschema

    _check_renamed(config)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.path), list(map(str, e.path))))
    if errors:
        raise ConfigError(_describe(errors[0]))
    config = _integers(copy.deepcopy(dict(config)), schema, schema)
    _check_path_numbers(config)
    cfg = dataclasses.asdict(build(ExperimentConfig, config))
    check_model(cfg["model"], cfg["dataset"]["name"])
    if jobs_run_here:
        check_device(cfg["runtime"]["device"])
    return cfg


def _integers(value: Any, node: Mapping[str, Any], root: Mapping[str, Any]) -> Any:
    """``value`` with every integral float the schema types ``integer`` made an int (JSON Schema
    counts 6.0 as an integer, argparse and paths do not)."""
    while "$ref" in node:
        target: Any = root
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    if node.get("type") == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list) and isinstance(node.get("items"), Mapping):
        return [_integers(v, node["items"], root) for v in value]
    if isinstance(value, dict):
        props, extra = node.get("properties", {}), node.get("additionalProperties")
        return {k: _integers(v, props.get(k, extra if isinstance(extra, Mapping) else {}), root)
                for k, v in value.items()}
    return value


def path_number(x: float) -> str:
    """A number as results paths spell it: ``0.95 -> '0.95'``, ``1.0 -> '1'`` (6 significant digits)."""
    return f"{x:g}"


def _check_path_numbers(config: Mapping[str, Any]) -> None:
    """Sparsities and widths name result folders (``s0.9``, ``w1``): two values must not share a
    folder, and a value must be what its folder says (paths keep 6 significant digits)."""
    lists = {"sparsities": ("s", config["sparsities"]), "model.widths": ("w", config["model"]["widths"])}
    for key, (prefix, values) in lists.items():
        first: dict[str, int] = {}
        for i, v in enumerate(values):
            j = first.setdefault(path_number(v), i)
            if j != i:
                raise ConfigError(
                    f"config: '{key}[{i}]' is {v!r}, which shares the results folder {prefix}{path_number(v)} with "
                    f"'{key}[{j}]' ({values[j]!r}); allowed values: numbers that differ within 6 significant digits")
        for i, v in enumerate(values):
            if float(path_number(v)) != v:
                raise BadValue(f"{key}[{i}]", v, "numbers of at most 6 significant digits",
                               note=f"results paths would round it to {prefix}{path_number(v)}")


def check_model(model: Mapping[str, Any], dataset: str) -> None:
    """``model.options`` are keyword arguments of the model's builder, and the model builds at every
    width for the dataset's inputs (on the meta device: no memory, no initialization)."""
    import inspect

    import torch

    from ticketalign.data import DATASET_SHAPES
    from ticketalign.models import MODELS, build_model

    name, options = model["name"], dict(model["options"])
    builder = MODELS[name]
    allowed = [p for p in inspect.signature(builder).parameters if p not in ("input_shape", "num_classes", "width")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"config: unknown key {', '.join(repr(f'model.options.{k}') for k in unknown)} for model "
                          f"{name!r}; allowed keys: {', '.join(allowed) or 'none (model.options must be empty)'}")
    input_shape, num_classes = DATASET_SHAPES[dataset]

    def build(width: float) -> str | None:
        try:
            with torch.device("meta"):
                build_model(name, input_shape, num_classes, width=width, **options)
        except (TypeError, ValueError, RuntimeError) as err:
            return (str(err).strip().splitlines() or [type(err).__name__])[0]
        return None

    problem = build(1.0)
    if problem is not None:  # not the width's fault
        if options:
            raise BadValue("model.options", options, f"options {builder.__name__} accepts", note=problem)
        raise BadValue("model.name", name, f"a model for dataset {dataset}'s inputs of shape {input_shape}",
                       note=problem)
    for i, width in enumerate(model["widths"]):
        problem = build(width)
        if problem is not None:
            raise BadValue(f"model.widths[{i}]", width, f"widths {name} can be built with", note=problem)


def check_device(device: str) -> None:
    """A CUDA ``runtime.device`` (``cuda``, ``cuda:N``) exists on this machine."""
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise BadValue("runtime.device", device, "auto or cpu",
                       note="this machine has no CUDA device and the jobs run here; a cluster executor "
                            "(e.g. --workflow-profile workflow/profiles/slurm) leaves the check to the jobs")
    count = torch.cuda.device_count()
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        raise BadValue("runtime.device", device, f"auto, cpu, cuda or cuda:0 to cuda:{count - 1}",
                       note=f"this machine has {count} CUDA device(s)")


def _check_renamed(config: Mapping[str, Any]) -> None:
    for (section, key), (new, meaning) in RENAMED_KEYS.items():
        if isinstance(config.get(section), Mapping) and key in config[section]:
            raise ConfigError(f"config: '{section}.{key}' was renamed '{new}' ({meaning}); rename it in your config")
    for (section, key), renames in RENAMED_VALUES.items():
        value = config[section].get(key) if isinstance(config.get(section), Mapping) else None
        if isinstance(value, str) and value in renames:
            raise ConfigError(f"config: '{section}.{key}' is {value!r}, which was renamed {renames[value]!r}; "
                              "change it in your config")


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _describe(err: jsonschema.ValidationError) -> str:
    key = _key(err.absolute_path)
    v = err.validator
    if v == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        unknown = sorted(set(err.instance) - set(allowed))
        where = f"under {key!r}" if err.absolute_path else "at the top level"
        full = [f"{key}.{u}" if err.absolute_path else u for u in unknown]
        return f"config: unknown key {', '.join(repr(u) for u in full)} {where}; allowed keys: {', '.join(allowed)}"
    if v == "required":
        return f"config: {key!r} is missing a required key: {err.message.split(' is a required')[0]}"
    if v == "enum":
        return f"config: {key!r} is {err.instance!r}; allowed values: {', '.join(map(str, err.validator_value))}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"config: {key!r} is {err.instance!r}; allowed values: {_range(err.schema)}"
    if v == "type":
        return f"config: {key!r} is {err.instance!r}; expected type: {err.validator_value}"
    return f"config: {key!r}: {err.message}"


def _range(s: Mapping[str, Any]) -> str:
    lo = f"> {s['exclusiveMinimum']}" if "exclusiveMinimum" in s else (f">= {s['minimum']}" if "minimum" in s else "")
    hi = f"< {s['exclusiveMaximum']}" if "exclusiveMaximum" in s else (f"<= {s['maximum']}" if "maximum" in s else "")
    return " and ".join(x for x in (lo, hi) if x)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ticketalign.config FILE [FILE ...]``: check config files as the workflow does.

    Snakemake parses a ``--configfile`` itself before the workflow starts, and reports a YAML
    syntax error there without file or line; this names both (and every other config error).
    """
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", help="config files, merged in order like snakemake --configfile A B")
    args = p.parse_args(argv)
    schema = load_schema(Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml")
    try:
        cfg = validate_config(load_config_files(args.files), schema)
    except ConfigError as err:
        print(err)
        return 1
    print(f"ok: results go to results/{cfg['name']}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
