"""Shared command-line plumbing for the workflow scripts, so each script stays a few lines.

Argument groups mirror the config file's sections; every hyperparameter and runtime flag, with
its type, default and help, is generated from the section's dataclass in ``ticketalign.config``
(:func:`add_config_args`), so no default is written twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import typing
from collections.abc import Callable
from typing import Any

import torch

from ticketalign import distributed
from ticketalign.artifacts import ArtifactError, load_artifact
from ticketalign.config import ConfigError, Runtime, TrainConfig
from ticketalign.data import Dataset, DatasetError, load_dataset
from ticketalign.gpu import select_device
from ticketalign.guards import DivergenceError, DivergenceGuard, nonfinite_tensors
from ticketalign.masks import Masks, dense_masks, keep_for_sparsity, kept_count, total_count
from ticketalign.models import build_model

#: errors a script reports as one line (its log's last line, which the workflow shows) instead of a traceback
USER_ERRORS = (ArtifactError, ConfigError, DatasetError, DivergenceError)


def parser(description: str | None, *, train: bool = True) -> argparse.ArgumentParser:
    """A script's parser with the data, model, runtime and (if ``train``) hyperparameter flags."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    add_model_args(p)
    if train:
        add_train_args(p)
    add_runtime_args(p)
    return p


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", required=True, help="dataset name (see ticketalign.data.DATASETS)")
    g.add_argument("--data-root", default=os.environ.get("TICKETALIGN_DATA_ROOT"),
                   help="folder holding the dataset files (default: $TICKETALIGN_DATA_ROOT)")
    g.add_argument("--download", type=_parse_bool, metavar="{true,false}",
                   default=_parse_bool(os.environ.get("TICKETALIGN_DOWNLOAD", "false")),
                   help="download the dataset if missing, needs internet (default: $TICKETALIGN_DOWNLOAD)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True, help="architecture name (see ticketalign.models.MODELS)")
    g.add_argument("--width", type=float, default=1.0, help="width multiplier")
    g.add_argument("--model-options", type=json.loads, default={}, help="extra builder options as JSON")


def add_train_args(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (``--weight-decay`` for ``weight_decay``)."""
    add_config_args(p, TrainConfig, "training hyperparameters")


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    """Runtime flags; their defaults come from $TICKETALIGN_RUNTIME (JSON), which the workflow sets
    from the config's ``runtime`` section so that changing it never looks like a new result."""
    env = json.loads(os.environ.get("TICKETALIGN_RUNTIME", "{}"))
    add_config_args(p, Runtime, "runtime (how to run, not what to compute; defaults from $TICKETALIGN_RUNTIME)",
                    defaults=env)


def add_config_args(
    p: argparse.ArgumentParser,
    cls: type,
    title: str,
    *,
    only: tuple[str, ...] | None = None,
    defaults: dict[str, Any] | None = None,
) -> None:
    """One flag per field of the config dataclass ``cls`` (or of the fields in ``only``), its type,
    default and help taken from the field; ``defaults`` override the fields' defaults."""
    g = p.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if only is not None and f.name not in only:
            continue
        flag = "--" + f.name.replace("_", "-")
        typ = hints[f.name]
        default = (defaults or {}).get(f.name, f.default)
        required = default is dataclasses.MISSING
        help_text = f.metadata.get("help", "") + ("" if required else " (default: %(default)s)")
        kwargs: dict[str, Any] = {"help": help_text, "required": required, "default": None if required else default}
        if typ is bool:
            g.add_argument(flag, type=_parse_bool, metavar="{true,false}", **kwargs)
        elif typ in (int, float, str):
            g.add_argument(flag, type=typ, **kwargs)
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no command-line flag for type {typ}")


def from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """The config dataclass ``cls`` from the parsed flags that add_config_args made for it."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{**values, **overrides})


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def train_config(args: argparse.Namespace, **overrides: Any) -> TrainConfig:
    return from_args(TrainConfig, args, **overrides)


def runtime(args: argparse.Namespace) -> tuple[Runtime, torch.device]:
    """Apply thread settings and resolve the device; returns the Runtime for train().

    With ``runtime.gpus`` G > 1 this process claims G GPUs, reruns the script as G processes
    under torchrun and exits with their exit code (:mod:`ticketalign.distributed`); each of
    those processes (or of G SLURM tasks) joins the group here and gets its own GPU."""
    rt = from_args(Runtime, args)
    torch.set_num_threads(max(1, rt.threads))
    if distributed.launched(slurm=rt.gpus > 1):
        device = distributed.setup(rt.device)
        if distributed.world_size() != rt.gpus:
            raise RuntimeError(f"this job runs as {distributed.world_size()} processes but runtime.gpus is {rt.gpus}; "
                               "start as many processes (torchrun --nproc_per_node, srun --ntasks) as runtime.gpus")
    elif rt.gpus > 1:
        env = distributed.claim_gpus(rt.gpus, rt.device, log=log)
        log(f"starting {rt.gpus} processes (DistributedDataParallel) {env or ''}")
        sys.exit(distributed.launch(rt.gpus, env=env))
    else:  # on a multi-GPU machine: a free GPU (or a share of one), claimed
        device = select_device(rt.device, jobs_per_gpu=rt.jobs_per_gpu, log=log)
    log(f"device {device}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    return rt, device


def dataset(args: argparse.Namespace, device: torch.device) -> Dataset:
    return load_dataset(args.dataset, root=args.data_root, download=args.download).to(device)


def model(args: argparse.Namespace, data: Dataset, seed: int | None = None) -> torch.nn.Module:
    return build_model(
        args.model, data.input_shape, data.num_classes, width=args.width, seed=seed, **args.model_options
    )


MODEL_KEYS = ("model", "width", "dataset", "model_options")


def model_meta(args: argparse.Namespace) -> dict[str, Any]:
    """Metadata that identifies an architecture (MODEL_KEYS); every model artifact carries it."""
    return {key: getattr(args, key) for key in MODEL_KEYS}


def load_model_state(
    path: str, args: argparse.Namespace, *, seed: int | None = None, epoch: int | None = None,
    producer: str | None = "train_dense",
) -> dict[str, torch.Tensor]:
    """A saved model state, checked to be of the architecture the arguments describe (and of
    ``seed`` and ``epoch`` when given, as its path says) and to hold only finite numbers."""
    expect = model_meta(args) | ({} if seed is None else {"seed": seed}) | ({} if epoch is None else {"epoch": epoch})
    state, _ = load_artifact(path, "model_state", expect=expect, producer=producer)
    bad = nonfinite_tensors(state)
    if bad:
        raise ArtifactError(path, f"weights are not finite ({', '.join(bad[:3])}): the run that wrote it diverged",
                            producer)
    return state


def load_masks(
    path: str, args: argparse.Namespace, *, seed: int, sparsity: float, producer: str,
    model: torch.nn.Module | None = None, **meta: Any,
) -> tuple[Masks, dict[str, Any]]:
    """A mask of the architecture the arguments describe, for A's ``seed`` and target ``sparsity``
    (and any other ``meta``, as its path says), keeping exactly the number of weights that
    sparsity keeps; with ``model``, one tensor of the right shape per prunable weight."""
    masks, found = load_artifact(
        path, "mask", expect=model_meta(args) | {"seed": seed, "sparsity": sparsity} | meta, producer=producer
    )
    if model is not None:
        want = {n: tuple(m.shape) for n, m in dense_masks(model).items()}
        have = {n: tuple(m.shape) for n, m in masks.items()}
        if have != want:
            raise ArtifactError(path, f"its tensors {have} are not the prunable weights {want} of the model", producer)
    kept, total = kept_count(masks), total_count(masks)
    if kept != keep_for_sparsity(total, sparsity):
        raise ArtifactError(path, f"keeps {kept} of {total} weights, but sparsity {sparsity:g} keeps exactly "
                            f"{keep_for_sparsity(total, sparsity)}", producer)
    return masks, found


def guard(run: str, config_key: str) -> DivergenceGuard:
    """The divergence guard of one training run: ``run`` names it (rule, width, seeds, ...) in the
    error, ``config_key`` is the config section of its recipe."""
    return DivergenceGuard(run=run, config_key=config_key)


def main(fn: Callable[[], None]) -> None:
    """Run a script's ``main``; a known error (a bad artifact, a diverged run, a missing dataset)
    ends it with one line, ``error: ...``, the last line of the job's log, and exit status 1."""
    try:
        fn()
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def log(msg: str) -> None:
    """Progress line with a timestamp, to stderr (Snakemake rules send it to the rule's log);
    in a multi-GPU job only rank 0 logs, every process holding the same numbers."""
    if not distributed.is_main():
        return
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
