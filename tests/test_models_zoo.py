"""The model zoo: parameter counts against the papers at 224 / 1000 classes, output shapes for
both stems, the papers' structure (real first conv and last dense, real shortcuts), bad
options, and a small model of each family learning a synthetic task."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import binarynet as bn
from binarynet import models

# (name, options, the count the paper / larq zoo states, our exact count)
PAPER_COUNTS = [
    ("birealnet18", {}, 11.7e6, 11_689_512),          # Bi-Real Net-18, larq zoo 11,699,112
    ("reactnet18", {}, 11.7e6, 11_704_424),           # a ResNet-18
    ("reactnet_a", {}, 29.3e6, 29_343_592),           # ReActNet-A, "~29 M"
    ("quicknet", {"size": "small"}, 12_655_688, 12_652_504),   # larq zoo QuickNetSmall
    ("quicknet", {"size": "medium"}, 13_234_088, 13_230_024),  # larq zoo QuickNet
    ("quicknet", {"size": "large"}, 23_342_248, 23_338_184),   # larq zoo QuickNetLarge
]


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, options, paper, exact", PAPER_COUNTS)
def test_imagenet_parameter_count_matches_the_paper_and_output_shape(name, options, paper, exact):
    # Built and run on the meta device: shapes only, nothing allocated or computed.
    with torch.device("meta"):
        model = models.get(name, num_classes=1000, input_size=224, **options)
        out = model(torch.empty(2, 3, 224, 224))
    assert out.shape == (2, 1000)
    assert n_params(model) == exact
    assert abs(exact - paper) / paper < 0.03


@pytest.mark.parametrize("name, options", [(n, o) for n, o, _, _ in PAPER_COUNTS[:4]])
def test_cifar_stem_output_shape_and_no_early_downsampling(name, options):
    with torch.device("meta"):
        model = models.get(name, num_classes=10, input_size=32, **options)
        assert model(torch.empty(2, 3, 32, 32)).shape == (2, 10)
    stem = model[0]
    convs = [m for m in stem.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.stride == (1, 1) for c in convs)
    assert not any(isinstance(m, nn.MaxPool2d) for m in stem.modules())


def test_the_issue_calls_work_exactly_so():
    model = bn.models.get("reactnet18", num_classes=10)
    assert model[-1][-1].out_features == 10
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)  # CIFAR stem by default
    assert model[0][0].stride == (1, 1)
    with torch.device("meta"):
        big = bn.models.get("quicknet", size="small", num_classes=1000, input_size=224)
    assert n_params(big) == 12_652_504


@pytest.mark.parametrize("name", ["birealnet18", "reactnet18", "reactnet_a", "quicknet"])
def test_first_conv_and_last_dense_are_real_and_the_rest_binary(name):
    with torch.device("meta"):
        model = models.get(name, num_classes=1000, input_size=224)
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert type(weighted[0]) is nn.Conv2d and type(weighted[-1]) is nn.Linear
    binary = [m for m in weighted if isinstance(m, bn.nn.BinaryLayer)]
    real = sum(m.weight.numel() for m in weighted if not isinstance(m, bn.nn.BinaryLayer))
    assert sum(m.weight.numel() for m in binary) > 10 * real  # nearly all weights are binary


def test_block_structure_of_each_family():
    with torch.device("meta"):
        bireal = models.get("birealnet18", num_classes=10, input_size=32)
    convs = [m for m in bireal.modules() if isinstance(m, bn.nn.BinaryConv2d)]
    assert len(convs) == 16 and all(c.input_quantizer_name == "approx_sign" and c.scale == "mean_abs"
                                    for c in convs)
    assert sum(isinstance(m, bn.nn.Residual) for m in bireal.modules()) == 16
    with torch.device("meta"):
        react = models.get("reactnet18", num_classes=10, input_size=32)
    assert sum(isinstance(m, bn.nn.RSign) for m in react.modules()) == 16
    assert sum(isinstance(m, bn.nn.RPReLU) for m in react.modules()) == 16
    with torch.device("meta"):
        react_a = models.get("reactnet_a")
    assert sum(isinstance(m, bn.nn.BinaryConv2d) for m in react_a.modules()) == 13 * 2 + 5  # 5 doubled 1x1
    with torch.device("meta"):
        quick = models.get("quicknet", size="small", num_classes=10, input_size=32)
    qconvs = [m for m in quick.modules() if isinstance(m, bn.nn.BinaryConv2d)]
    assert len(qconvs) == 16 and all(c.pad_value == 1.0 and c.scale is None for c in qconvs)
    assert qconvs[0].input_quantizer_name == "ste_sign(clip=1.25)"


@pytest.mark.parametrize("name", ["birealnet18", "reactnet18", "reactnet_a", "quicknet"])
def test_input_size_the_stem_cannot_take_is_a_clear_error(name):
    with pytest.raises(ValueError, match=rf"{name}: input_size=100 does not fit its CIFAR stem.*multiple of"):
        models.get(name, input_size=100)
    with pytest.raises(ValueError, match=rf"{name}: input_size=200 does not fit its ImageNet stem.*multiple of 32"):
        models.get(name, input_size=200)
    with pytest.raises(ValueError, match="input_size must be a positive integer"):
        models.get(name, input_size="224")


def test_other_bad_options():
    with pytest.raises(ValueError, match="size must be one of small, medium, large"):
        models.get("quicknet", size="xl")
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        models.get("reactnet18", num_classes=0)
    with pytest.raises(ValueError, match="known models: birealnet18, .*reactnet18, reactnet_a"):
        models.get("reactnet")


# -- learning ------------------------------------------------------------------------------
SIDE, CLASSES = 16, 8
SMALL = [
    ("birealnet18", {"width": 8, "blocks": (1, 1, 1, 1)}),
    ("reactnet18", {"width": 8, "blocks": (1, 1, 1, 1)}),
    ("reactnet_a", {"widths": (8, 16, 32, 64, 128)}),
    ("quicknet", {"blocks": (1, 1, 1), "widths": (8, 16, 32)}),
]


def _images(n, gen, prototypes):
    labels = torch.randint(0, CLASSES, (n,), generator=gen)
    return prototypes[labels] + 3.0 * torch.randn(n, 3, SIDE, SIDE, generator=gen), labels


@pytest.mark.parametrize("name, options", SMALL)
def test_small_model_of_each_family_learns_a_synthetic_task(name, options, one_thread):
    """8 classes of 16x16 images: a blocky 4x4 random pattern per class under noise of std 3
    (chance 12.5 %). 150 Adam steps (lr 0.01, batch 32) on 1024 images, about 2 s each on one
    core; measured test accuracy (seed 0): birealnet18 98.6 %, reactnet18 98.2 %, reactnet_a
    95.1 %, quicknet 94.1 %."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    prototypes = F.interpolate(torch.randn(CLASSES, 3, 4, 4, generator=gen), size=SIDE)
    x_train, y_train = _images(1024, gen, prototypes)
    x_test, y_test = _images(512, gen, prototypes)
    model = models.get(name, num_classes=CLASSES, input_size=SIDE, **options)
    optimizer = bn.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(150):
        i = torch.randint(0, len(x_train), (32,), generator=gen)
        loss = F.cross_entropy(model(x_train[i]), y_train[i])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy >= 0.85
