"""ImageNet decoded on the device (nvJPEG on CUDA; here the same code on the CPU) against the
PIL worker path: same labels, same crop boxes, same flips, pixels equal up to the resampler."""

import dataclasses

import numpy as np
import pytest
import torch

from ticketalign.data import IMAGENET_STD, load_dataset
from ticketalign.data.device_decode import decode_batch, eval_geometry, prepare_batch, train_geometry

STD255 = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255


def _write_tree(root, per_class=4):
    """JPEGs (and one PNG, one grayscale JPEG) whose content shows any geometry mistake: a
    left-to-right ramp in red, top-to-bottom in green, a class-dependent blue, mild noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", 2)):
        for c, name in enumerate(("n01", "n02")):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
                yy, xx = np.mgrid[0:h, 0:w]
                img = np.stack([255 * xx / (w - 1), 255 * yy / (h - 1), np.full((h, w), 60 + 120 * c)], -1)
                img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
                pil = Image.fromarray(img)
                if split == "train" and c == 1 and i == 0:
                    pil.save(root / split / name / f"{i}.png")  # not a JPEG: the per-image fallback
                elif split == "train" and c == 0 and i == 1:
                    pil.convert("L").save(root / split / name / f"{i}.jpg", quality=95)  # grayscale
                else:
                    pil.save(root / split / name / f"{i}.jpg", quality=95)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    _write_tree(root)
    data = load_dataset("imagenet", root=root, num_workers=0)
    small = dataclasses.replace(data, image_size=32, resize_size=40)  # cheap crops, same logic
    return dataclasses.replace(small, decode="workers"), dataclasses.replace(small, decode="device")


def _epoch(data, seed=0, epoch=0, batch=5):
    xs, ys = zip(*data.train_batches(batch, seed=seed, epoch=epoch))
    return torch.cat(xs), torch.cat(ys)


def test_device_path_crops_and_flips_what_the_worker_path_does(tree):
    workers, device = tree
    assert not workers.decodes_on_device and device.decodes_on_device
    for epoch in (0, 1):
        (xw, yw), (xd, yd) = _epoch(workers, epoch=epoch), _epoch(device, epoch=epoch)
        assert torch.equal(yw, yd) and xw.shape == xd.shape == (8, 3, 32, 32)
        diff = ((xw - xd) * STD255).abs()  # in grey levels
        assert diff.mean() < 1.0 and diff.amax() < 4, diff.mean(dim=(1, 2, 3))  # measured: 0.3 and 1
        # the check can fail: mirroring each device image, or shifting its crop, breaks agreement
        assert ((xw - xd.flip(-1)) * STD255).abs().mean() > 10
        assert ((xw[:, :, 4:, :] - xd[:, :, :-4, :]) * STD255).abs().mean() > 5


def test_device_path_evaluates_on_the_same_center_crops(tree):
    workers, device = tree
    (xw, yw), (xd, yd) = [tuple(map(torch.cat, zip(*d.test_batches(3)))) for d in tree]
    assert torch.equal(yw, yd) and yw.tolist() == [0, 0, 1, 1]
    assert ((xw - xd) * STD255).abs().mean() < 1.0
    # augmentation off: training batches take the evaluation geometry on both paths
    (xw, _), (xd, _) = [next(d.train_batches(8, seed=0, epoch=0, augment=False)) for d in tree]
    assert ((xw - xd) * STD255).abs().mean() < 1.0


def test_device_batches_are_a_pure_function_of_seed_and_epoch(tree):
    _, device = tree
    first = _epoch(device, seed=3, epoch=2)
    torch.manual_seed(123)
    again = _epoch(device, seed=3, epoch=2, batch=3)  # another batch size: same samples, same crops
    assert torch.equal(first[1], again[1])
    torch.testing.assert_close(first[0], again[0])
    assert not torch.equal(first[0], _epoch(device, seed=3, epoch=3)[0])


def test_geometry_is_torchvisions_under_the_samples_seed():
    from PIL import Image
    from torchvision import transforms

    image = Image.fromarray(np.arange(50 * 70 * 3, dtype=np.uint8).reshape(50, 70, 3))
    chain = transforms.Compose([transforms.RandomResizedCrop(16), transforms.RandomHorizontalFlip(),
                                transforms.PILToTensor()])
    flips = set()
    tall = Image.fromarray(np.zeros((200, 12, 3), np.uint8))  # no box fits: torchvision's fallback
    torch.manual_seed(7)
    assert train_geometry(200, 12, 7)[0] == transforms.RandomResizedCrop.get_params(tall, (0.08, 1.0), (3 / 4, 4 / 3))
    for seed in range(20):
        box, flip = train_geometry(50, 70, seed)
        flips.add(flip)
        torch.manual_seed(seed)
        expected = chain(image)
        top, left, h, w = box
        crop = transforms.functional.resized_crop(image, top, left, h, w, [16, 16])
        got = transforms.functional.pil_to_tensor(crop)
        assert torch.equal(got.flip(-1) if flip else got, expected), seed
    assert flips == {True, False}
    before = torch.get_rng_state()
    train_geometry(50, 70, 0)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is left alone
    # Resize(40) + CenterCrop(32), as torchvision computes them
    assert eval_geometry(50, 70, 40, 32) == ((40, 56), (4, 12))
    assert eval_geometry(90, 45, 40, 32) == ((80, 40), (24, 4))


def test_decode_batch_reads_jpeg_grayscale_and_png_as_rgb(tmp_path):
    from PIL import Image

    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :15] = (200, 30, 90)
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(rgb).convert("L").save(tmp_path / "b.jpg")
    Image.fromarray(rgb).save(tmp_path / "c.png")
    data = [torch.frombuffer(bytearray((tmp_path / n).read_bytes()), dtype=torch.uint8) for n in ("a.jpg", "b.jpg")]
    images = decode_batch(data, torch.device("cpu"))
    assert [tuple(i.shape) for i in images] == [(3, 20, 30), (3, 20, 30)]
    png = torch.frombuffer(bytearray((tmp_path / "c.png").read_bytes()), dtype=torch.uint8)
    images = decode_batch([data[0], png], torch.device("cpu"))  # a PNG in the batch: one by one
    assert torch.equal(images[1], torch.from_numpy(rgb).permute(2, 0, 1))
    assert (images[0][:, 5, 5].int() - torch.tensor([200, 30, 90])).abs().max() < 8
    out = prepare_batch(images, [0, None], 16, 18)
    assert out.shape == (2, 3, 16, 16) and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 255


def test_decode_setting_is_checked(tree):
    with pytest.raises(ValueError, match="decode is 'gpu'; allowed values: auto, device, workers"):
        dataclasses.replace(tree[0], decode="gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nvjpeg_path_on_cuda_agrees_with_the_worker_path(tree):
    workers, device = tree
    cuda = device.to("cuda")
    assert cuda.decodes_on_device and workers.to("cuda").decode == "workers"
    (xw, yw), (xc, yc) = _epoch(workers), _epoch(cuda)
    assert xc.device.type == "cuda" and torch.equal(yw, yc.cpu())
    assert ((xw - xc.cpu()) * STD255).abs().mean() < 2.0  # nvJPEG's IDCT differs a little from libjpeg's
