"""Multi-process training (DistributedDataParallel, gloo on the CPU) against one process.

Two processes share every global batch; the result must be the one-process result up to float
reordering, the history identical on both ranks, the checkpoint one that a single process
resumes, and only rank 0 may write files.
"""

import dataclasses
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ticketalign.artifacts import load_artifact
from ticketalign.data import InMemoryDataset, load_dataset
from ticketalign.distributed import Replicas
from ticketalign.masks import dense_masks
from ticketalign.models import build_model
from ticketalign.train import Runtime, TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
# digits has 1437 training images: the last batch of 64 holds 29, split 15 + 14 between the
# processes, so the loss weighting of uneven shares is exercised every epoch
CFG = TrainConfig(epochs=3, lr=0.05, batch_size=64)

WORKER = textwrap.dedent(
    """
    import json, sys, torch
    from pathlib import Path
    from ticketalign import distributed
    from ticketalign.artifacts import save_artifact
    from ticketalign.data import load_dataset
    from ticketalign.models import build_model
    from ticketalign.train import Runtime, TrainConfig, train

    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    device = distributed.setup("cpu")
    data = load_dataset("digits")
    model = build_model("mlp", data.input_shape, data.num_classes, seed=0, hidden=32)
    masks = torch.load(out / "masks.pt")
    cfg = TrainConfig(epochs=3, lr=0.05, batch_size=64)
    result = train(model, data, cfg, seed=5, masks=masks, log=None)
    save_artifact(out / "final.pt", "model_state", model.state_dict())  # rank 0 only
    rank = distributed.rank()
    (out / f"history{rank}.json").write_text(json.dumps(result.history))

    class Stop(Exception):
        pass

    def stop(epoch, m):
        raise Stop

    model = build_model("mlp", data.input_shape, data.num_classes, seed=0, hidden=32)
    try:  # interrupted in epoch 3: the checkpoint of epoch 2 stays on disk
        train(model, data, cfg, seed=5, masks=masks, runtime=Runtime(checkpoint_every=1),
              checkpoint=out / "run.ckpt", snapshot_epochs=(3,), on_snapshot=stop, log=None)
    except Stop:
        pass
    print("rank", rank, "world", distributed.world_size(), device, flush=True)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlp(data):
    return build_model("mlp", data.input_shape, data.num_classes, seed=0, hidden=32)


def test_two_processes_train_what_one_process_trains(digits, tmp_path):
    masks = {n: torch.rand(m.shape, generator=torch.Generator().manual_seed(1)) < 0.6
             for n, m in dense_masks(_mlp(digits)).items()}
    torch.save(masks, tmp_path / "masks.pt")
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path)], env={**env, "RANK": str(r),
                                                                                 "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "rank 1 world 2 cpu" in outputs[1]

    one = _mlp(digits)
    ref = train(one, digits, CFG, seed=5, masks=masks, log=None)
    two, _ = load_artifact(tmp_path / "final.pt", "model_state")
    diff = max((two[n] - t).abs().max().item() for n, t in one.state_dict().items())
    print(f"max |param diff| 2 processes vs 1: {diff:.3g}")
    assert diff < 1e-5
    for n, m in masks.items():
        assert (two[n][~m] == 0).all(), n  # the mask holds across processes
    histories = [json.loads((tmp_path / f"history{r}.json").read_text()) for r in range(2)]
    drop = lambda rows: [{k: v for k, v in row.items() if k != "samples_per_s"} for row in rows]  # noqa: E731
    assert drop(histories[0]) == drop(histories[1])  # every rank records the global numbers
    for mine, theirs in zip(ref.history, histories[0]):
        assert theirs["train_loss"] == pytest.approx(mine["train_loss"], rel=1e-5, abs=1e-6)
        assert theirs["train_acc"] == pytest.approx(mine["train_acc"], abs=100 / 1437 + 1e-9)
    print("train loss per epoch, 1 vs 2 processes:",
          [(round(a["train_loss"], 6), round(b["train_loss"], 6)) for a, b in zip(ref.history, histories[0])])
    # only rank 0 wrote: no stray temp files, one checkpoint, which one process resumes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.pt", "history0.json", "history1.json",
                                                          "masks.pt", "run.ckpt"]
    lines = []
    resumed = _mlp(digits)
    train(resumed, digits, CFG, seed=5, masks=masks, runtime=Runtime(checkpoint_every=1),
          checkpoint=tmp_path / "run.ckpt", log=lines.append)
    assert any("resumed" in line and "epoch 2" in line for line in lines)
    for n, t in one.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[n], t, rtol=0, atol=1e-5)


def test_shares_of_a_global_batch_are_its_slices_with_weights_summing_to_the_world():
    x, y = torch.arange(14.0).view(7, 2), torch.arange(7)
    data = InMemoryDataset("toy", x, y, x, y, 7)
    shares = [list(Replicas(r, 3).train_batches(data, 8, seed=0, epoch=0)) for r in range(3)]
    (whole, _), = list(Replicas().train_batches(data, 8, seed=0, epoch=0))
    assert torch.equal(torch.cat([s[0][0][1] for s in shares]), whole[1])  # together: the global batch, in order
    weights = [s[0][1] for s in shares]
    assert sum(weights) == pytest.approx(3) and weights == pytest.approx([9 / 7, 6 / 7, 6 / 7])
    with pytest.raises(RuntimeError, match="last batch of 1 samples cannot be shared by 3 processes"):
        list(Replicas(0, 3).train_batches(data, 3, seed=0, epoch=0))


def test_imagenet_shards_are_cut_before_decoding_and_make_up_the_global_batch(tmp_path):
    from test_device_decode import _write_tree

    _write_tree(tmp_path)
    data = dataclasses.replace(load_dataset("imagenet", root=tmp_path, num_workers=0), image_size=16, resize_size=20)
    for decode in ("workers", "device"):
        d = dataclasses.replace(data, decode=decode)
        whole = list(d.train_batches(5, seed=1, epoch=0))  # 8 images: batches of 5 and 3
        shares = [list(Replicas(r, 2).train_batches(d, 5, seed=1, epoch=0)) for r in range(2)]
        assert [len(b[0][1]) for b in shares[0]] == [3, 2] and [len(b[0][1]) for b in shares[1]] == [2, 1]
        assert [w for _, w in shares[0]] == pytest.approx([6 / 5, 4 / 3])
        for i, (x, y) in enumerate(whole):
            torch.testing.assert_close(torch.cat([shares[r][i][0][0] for r in range(2)]), x)
            assert torch.equal(torch.cat([shares[r][i][0][1] for r in range(2)]), y)
        assert len(list(d.test_batches(3))) == 2  # evaluation is never sharded


def test_the_script_runs_itself_on_two_processes_when_runtime_gpus_is_2(tmp_path):
    """train_dense.py with --gpus 2 --device cpu: the script starts torchrun itself, rank 0 writes."""
    def run(out, gpus):
        cmd = [sys.executable, str(ROOT / "workflow/scripts/train_dense.py"), "--dataset", "digits", "--model", "mlp",
               "--model-options", '{"hidden": 32}', "--epochs", "2", "--lr", "0.05", "--batch-size", "64",
               "--seed", "3", "--snapshot-epochs", "0", "1", "--out-dir", str(out), "--device", "cpu",
               "--gpus", str(gpus)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stderr

    log = run(tmp_path / "two", 2)
    assert "starting 2 processes" in log
    run(tmp_path / "one", 1)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    for name in ("ep0.pt", "ep1.pt", "final.pt"):
        a, _ = load_artifact(tmp_path / "one" / name, "model_state")
        b, _ = load_artifact(tmp_path / "two" / name, "model_state")
        for n, t in a.items():
            torch.testing.assert_close(b[n], t, rtol=0, atol=1e-5, msg=f"{name} {n}")
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["test_acc"] == pytest.approx(json.loads((tmp_path / "one" / "metrics.json").read_text())["test_acc"],
                                                abs=0.2)


def test_slurm_tasks_form_the_group_only_when_the_job_asked_for_several_gpus(monkeypatch):
    from ticketalign import distributed

    monkeypatch.setattr(os, "environ", {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_LOCALID": "1",
                                        "SLURM_JOB_ID": "4242", "SLURM_LAUNCH_NODE_IPADDR": "10.0.0.5"})
    assert not distributed.launched()  # a one-GPU job inside a multi-task allocation stays alone
    assert distributed.launched(slurm=True)
    distributed._env_from_slurm()
    assert {k: os.environ[k] for k in distributed.TORCHRUN_ENV} == {
        "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "24242"}
    monkeypatch.setattr(os, "environ", {"WORLD_SIZE": "1"})
    assert not distributed.launched(slurm=True)
