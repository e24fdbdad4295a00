"""ImageFolder (ImageNet layout) on a tiny generated folder: scanning, the standard 224 transforms,
reproducible parallel decoding, and a training run that streams it from disk."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from binarynet import data
from binarynet.data import image_transforms
from binarynet.errors import DataError
from binarynet.train import RunOptions, checkpoint, recipes, train


def write_image(path, width, height, seed, left=None, right=None):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if left is not None:
        pixels[:, :width // 2] = left
        pixels[:, width // 2:] = right
    Image.fromarray(pixels).save(path)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imagenet"
    for split, count in (("train", 4), ("val", 2)):
        for c, cls in enumerate(("n01", "n02")):
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                ext = ".JPEG" if i % 2 else ".png"
                write_image(root / split / cls / f"{cls}_{i}{ext}", 250 + 37 * i, 260 + 11 * c, seed=10 * c + i)
            (root / split / cls / "notes.txt").write_text("not an image")
    return root


def test_scan_classes_labels_and_errors(folder, tmp_path):
    train = data.ImageFolder(folder, "train", train=True)
    assert train.classes == ("n01", "n02") and len(train) == 8
    assert train.labels.tolist() == [0] * 4 + [1] * 4
    assert train.subset(3).labels.tolist() == [0, 0, 0]
    with pytest.raises(DataError, match="does not exist"):
        data.ImageFolder(folder, "test", train=False)
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        data.ImageFolder(tmp_path / "empty", "train", train=False)


def test_eval_transform_is_resize_256_and_centre_crop_224(tmp_path):
    path = tmp_path / "halves.png"
    write_image(path, 512, 256, 0, left=(255, 0, 0), right=(0, 0, 255))
    image = image_transforms.eval_transform(Image.open(path).convert("RGB"))
    assert image.shape == (3, 224, 224) and image.dtype == torch.uint8
    # The shorter side is already 256: the crop takes columns 144..367, red up to column 255.
    assert image[:, :, :110].float().mean(dim=(1, 2)).tolist() == [255.0, 0.0, 0.0]
    assert image[:, :, 114:].float().mean(dim=(1, 2)).tolist() == [0.0, 0.0, 255.0]


def test_random_resized_crop_boxes_stay_in_range():
    u = image_transforms.draw(500, torch.Generator().manual_seed(0))
    for row in u:
        left, top, w, h = image_transforms.crop_box(300, 200, row)
        assert 0 <= left and left + w <= 300 and 0 <= top and top + h <= 200
        if w * h < 300 * 200:  # not the fallback
            assert 0.08 * 300 * 200 * 0.9 <= w * h
            assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    # an extreme aspect ratio falls back to a centre crop of the clamped ratio
    assert image_transforms.crop_box(1000, 10, torch.ones(image_transforms.DRAWS_PER_SAMPLE)) == (493, 0, 13, 10)


def test_training_batches_are_reproducible_whatever_the_threads(folder):
    one = data.ImageFolder(folder, "train", train=True, threads=1)
    many = data.ImageFolder(folder, "train", train=True, threads=4)
    indices = torch.tensor([5, 0, 7, 2])
    a, la = one.batch(indices, torch.Generator().manual_seed(3))
    b, lb = many.batch(indices, torch.Generator().manual_seed(3))
    c, _ = many.batch(indices, torch.Generator().manual_seed(4))
    assert a.shape == (4, 3, 224, 224) and torch.equal(a, b) and not torch.equal(a, c)
    assert la.tolist() == [1, 0, 1, 0] and torch.equal(la, lb)


def test_data_batches_normalise_folder_batches(folder):
    val = data.ImageFolder(folder, "val", train=False)
    scale, offset = data.imagenet_normalization()
    assert math.isclose(offset[0], -0.485 / 0.229)
    batches = list(data.batches(val, 3, sampler_indices=[0, 1, 2, 3], normalization=(scale, offset)))
    assert [len(y) for _, y in batches] == [3, 1]
    raw, _ = val.batch(torch.tensor([0, 1, 2]))
    want = raw.float() * torch.tensor(scale).view(1, 3, 1, 1) + torch.tensor(offset).view(1, 3, 1, 1)
    torch.testing.assert_close(batches[0][0], want)


@pytest.mark.usefixtures("one_thread")
def test_a_recipe_trains_from_an_image_folder(folder, tmp_path):
    recipe = recipes.Recipe(
        name="tiny_imagenet", description="test", model="mnist_mlp", dataset="imagenet",
        model_overrides={"hidden": 16, "depth": 1, "in_shape": [3, 224, 224], "num_classes": 2,
                         "dropout_in": 0.0, "dropout_hidden": 0.0},
        val_split="", test_split="val", loss="cross_entropy", batch_size=4, eval_batch_size=4, epochs=1)
    summary = train(recipe, RunOptions(out=str(tmp_path / "run"), data_dir=str(folder.parent), progress=False))
    assert summary["global_step"] == 2 and summary["test_error_at_best"] is not None
    assert checkpoint.load(tmp_path / "run" / "last.pt")["config"]["train_samples"] == 8


def test_imagenet_recipes_refuse_download(tmp_path):
    from binarynet.train.inputs import load_split

    with pytest.raises(DataError, match="ImageNet cannot be downloaded"):
        load_split(recipes.get("reactnet18_imagenet"), "train", RunOptions(data_dir=str(tmp_path), download=True), 0)
