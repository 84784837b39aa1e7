"""Writers for the real on-disk dataset formats, in miniature, for tests that load them."""

import gzip
import pickle
import struct

import numpy as np


def py2_str(b: bytes) -> bytes:
    """A Python 2 ``str`` as protocol-2 pickles it (SHORT_BINSTRING / BINSTRING)."""
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b


def py2_int(i: int) -> bytes:
    return b"K" + bytes([i]) if 0 <= i < 256 else b"J" + struct.pack("<i", i)


def py2_pickle(obj) -> bytes:
    """Protocol-2 pickle as Python 2 + numpy 1.x wrote the CIFAR "python version" files:
    byte-string keys, int lists, numpy arrays via numpy.core.multiarray._reconstruct."""

    def enc(o) -> bytes:
        if isinstance(o, bytes):
            return py2_str(o)
        if isinstance(o, int):
            return py2_int(o)
        if isinstance(o, list):
            return b"](" + b"".join(enc(v) for v in o) + b"e"
        if isinstance(o, dict):
            return b"}(" + b"".join(enc(k) + enc(v) for k, v in o.items()) + b"u"
        if isinstance(o, np.ndarray):
            assert o.dtype == np.uint8
            shape = b"(" + b"".join(py2_int(s) for s in o.shape) + b"t"
            dtype = b"cnumpy\ndtype\n" + py2_str(b"u1") + b"K\x00K\x01\x87R" + b"(K\x03" + py2_str(b"|")
            dtype += b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
            head = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + py2_str(b"b") + b"\x87R"
            return head + b"(K\x01" + shape + dtype + b"\x89" + py2_str(o.tobytes()) + b"tb"
        raise TypeError(type(o))

    return b"\x80\x02" + enc(obj) + b"."


def images(rng, n, channels=3, size=32):
    return rng.integers(0, 256, size=(n, channels, size, size), dtype=np.uint8)


def write_cifar(root, which="cifar10", py2=True, n_batch=3, n_test=4, seed=0):
    """A miniature CIFAR in torchvision's extracted layout; returns the arrays written."""
    rng = np.random.default_rng(seed)
    dump = py2_pickle if py2 else (lambda o: pickle.dumps(o, protocol=2))
    if which == "cifar10":
        folder, classes, label_key = root / "cifar-10-batches-py", 10, b"labels"
        train_files, test_file = [f"data_batch_{i}" for i in range(1, 6)], "test_batch"
        meta_file, meta = "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]}
    else:
        folder, classes, label_key = root / "cifar-100-python", 100, b"fine_labels"
        train_files, test_file = ["train"], "test"
        meta_file, meta = "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)]}
    folder.mkdir(parents=True)
    out = {"train_x": [], "train_y": []}
    for name in [*train_files, test_file]:
        n = n_test if name == test_file else n_batch * (5 if which == "cifar100" else 1)
        x, y = images(rng, n), rng.integers(0, classes, n)
        batch = {b"batch_label": b"batch", b"data": x.reshape(n, -1), label_key: [int(v) for v in y]}
        if which == "cifar100":
            batch[b"coarse_labels"] = [int(v) // 5 for v in y]
        (folder / name).write_bytes(dump(batch))
        if name == test_file:
            out["test_x"], out["test_y"] = x, y
        else:
            out["train_x"].append(x)
            out["train_y"].append(y)
    (folder / meta_file).write_bytes(dump(meta))
    out["train_x"], out["train_y"] = np.concatenate(out["train_x"]), np.concatenate(out["train_y"])
    return out


def idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def write_idx_set(folder, gz=True, n_train=12, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    for stem, arr in arrays.items():
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(arr), compresslevel=1))
        else:
            (folder / stem).write_bytes(idx_bytes(arr))
    return arrays
