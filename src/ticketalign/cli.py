"""Shared command-line plumbing for the workflow scripts, so each script stays a few lines.

Argument groups mirror the config file's sections; the training flags are generated from
:class:`~ticketalign.train.TrainConfig`, so the dataclass is the single list of hyperparameters.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any

import torch

from ticketalign.artifacts import load_artifact
from ticketalign.data import Dataset, load_dataset
from ticketalign.gpu import select_device
from ticketalign.models import build_model
from ticketalign.train import Runtime, TrainConfig


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
    g = p.add_argument_group("training hyperparameters")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            g.add_argument(flag, type=_parse_bool, default=f.default, metavar="{true,false}")
        else:
            typ = {"int": int, "float": float}.get(str(f.type), float)
            required = f.default is dataclasses.MISSING
            g.add_argument(flag, type=typ, required=required, default=None if required else f.default)


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    """Runtime flags; their defaults come from $TICKETALIGN_RUNTIME (JSON), which the workflow sets
    from the config's ``runtime`` section so that changing it never looks like a new result."""
    env = json.loads(os.environ.get("TICKETALIGN_RUNTIME", "{}"))
    d = {**dataclasses.asdict(Runtime()), "device": "auto", "threads": 1, **env}
    g = p.add_argument_group("runtime (how to run, not what to compute; defaults from $TICKETALIGN_RUNTIME)")
    g.add_argument("--device", default=d["device"], help="auto (CUDA when present), cpu, cuda, cuda:N")
    g.add_argument("--threads", type=int, default=d["threads"], help="CPU threads for torch")
    g.add_argument("--amp", type=_parse_bool, default=d["amp"], metavar="{true,false}", help="bf16 autocast on CUDA")
    g.add_argument("--channels-last", type=_parse_bool, default=d["channels_last"], metavar="{true,false}")
    g.add_argument("--compile", type=_parse_bool, default=d["compile"], metavar="{true,false}")
    g.add_argument("--eval-every", type=int, default=d["eval_every"], help="evaluate on the test split every N epochs")
    g.add_argument("--checkpoint-every", type=int, default=d["checkpoint_every"],
                   help="write a resumable checkpoint every N epochs")


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def train_config(args: argparse.Namespace, **overrides: Any) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{**values, **overrides})


def runtime(args: argparse.Namespace) -> tuple[Runtime, torch.device]:
    """Apply thread settings and resolve the device; returns the Runtime for train()."""
    torch.set_num_threads(max(1, args.threads))
    device = select_device(args.device, log=log)  # on a multi-GPU machine: a free GPU, claimed
    log(f"device {device}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    rt = Runtime(
        amp=args.amp,
        channels_last=args.channels_last,
        compile=args.compile,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
    )
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


def load_model_state(path: str, args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """A saved model state, checked to be of the architecture the arguments describe."""
    state, _ = load_artifact(path, "model_state", expect=model_meta(args))
    return state


def log(msg: str) -> None:
    """Progress line with a timestamp, to stderr (Snakemake rules send it to the rule's log)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
