"""Normalisation as data, crop/flip and shift augmentation, and DataLoader-free batching."""
import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from binarynet import data
from binarynet.data import (ImageDataset, batches, crop_flip, normalization, random_crop_flip, random_shift,
                            to_float)

CIFAR_CLASSES = data.info("cifar10").classes


def cifar_like(n: int, seed: int = 0) -> ImageDataset:
    """uint8 images; label i for image i, so that batches reveal the order they were drawn in."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return ImageDataset("cifar10", "train", images, torch.arange(n), CIFAR_CLASSES)


# ---------------------------------------------------------------- normalisation


def test_normalization_values():
    assert normalization("mnist") == ((2 / 255,), (-1.0,))
    assert normalization("cifar10", "paper") == ((2 / 255,) * 3, (-1.0,) * 3)
    scale, offset = normalization("mnist", "meanstd")
    assert scale == pytest.approx((1 / (255 * 0.3081),)) and offset == pytest.approx((-0.1307 / 0.3081,))
    scale, offset = normalization("cifar10", "meanstd")
    assert scale[2] == pytest.approx(1 / (255 * 0.2616)) and offset[0] == pytest.approx(-0.4914 / 0.2470)
    with pytest.raises(ValueError, match="unknown normalization 'zca'"):
        normalization("mnist", "zca")


def test_to_float_paper_and_meanstd():
    u8 = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    x = to_float(u8, *normalization("mnist"))
    assert x.dtype == torch.float32 and x.shape == (1, 1, 16, 16)
    # the float32 nearest to 2x/255 - 1 (as numpy computes it in float64), ends exactly +-1
    expected = (2 * np.arange(256) / 255 - 1).astype(np.float32)
    np.testing.assert_array_equal(x.flatten().numpy(), expected)
    assert x.min() == -1.0 and x.max() == 1.0
    rgb = torch.tensor([10, 100, 200], dtype=torch.uint8).view(1, 3, 1, 1)
    x = to_float(rgb, *normalization("cifar10", "meanstd"))
    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2470, 0.2435, 0.2616])
    np.testing.assert_allclose(x.flatten().numpy(), (np.array([10, 100, 200]) / 255 - mean) / std,
                               rtol=0, atol=1e-6)


def test_to_float_rejects_bad_input():
    with pytest.raises(TypeError, match="uint8 images"):
        to_float(torch.zeros(1, 1, 2, 2), (1.0,), (0.0,))
    with pytest.raises(ValueError, match="3 channels but 1 scales"):
        to_float(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), (1.0,), (0.0,))


# ---------------------------------------------------------------- augmentation


def crop_flip_reference(images, top, left, flip, padding):
    out = []
    for image, t, l, f in zip(images.numpy(), top.tolist(), left.tolist(), flip.tolist()):
        padded = np.pad(image, ((0, 0), (padding, padding), (padding, padding)))
        crop = padded[:, t:t + image.shape[1], l:l + image.shape[2]]
        out.append(crop[:, :, ::-1] if f else crop)
    return np.stack(out)


@pytest.mark.parametrize("padding", [4, 2])
def test_crop_flip_matches_loop(padding):
    g = torch.Generator().manual_seed(1)
    images = torch.randint(1, 256, (16, 3, 8, 6), generator=g, dtype=torch.uint8)
    top = torch.randint(0, 2 * padding + 1, (16,), generator=g)
    left = torch.randint(0, 2 * padding + 1, (16,), generator=g)
    flip = torch.randint(0, 2, (16,), generator=g).bool()
    top[:2], left[:2], flip[:2] = 0, 2 * padding, torch.tensor([False, True])   # corners
    out = crop_flip(images, top, left, flip, padding)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    np.testing.assert_array_equal(out.numpy(), crop_flip_reference(images, top, left, flip, padding))


def test_crop_flip_identity_and_mirror():
    images = torch.randint(0, 256, (3, 1, 5, 5), dtype=torch.uint8)
    centre = torch.full((3,), 4)
    assert torch.equal(crop_flip(images, centre, centre, torch.zeros(3, dtype=torch.bool)), images)
    assert torch.equal(crop_flip(images, centre, centre, torch.ones(3, dtype=torch.bool)), images.flip(3))


def test_random_crop_flip_draw_order_and_reproducibility():
    images = cifar_like(64).images
    out = random_crop_flip(images, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    top = torch.randint(0, 9, (64,), generator=g)
    left = torch.randint(0, 9, (64,), generator=g)
    flip = torch.randint(0, 2, (64,), generator=g).bool()
    assert torch.equal(out, crop_flip(images, top, left, flip))
    assert not torch.equal(out, random_crop_flip(images, torch.Generator().manual_seed(8)))
    assert 0 < int(flip.sum()) < 64 and len(set(top.tolist())) > 3



def test_random_shift_translates_without_mirroring_and_fills_black():
    images = torch.zeros(64, 1, 9, 9, dtype=torch.uint8)
    images[:, 0, 4, 3] = 255                            # one bright pixel left of the centre
    out = random_shift(images, torch.Generator().manual_seed(3))
    top, left, flip = data.draw_augmentation("shift", 64, torch.Generator().manual_seed(3))
    assert not flip.any() and top.min() == 0 and top.max() == 4 and len(set(left.tolist())) == 5
    assert torch.equal(out, crop_flip(images, top, left, flip.bool(), 2))
    rows, cols = torch.nonzero(out[:, 0] == 255, as_tuple=True)[1:]
    # a crop at (top, left) of the 2-padded image moves the content by (2 - top, 2 - left)
    assert torch.equal(rows, 4 + 2 - top) and torch.equal(cols, 3 + 2 - left)
    assert int((out > 0).sum()) == 64                   # nothing but black came in


def test_augmentation_by_name_is_the_same_draw_and_crop_as_the_functions():
    images = cifar_like(32).images
    draws = data.draw_augmentation("crop_flip", 32, torch.Generator().manual_seed(5))
    assert torch.equal(data.apply_augmentation("crop_flip", images, draws),
                       random_crop_flip(images, torch.Generator().manual_seed(5)))
    draws = data.draw_augmentation("shift", 32, torch.Generator().manual_seed(5))
    assert torch.equal(data.apply_augmentation("shift", images, draws),
                       random_shift(images, torch.Generator().manual_seed(5)))
    with pytest.raises(ValueError, match="augment must be one of \\['none', 'crop_flip', 'shift'\\], got 'rotate'"):
        data.draw_augmentation("rotate", 4)


def test_check_augmentation_names_the_field_and_the_misfit():
    data.check_augmentation("shift", "mnist", (1, 28, 28))     # digits survive a shift
    data.check_augmentation("crop_flip", "cifar10", (3, 32, 32))
    with pytest.raises(ValueError, match="augment crop_flip mirrors images, .* dataset mnist"):
        data.check_augmentation("crop_flip", "mnist", (1, 28, 28))
    with pytest.raises(ValueError, match="augment shift needs \\(C, H, W\\) images of at least 4x4 .* "
                                         "dataset flat has images of shape \\(784,\\)"):
        data.check_augmentation("shift", "flat", (784,))
    with pytest.raises(ValueError, match="augment shift needs .* shape \\(1, 3, 28\\)"):
        data.check_augmentation("shift", "strips", (1, 3, 28))

# ---------------------------------------------------------------- batches


def test_sequential_batches_cover_the_dataset_in_order():
    ds = cifar_like(10)
    it = batches(ds, 4)
    assert len(it) == 3
    got = list(it)
    assert [len(y) for _, y in got] == [4, 4, 2]
    x = torch.cat([b[0] for b in got])
    assert x.dtype == torch.float32 and x.shape == (10, 3, 32, 32)
    assert torch.equal(torch.cat([b[1] for b in got]), torch.arange(10))
    assert torch.equal(x, to_float(ds.images, *normalization("cifar10")))
    dropped = batches(ds, 4, drop_last=True)
    assert len(dropped) == 2 and [len(y) for _, y in dropped] == [4, 4]


def test_shuffle_is_seeded_and_new_each_epoch():
    ds = cifar_like(50)
    it = batches(ds, 8, shuffle=True, generator=3)
    epoch1 = torch.cat([y for _, y in it])
    epoch2 = torch.cat([y for _, y in it])
    reference = torch.Generator().manual_seed(3)
    assert torch.equal(epoch1, torch.randperm(50, generator=reference))
    assert torch.equal(epoch2, torch.randperm(50, generator=reference))
    assert not torch.equal(epoch1, epoch2)
    again = batches(ds, 8, shuffle=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.cat([y for _, y in again]), epoch1)
    x, y = next(iter(batches(ds, 8, shuffle=True, generator=3)))
    assert torch.equal(x, to_float(ds.images[y], *normalization("cifar10")))


def test_distributed_shards_via_sampler_indices():
    ds = cifar_like(21)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(range(len(ds)), num_replicas=2, rank=rank, shuffle=True, seed=5)
        order = list(sampler)
        got = torch.cat([y for _, y in batches(ds, 4, sampler_indices=order)])
        assert got.tolist() == order
        seen += order
    assert sorted(set(seen)) == list(range(21))   # the shards cover the dataset (one padded repeat)
    with pytest.raises(ValueError, match="not both"):
        batches(ds, 4, shuffle=True, sampler_indices=[0, 1])
    with pytest.raises(ValueError, match="must lie in 0..20"):
        batches(ds, 4, sampler_indices=[0, 21])


def test_augmented_batches_are_reproducible_and_padded_with_black():
    ds = cifar_like(32)
    ds.images[:] = 255                                 # white images: padding shows as -1
    runs = [list(batches(ds, 16, shuffle=True, generator=9, augment=random_crop_flip))
            for _ in range(2)]
    for (xa, ya), (xb, yb) in zip(*runs):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    x = torch.cat([b[0] for b in runs[0]])
    assert set(x.unique().tolist()) == {-1.0, 1.0}
    black_rows = (x[:, 0] == -1).all(dim=2)            # rows entirely from the zero padding
    assert black_rows.any() and not black_rows.all()


def test_normalization_argument_and_device():
    ds = cifar_like(6)
    x, _ = next(iter(batches(ds, 6, normalization="meanstd", device="cpu")))
    assert torch.equal(x, to_float(ds.images, *normalization("cifar10", "meanstd")))
    x, _ = next(iter(batches(ds, 6, normalization=((1.0,) * 3, (0.0,) * 3))))
    assert torch.equal(x, ds.images.float())


def test_batches_rejects_bad_arguments():
    ds = cifar_like(4)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        batches(ds, 0)
    floats = ImageDataset("cifar10", "train", ds.images.float(), ds.labels, CIFAR_CLASSES)
    with pytest.raises(TypeError, match="uint8"):
        batches(floats, 2)
