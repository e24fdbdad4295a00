"""Step batches built on the training device equal binarynet.data.batches, bit for bit."""
import pytest
import torch

from binarynet import data
from binarynet.train.step_batches import StepBatches


def dataset(n=64, shape=(3, 12, 12)):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    return data.ImageDataset("synthetic", "train", images, torch.arange(n) % 10, tuple("0123456789"))


@pytest.mark.parametrize("resident", [True, False])
@pytest.mark.parametrize("augment", ["none", "crop_flip", "shift"])
def test_same_batch_as_data_batches(resident, augment):
    ds, norm = dataset(), ((0.01, 0.02, 0.03), (-1.0, -0.5, 0.25))
    indices = torch.tensor([5, 0, 63, 17, 17, 2])
    want = next(iter(data.batches(ds, len(indices), sampler_indices=indices, normalization=norm,
                                  augment={"none": None, "crop_flip": data.random_crop_flip,
                                           "shift": data.random_shift}[augment],
                                  generator=torch.Generator().manual_seed(9))))
    source = StepBatches(ds, norm, torch.device("cpu"), augment=augment, resident=resident)
    got = source.batch(indices, torch.Generator().manual_seed(9))
    assert source.resident is resident and source.home == torch.device("cpu")
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    if augment != "none":  # the crops did something
        plain = StepBatches(ds, norm, torch.device("cpu")).batch(indices)[0]
        assert not torch.equal(got[0], plain)


def test_normalization_table_is_to_float():
    images = dataset(8, (2, 3, 3)).images
    scale, offset = (2 / 255, 1 / 255), (-1.0, 0.5)
    table = data.normalization_table(scale, offset)
    # the affine map computed directly in float64 (to_float itself goes through the table)
    want = (images.double() * torch.tensor(scale, dtype=torch.float64).view(1, -1, 1, 1)
            + torch.tensor(offset, dtype=torch.float64).view(1, -1, 1, 1)).float()
    assert torch.equal(data.apply_table(images, table), want)
    assert torch.equal(data.to_float(images, scale, offset), want)
    with pytest.raises(ValueError, match="2 channels but 1 scales"):
        data.apply_table(images, data.normalization_table((1.0,), (0.0,)))


def test_draws_of_random_crop_flip():
    draws = data.draw_crop_flip(1000, torch.Generator().manual_seed(1))
    assert draws.shape == (3, 1000) and draws.dtype == torch.int64
    assert draws[:2].min() == 0 and draws[:2].max() == 8 and set(draws[2].tolist()) == {0, 1}
    images = dataset(4).images
    top, left, flip = data.draw_crop_flip(4, torch.Generator().manual_seed(2))
    assert torch.equal(data.random_crop_flip(images, torch.Generator().manual_seed(2)),
                       data.crop_flip(images, top, left, flip.bool()))


def test_a_cpu_split_stays_where_it_is():
    ds = dataset()
    source = StepBatches(ds, ((1.0,) * 3, (0.0,) * 3), torch.device("cpu"))
    assert source.resident and source.images is ds.images  # no copy of the split on the CPU
