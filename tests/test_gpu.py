"""GPU slots: jobs on one machine claim distinct GPUs, wait when all are taken, free them on exit."""

import subprocess
import sys
import textwrap
import threading
import time
from types import SimpleNamespace

import pytest
import torch

from ticketalign import gpu


@pytest.fixture(autouse=True)
def _lock_dir(tmp_path, monkeypatch):
    """Every test gets its own lock folder and gives back whatever it claimed."""
    monkeypatch.setenv(gpu.LOCK_DIR_ENV, str(tmp_path))
    for var in ("CUDA_VISIBLE_DEVICES", *gpu.SCHEDULER_ENV):
        monkeypatch.delenv(var, raising=False)
    yield tmp_path
    for slot in list(gpu._HELD):
        slot.release()


@pytest.fixture
def fake_cuda(monkeypatch):
    """Pretend CUDA is present with ``count`` GPUs; records the set_device calls."""
    state = SimpleNamespace(count=4, uuids=True, current=[])

    def props(i):
        return SimpleNamespace(uuid=f"GPU-fake-{i:04d}" if state.uuids else None)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: state.count)
    monkeypatch.setattr(torch.cuda, "get_device_properties", props)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: state.current.append(i))
    return state


def test_two_claims_get_different_slots_and_release_frees_one():
    keys = ["a", "b"]
    first, second = gpu.try_claim(keys), gpu.try_claim(keys)
    assert (first.index, second.index) == (0, 1)
    assert gpu.try_claim(keys) is None  # both taken
    first.release()
    again = gpu.try_claim(keys)
    assert again is not None and again.index == 0


def test_claim_waits_until_a_gpu_is_freed():
    keys = ["a", "b"]
    held = [gpu.try_claim(keys), gpu.try_claim(keys)]
    threading.Timer(0.3, held[1].release).start()
    messages = []
    t0 = time.monotonic()
    slot = gpu.claim_slot(keys, poll_seconds=0.05, timeout=10, log=messages.append)
    assert slot.index == 1
    assert 0.25 < time.monotonic() - t0 < 5
    assert "waiting" in messages[0]


def test_claim_times_out_with_a_message():
    keys = ["a"]
    gpu.try_claim(keys)
    with pytest.raises(TimeoutError, match="1 GPUs stayed claimed"):
        gpu.claim_slot(keys, poll_seconds=0.01, timeout=0.05)


def test_a_slot_held_by_another_process_is_skipped_and_freed_when_it_exits(_lock_dir):
    holder = textwrap.dedent(
        """
        import sys
        from ticketalign import gpu
        slot = gpu.try_claim(["a", "b"])
        print(slot.index, flush=True)
        sys.stdin.read()  # hold the GPU until the test closes stdin
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "0"
        mine = gpu.try_claim(["a", "b"])
        assert mine.index == 1
        mine.release()
        assert gpu.try_claim(["a"]) is None  # still held by the other process
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert gpu.try_claim(["a"]).index == 0  # the kernel dropped its lock when it exited


def test_select_device_gives_concurrent_jobs_different_gpus(fake_cuda, _lock_dir):
    first = gpu.select_device("auto")
    second = gpu.select_device("cuda")
    assert (first, second) == (torch.device("cuda", 0), torch.device("cuda", 1))
    assert fake_cuda.current == [0, 1]
    assert sorted(p.name for p in _lock_dir.iterdir()) == [
        "ticketalign-gpu-GPU-fake-0000.lock",
        "ticketalign-gpu-GPU-fake-0001.lock",
    ]
    gpu._HELD[0].release()
    assert gpu.select_device("auto") == torch.device("cuda", 0)


def test_nothing_is_locked_when_the_choice_is_not_ours(fake_cuda, _lock_dir):
    assert gpu.select_device("cpu") == torch.device("cpu")
    assert gpu.select_device("cuda:3") == torch.device("cuda", 3)  # the user named a GPU
    fake_cuda.count = 1  # e.g. SLURM gave this job one GPU
    assert gpu.select_device("auto") == torch.device("cuda", 0)
    assert list(_lock_dir.iterdir()) == [] and fake_cuda.current == []


def test_without_uuids_a_scheduler_allocation_is_not_locked_by_index(fake_cuda, monkeypatch, _lock_dir):
    fake_cuda.uuids = False
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    assert gpu.select_device("auto") == torch.device("cuda", 0)
    assert list(_lock_dir.iterdir()) == []
    monkeypatch.delenv("SLURM_JOB_ID")  # set by hand: the entries name the physical GPUs
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpu.select_device("auto") == torch.device("cuda", 0)
    assert gpu.select_device("auto") == torch.device("cuda", 1)
    assert sorted(p.name for p in _lock_dir.iterdir()) == ["ticketalign-gpu-2.lock", "ticketalign-gpu-3.lock"]


def test_jobs_per_gpu_spreads_jobs_before_sharing_a_gpu(fake_cuda, _lock_dir):
    fake_cuda.count = 2
    devices = [gpu.select_device("auto", jobs_per_gpu=2) for _ in range(4)]
    assert devices == [torch.device("cuda", i) for i in (0, 1, 0, 1)]  # every GPU gets a job before any gets two
    assert [(s.index, s.share) for s in gpu._HELD] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert sorted(p.name for p in _lock_dir.iterdir()) == [
        "ticketalign-gpu-GPU-fake-0000.lock",
        "ticketalign-gpu-GPU-fake-0000.slot1.lock",
        "ticketalign-gpu-GPU-fake-0001.lock",
        "ticketalign-gpu-GPU-fake-0001.slot1.lock",
    ]
    with pytest.raises(TimeoutError, match=r"all 2 GPUs x 2 slots stayed claimed"):
        gpu.select_device("auto", jobs_per_gpu=2, poll_seconds=0.01, timeout=0.05)  # a fifth job waits
    gpu._HELD[1].release()  # GPU 1's first job ends: the next job goes there
    assert gpu.select_device("auto", jobs_per_gpu=2) == torch.device("cuda", 1)


def test_one_job_per_gpu_is_the_default_and_uses_the_same_locks_as_before(fake_cuda, _lock_dir):
    fake_cuda.count = 2
    assert [gpu.select_device("auto") for _ in range(2)] == [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert gpu.try_claim(["GPU-fake-0000", "GPU-fake-0001"]) is None
    with pytest.raises(ValueError, match="at least 1"):
        gpu.try_claim(["a"], per_gpu=0)


def test_jobs_per_gpu_slots_are_shared_with_other_processes(_lock_dir):
    """Another process holding one GPU's first slot: this one takes the other GPU, then the second slot."""
    holder = "import sys; from ticketalign import gpu; s = gpu.try_claim(['a', 'b'], per_gpu=2); " \
             "print(s.index, s.share, flush=True); sys.stdin.read()"
    proc = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().split() == ["0", "0"]
        mine = [gpu.try_claim(["a", "b"], per_gpu=2) for _ in range(3)]
        assert [(s.index, s.share) for s in mine[:2]] == [(1, 0), (0, 1)] and mine[2].share == 1
        assert gpu.try_claim(["a", "b"], per_gpu=2) is None
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert (s := gpu.try_claim(["a", "b"], per_gpu=2)) is not None and (s.index, s.share) == (0, 0)


def test_a_multi_gpu_job_claims_whole_gpus_all_at_once(fake_cuda, _lock_dir):
    from ticketalign.distributed import claim_gpus

    assert claim_gpus(2, "cpu") == {} and claim_gpus(2, "cuda:1") == {}  # nothing to choose
    first = claim_gpus(2, "auto")
    assert first == {"CUDA_VISIBLE_DEVICES": "GPU-fake-0000,GPU-fake-0001"}
    assert claim_gpus(2, "auto") == {"CUDA_VISIBLE_DEVICES": "GPU-fake-0002,GPU-fake-0003"}
    # all four taken; one frees up, then another: the claim waits for two, holding none meanwhile
    held = {s.key: s for s in gpu._HELD}
    threading.Timer(0.2, held["GPU-fake-0001"].release).start()
    threading.Timer(0.4, held["GPU-fake-0003"].release).start()
    messages = []
    t0 = time.monotonic()
    assert claim_gpus(2, "auto", log=messages.append, poll_seconds=0.05) == {
        "CUDA_VISIBLE_DEVICES": "GPU-fake-0001,GPU-fake-0003"}
    assert time.monotonic() - t0 > 0.35 and "waiting for 2 free GPUs of 4" in messages[0]
    with pytest.raises(RuntimeError, match="only 4 GPUs are visible"):
        claim_gpus(5, "auto")
    fake_cuda.count = 2
    assert claim_gpus(2, "auto") == {}  # exactly the job's GPUs visible: a scheduler chose them


def test_several_gpus_per_job_and_several_jobs_per_gpu_do_not_mix():
    from ticketalign.config import ConfigError, Runtime

    assert Runtime(gpus=2).jobs_per_gpu == 1 and Runtime(jobs_per_gpu=4).gpus == 1
    with pytest.raises(ConfigError, match="'jobs_per_gpu' is 2; allowed values: 1 when gpus > 1"):
        Runtime(gpus=2, jobs_per_gpu=2)
