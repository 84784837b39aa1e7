"""Datasets: real on-disk formats in miniature, normalization, errors, and on-device augmentation."""

import gzip
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dataset_files import idx_bytes, write_cifar, write_idx_set

from ticketalign import data as D
from ticketalign.data import DatasetError, InMemoryDataset, cifar, idx, load_dataset
from ticketalign.seeding import derive_seed


def _unnormalize(x, mean, std):
    """Model inputs back to raw 0..255 pixel values (exact integers if normalization was right)."""
    return (x * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)) * 255


# ------------------------------------------------------------------------------------------
# CIFAR
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("which", "py2", "mean", "std", "classes"),
    [
        ("cifar10", True, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 10),
        ("cifar100", False, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 100),
    ],
)
def test_cifar_round_trip_and_normalization(tmp_path, which, py2, mean, std, classes):
    written = write_cifar(tmp_path, which, py2=py2)
    data = load_dataset(which, root=tmp_path)
    n_train = len(written["train_y"])
    assert data.name == which and data.num_classes == classes and data.input_shape == (3, 32, 32)
    assert data.num_train == n_train and data.augment
    assert data.x_train.dtype == torch.uint8 and data.x_train.shape == (n_train, 3, 32, 32)
    assert data.y_train.dtype == torch.int64
    np.testing.assert_array_equal(data.x_train.numpy(), written["train_x"])
    np.testing.assert_array_equal(data.y_train.numpy(), written["train_y"])
    np.testing.assert_array_equal(data.x_test.numpy(), written["test_x"])
    np.testing.assert_array_equal(data.y_test.numpy(), written["test_y"])
    assert len(data.classes) == classes and data.classes[1] in ("c1", "f1")
    torch.testing.assert_close(data.mean.flatten(), torch.tensor(mean))
    torch.testing.assert_close(data.std.flatten(), torch.tensor(std))
    x, y = next(data.test_batches(100))
    assert x.dtype == torch.float32 and x.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(y.numpy(), written["test_y"])
    expected = (torch.from_numpy(written["test_x"]).float() / 255 - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(
        std
    ).view(-1, 1, 1)
    torch.testing.assert_close(x, expected)


def test_cifar_missing_incomplete_and_corrupt(tmp_path):
    with pytest.raises(DatasetError, match="dataset.download: true") as err:
        load_dataset("cifar10", root=tmp_path)
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value)
    write_cifar(tmp_path, "cifar10")
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="incomplete: missing data_batch_3") as err:
        load_dataset("cifar10", root=tmp_path)
    assert str(folder) in str(err.value)
    (folder / "data_batch_3").write_bytes((folder / "data_batch_2").read_bytes()[:100])
    with pytest.raises(DatasetError, match="data_batch_3 is not a readable CIFAR pickle"):
        load_dataset("cifar10", root=tmp_path)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DatasetError, match=r"uint8 of shape \(N, 3072\)"):
        load_dataset("cifar10", root=tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset 'cifar1000'"):
        load_dataset("cifar1000", root=tmp_path)


def test_download_goes_through_torchvision_only_when_asked(tmp_path, monkeypatch):
    calls = []

    def fake_download(cls_name, root):
        calls.append((cls_name, root))
        write_cifar(root, "cifar100")

    monkeypatch.setattr(cifar, "torchvision_download", fake_download)
    with pytest.raises(DatasetError):
        load_dataset("cifar100", root=tmp_path, download=False)
    assert not calls
    data = load_dataset("cifar100", root=tmp_path, download=True)
    assert calls == [("CIFAR100", tmp_path)] and data.num_train == 15
    load_dataset("cifar100", root=tmp_path, download=True)  # present: no second download
    assert len(calls) == 1


def test_importing_and_loading_small_datasets_does_not_import_torchvision(tmp_path):
    write_cifar(tmp_path, "cifar10")
    write_idx_set(tmp_path / "MNIST" / "raw")
    code = textwrap.dedent(f"""
        import sys
        import ticketalign.data as d
        d.load_dataset("cifar10", root={str(tmp_path)!r})
        d.load_dataset("mnist", root={str(tmp_path)!r})
        bad = sorted(m for m in sys.modules if m.split(".")[0] == "torchvision")
        assert not bad, bad
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "subdir", "gz", "mean", "std"),
    [
        ("mnist", "MNIST/raw", False, 0.1307, 0.3081),  # torchvision keeps the extracted files
        ("mnist", "", True, 0.1307, 0.3081),
        ("fashion_mnist", "FashionMNIST/raw", True, 0.2860, 0.3530),
        ("fashion_mnist", "", True, 0.2860, 0.3530),  # as Debian installs them: .gz files in a folder
    ],
)
def test_idx_layouts_round_trip(tmp_path, name, subdir, gz, mean, std):
    arrays = write_idx_set(tmp_path / subdir if subdir else tmp_path, gz=gz)
    data = load_dataset(name, root=tmp_path)
    assert data.name == name and data.num_classes == 10 and data.input_shape == (1, 28, 28)
    assert data.x_train.dtype == torch.uint8 and not data.augment
    np.testing.assert_array_equal(data.x_train[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(data.y_train.numpy(), arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(data.x_test[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(data.y_test.numpy(), arrays["t10k-labels-idx1-ubyte"])
    x, _ = next(data.test_batches(64))
    torch.testing.assert_close(x, (data.x_test.float() / 255 - mean) / std)
    # no augmentation: training batches are exactly the stored images, in a seeded order
    xs, ys = zip(*data.train_batches(5, seed=1, epoch=0))
    order = torch.randperm(data.num_train, generator=torch.Generator().manual_seed(derive_seed(1, 0)))
    torch.testing.assert_close(torch.cat(xs), (data.x_train[order].float() / 255 - mean) / std)
    assert torch.equal(torch.cat(ys), data.y_train[order])


def test_fashion_mnist_falls_back_to_the_debian_path(tmp_path, monkeypatch):
    debian = tmp_path / "usr_share_datasets_fashion-mnist"
    arrays = write_idx_set(debian, n_train=7)
    monkeypatch.setattr(idx, "DEBIAN_FASHION_MNIST", debian)
    data = load_dataset("fashion_mnist", root=tmp_path / "empty")
    np.testing.assert_array_equal(data.y_train.numpy(), arrays["train-labels-idx1-ubyte"])
    with pytest.raises(DatasetError, match="MNIST not found") as err:  # mnist has no fallback
        load_dataset("mnist", root=tmp_path / "empty")
    assert str(tmp_path / "empty" / "MNIST" / "raw") in str(err.value)
    monkeypatch.setattr(idx, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist") as err:
        load_dataset("fashion_mnist", root=tmp_path / "empty")
    assert str(tmp_path / "nowhere") in str(err.value)


def test_idx_incomplete_truncated_or_wrong_file(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    write_idx_set(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="lacks t10k-labels-idx1-ubyte") as err:
        load_dataset("mnist", root=tmp_path)
    assert str(folder) in str(err.value)
    images = folder / "t10k-images-idx3-ubyte.gz"
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(images.read_bytes())  # images where labels belong
    with pytest.raises(DatasetError, match="magic number '00000803', expected 0x00000801"):
        load_dataset("mnist", root=tmp_path)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.arange(5))[:-2]))
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz is truncated"):
        load_dataset("mnist", root=tmp_path)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.arange(5)))[:-6])
    with pytest.raises(DatasetError, match="could not be read"):
        load_dataset("mnist", root=tmp_path)


@pytest.mark.skipif(not D.DEBIAN_FASHION_MNIST.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_debian(tmp_path):
    data = load_dataset("fashion_mnist", root=tmp_path)
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert data.y_train.bincount().tolist() == [6000] * 10 and data.y_test.bincount().tolist() == [1000] * 10


# ------------------------------------------------------------------------------------------
# augmentation on the device
# ------------------------------------------------------------------------------------------


def _index_dataset(n=300, channels=3, size=10, device="cpu"):
    """Images of random nonzero pixels; each label is the image's own index, to find its source."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (n, channels, size, size), generator=gen, dtype=torch.uint8)
    return InMemoryDataset("idx", x, torch.arange(n), x[:4], torch.arange(4), num_classes=n, augment=True).to(device)


def _match_crop_flip(data, out, y, pad=4):
    """For every output image, the (flip, dy, dx) with which it is the zero-padded source's crop."""
    src = F.pad(data.x_train[y].cpu(), (pad, pad, pad, pad))
    size = out.shape[-1]
    hits = torch.zeros(len(y), dtype=torch.long)
    found = torch.full((len(y), 3), -1)
    for flip in (0, 1):
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                crop = src[:, :, dy : dy + size, dx : dx + size]
                crop = crop.flip(-1) if flip else crop
                eq = (crop == out).flatten(1).all(1)
                hits += eq
                found[eq] = torch.tensor([flip, dy - pad, dx - pad])
    return hits, found


def test_random_crop_pads_with_zeros_shifts_at_most_4_and_flips_half():
    data = _index_dataset()
    xs, ys = zip(*data.train_batches(64, seed=5, epoch=3))
    out = (torch.cat(xs) * 255).round().to(torch.uint8)  # mean None: x = raw / 255
    hits, found = _match_crop_flip(data, out, torch.cat(ys))
    assert (hits == 1).all()  # each output is exactly one zero-padded shift (|shift| <= 4), maybe flipped
    flips, shifts = found[:, 0], found[:, 1:]
    assert 0.4 < flips.float().mean() < 0.6
    assert shifts.min() == -4 and shifts.max() == 4 and (shifts == 0).all(1).sum() < 20
    assert sorted(torch.cat(ys).tolist()) == list(range(300))


def test_cifar_augmented_batches_are_crops_of_zero_padded_rawimages(tmp_path):
    write_cifar(tmp_path, "cifar10", n_batch=20)
    data = load_dataset("cifar10", root=tmp_path)
    data = InMemoryDataset(**{**data.__dict__, "x_train": torch.full_like(data.x_train, 200)})
    raw = torch.cat([x for x, _ in data.train_batches(32, seed=0, epoch=0)])
    raw = _unnormalize(raw, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    torch.testing.assert_close(raw, raw.round(), atol=1e-3, rtol=0)  # normalization is exactly undone
    raw = raw.round()
    assert set(raw.unique().tolist()) == {0.0, 200.0}  # padding is zero *before* normalization
    inside = raw[:, 0] != 0
    rows, cols = inside.any(2), inside.any(1)
    assert torch.equal(inside, rows[:, :, None] & cols[:, None, :])  # the image part is one rectangle
    assert rows.sum(1).min() >= 28 and cols.sum(1).min() >= 28  # of which at most 4 px are cut off
    assert (rows.sum(1) < 32).any() and (cols.sum(1) < 32).any()


def test_order_and_augmentation_depend_only_on_seed_and_epoch(tmp_path):
    write_cifar(tmp_path, "cifar10", n_batch=8)
    a, b = load_dataset("cifar10", root=tmp_path), load_dataset("cifar10", root=tmp_path)

    def epoch(d, seed, ep):
        xs, ys = zip(*d.train_batches(16, seed=seed, epoch=ep))
        return torch.cat(xs), torch.cat(ys)

    torch.manual_seed(123)  # the global RNG plays no part
    first = epoch(a, 0, 1)
    torch.manual_seed(456)
    again = epoch(b, 0, 1)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    for other in (epoch(a, 0, 2), epoch(a, 1, 1)):
        assert not torch.equal(first[0], other[0])
    same_order = torch.cat([y for _, y in a.train_batches(16, seed=0, epoch=1, augment=False)])
    assert torch.equal(same_order, first[1])  # augmentation draws come after the order's
    # test batches are never augmented
    x_test = torch.cat([x for x, _ in a.test_batches(3)])
    torch.testing.assert_close(x_test, a.prepare(a.x_test))
    torch.testing.assert_close(x_test, torch.cat([x for x, _ in a.test_batches(100)]))


def test_augment_override_and_validation():
    data = _index_dataset(n=20)
    xs, ys = zip(*data.train_batches(8, seed=0, epoch=0, augment=False))
    assert torch.equal((torch.cat(xs) * 255).round().to(torch.uint8), data.x_train[torch.cat(ys)])
    with pytest.raises(ValueError, match="augmentation needs images"):
        InMemoryDataset("flat", torch.zeros(3, 5), torch.zeros(3), torch.zeros(1, 5), torch.zeros(1), 2, augment=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_equal_cpu_batches(tmp_path):
    write_cifar(tmp_path, "cifar10", n_batch=40)
    cpu = load_dataset("cifar10", root=tmp_path)
    gpu = cpu.to("cuda")
    assert gpu.x_train.is_cuda and gpu.x_train.dtype == torch.uint8
    for (xc, yc), (xg, yg) in zip(cpu.train_batches(50, seed=2, epoch=7), gpu.train_batches(50, seed=2, epoch=7)):
        assert xg.is_cuda and torch.equal(yc, yg.cpu())
        torch.testing.assert_close(xc, xg.cpu(), atol=1e-6, rtol=0)
    data = _index_dataset(device="cuda")
    xs, ys = zip(*data.train_batches(64, seed=5, epoch=3))
    hits, _ = _match_crop_flip(data, (torch.cat(xs) * 255).round().to(torch.uint8).cpu(), torch.cat(ys).cpu())
    assert (hits == 1).all()


# ------------------------------------------------------------------------------------------
# digits, the training loop, ImageNet
# ------------------------------------------------------------------------------------------


def test_digits_still_1400_397_stratified(digits):
    assert (digits.num_train, digits.num_test) == (1400, 397) and digits.input_shape == (64,)
    assert digits.x_train.dtype == torch.float32 and not digits.augment
    total = torch.cat([digits.y_train, digits.y_test]).bincount()
    expected = total * 397 / total.sum()
    assert (digits.y_test.bincount() - expected).abs().max() < 1
    torch.testing.assert_close(digits.x_train.mean(0), torch.zeros(64), atol=1e-5, rtol=0)


def test_train_loop_runs_on_augmented_cifar(tmp_path):
    from ticketalign.models import build_model
    from ticketalign.train import TrainConfig, train

    write_cifar(tmp_path, "cifar10", n_batch=6)
    data = load_dataset("cifar10", root=tmp_path)
    model = build_model("mlp", data.input_shape, data.num_classes, seed=0, hidden=8)
    result = train(model, data, TrainConfig(epochs=2, lr=0.01, batch_size=8), seed=0, log=None)
    assert [r["epoch"] for r in result.history] == [1, 2] and "test_acc" in result.final


def _write_image_folder(root, classes=("n01", "n02"), per_class=3, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", 2)):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(count):
                h, w = int(rng.integers(30, 70)), int(rng.integers(30, 70))
                img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
                img.save(root / split / c / f"{i}.{'png' if i % 2 else 'jpg'}")


def test_imagenet_folders_stream_seeded_batches(tmp_path):
    from PIL import Image

    _write_image_folder(tmp_path)
    Image.new("RGB", (300, 280), (255, 0, 128)).save(tmp_path / "val" / "n02" / "solid.png")
    data = load_dataset("imagenet", root=tmp_path, num_workers=0)
    assert data.input_shape == (3, 224, 224) and data.num_classes == 2 and data.classes == ("n01", "n02")
    assert (data.num_train, data.num_test) == (6, 5) and data.to("cpu").device == torch.device("cpu")

    def epoch(d, seed, ep):
        xs, ys = zip(*d.train_batches(4, seed=seed, epoch=ep))
        return torch.cat(xs), torch.cat(ys)

    first = epoch(data, 0, 0)
    assert first[0].shape == (6, 3, 224, 224) and first[0].dtype == torch.float32
    assert sorted(first[1].tolist()) == [0, 0, 0, 1, 1, 1]
    torch.manual_seed(99)
    again = epoch(data, 0, 0)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], epoch(data, 0, 1)[0])
    x_val, y_val = zip(*data.test_batches(2))
    x_val, y_val = torch.cat(x_val), torch.cat(y_val)
    assert y_val.tolist() == [0, 0, 1, 1, 1]
    solid = (torch.tensor([255.0, 0.0, 128.0]) / 255 - torch.tensor(D.IMAGENET_MEAN)) / torch.tensor(D.IMAGENET_STD)
    torch.testing.assert_close(x_val[4], solid.view(3, 1, 1).expand(3, 224, 224))
    assert torch.equal(x_val, torch.cat([x for x, _ in data.test_batches(5)]))
    # augmentation is seeded per sample: worker processes give the same batches
    workers = load_dataset("imagenet", root=tmp_path, num_workers=2)
    assert torch.equal(epoch(workers, 0, 0)[0], first[0])


def test_imagenet_missing_or_mismatched(tmp_path):
    with pytest.raises(DatasetError, match="cannot be downloaded automatically") as err:
        load_dataset("imagenet", root=tmp_path, download=True)
    assert str(tmp_path / "train") in str(err.value)
    _write_image_folder(tmp_path)
    (tmp_path / "val" / "n03").mkdir()
    (tmp_path / "val" / "n03" / "x.png").write_bytes((tmp_path / "val" / "n01" / "1.png").read_bytes())
    with pytest.raises(DatasetError, match=r"only in val: \['n03'\]"):
        load_dataset("imagenet", root=tmp_path, num_workers=0)
    (tmp_path / "val" / "n03" / "x.png").unlink()
    with pytest.raises(DatasetError, match="incomplete") as err:
        load_dataset("imagenet", root=tmp_path, num_workers=0)
    assert str(tmp_path / "val") in str(err.value)


def test_both_dataset_kinds_satisfy_the_protocol(tmp_path, digits):
    _write_image_folder(tmp_path)
    imagenet = load_dataset("imagenet", root=tmp_path, num_workers=0)
    for data in (digits, digits.to("cpu"), imagenet, imagenet.to("cpu")):
        assert isinstance(data, D.Dataset)
    assert not isinstance(digits.x_train, D.Dataset)


def test_dataset_shapes_known_without_reading_are_the_loaders(tmp_path, digits):
    """The config check builds models from DATASET_SHAPES; they must be what the loaders deliver."""
    write_cifar(tmp_path, "cifar10")
    write_cifar(tmp_path, "cifar100")
    write_idx_set(tmp_path / "MNIST" / "raw")
    write_idx_set(tmp_path / "FashionMNIST" / "raw")
    assert set(D.DATASET_SHAPES) == set(D.DATASETS)
    loaded = {"digits": digits} | {n: load_dataset(n, root=tmp_path) for n in ("cifar10", "cifar100", "mnist",
                                                                             "fashion_mnist")}
    for name, data in loaded.items():
        assert D.DATASET_SHAPES[name] == (tuple(data.input_shape), data.num_classes), name
    assert D.DATASET_SHAPES["imagenet"][0] == (3, 224, 224)  # ImageFolderDataset's default image size
