"""binarynet.models: the paper networks (structure, exact parameter counts, output shape) and the registry."""
import pytest
import torch
from torch import nn

import binarynet as bn
from binarynet import models


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# Expected counts, written out by hand layer by layer: weights + bias of each binary layer,
# gamma + beta of each BN.
MNIST_MLP_PARAMS = (
    (784 * 4096 + 4096) + 2 * 4096
    + (4096 * 4096 + 4096) + 2 * 4096
    + (4096 * 4096 + 4096) + 2 * 4096
    + (4096 * 10 + 10) + 2 * 10
)
CIFAR_PARAMS = (
    (3 * 128 * 9 + 128) + 2 * 128
    + (128 * 128 * 9 + 128) + 2 * 128
    + (128 * 256 * 9 + 256) + 2 * 256
    + (256 * 256 * 9 + 256) + 2 * 256
    + (256 * 512 * 9 + 512) + 2 * 512
    + (512 * 512 * 9 + 512) + 2 * 512
    + (512 * 4 * 4 * 1024 + 1024) + 2 * 1024
    + (1024 * 1024 + 1024) + 2 * 1024
    + (1024 * 10 + 10) + 2 * 10
)
SVHN_PARAMS = (
    (3 * 64 * 9 + 64) + 2 * 64
    + (64 * 64 * 9 + 64) + 2 * 64
    + (64 * 128 * 9 + 128) + 2 * 128
    + (128 * 128 * 9 + 128) + 2 * 128
    + (128 * 256 * 9 + 256) + 2 * 256
    + (256 * 256 * 9 + 256) + 2 * 256
    + (256 * 4 * 4 * 1024 + 1024) + 2 * 1024
    + (1024 * 1024 + 1024) + 2 * 1024
    + (1024 * 10 + 10) + 2 * 10
)


def test_names():
    assert models.names() == ["birealnet18", "cifar10_vgg", "mnist_mlp", "quicknet", "reactnet18",
                              "reactnet_a", "svhn_vgg"]


def test_mnist_mlp_parameter_count_structure_and_output():
    model = models.get("mnist_mlp")
    assert isinstance(model, nn.Sequential)
    assert n_params(model) == MNIST_MLP_PARAMS == 36_843_550
    kinds = [type(m).__name__ for m in model]
    assert kinds == (
        ["Flatten", "Dropout"]
        + ["BinaryLinear", "BatchNorm1d", "Sign", "Dropout"] * 3
        + ["BinaryLinear", "BatchNorm1d"]
    )
    assert [m.p for m in model if isinstance(m, nn.Dropout)] == [0.2, 0.5, 0.5, 0.5]
    assert all(m.input_quantizer is None for m in model if isinstance(m, bn.nn.BinaryLayer))
    assert all(m.eps == 1e-4 and m.momentum == 0.1 for m in model if isinstance(m, nn.BatchNorm1d))
    model.eval()
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_mnist_mlp_overrides_shift_bn_and_stochastic():
    model = models.get("mnist_mlp", hidden=32, depth=2, batchnorm="shift", stochastic=True, dropout_in=0.0)
    kinds = [type(m).__name__ for m in model]
    assert kinds == (
        ["Flatten"] + ["BinaryLinear", "ShiftBatchNorm1d", "Sign", "Dropout"] * 2 + ["BinaryLinear", "BatchNorm1d"]
    )
    assert all(m.stochastic for m in model if isinstance(m, bn.nn.Sign))
    assert n_params(model) == (784 * 32 + 32) + 64 + (32 * 32 + 32) + 64 + (32 * 10 + 10) + 20
    assert model(torch.randn(4, 1, 28, 28)).shape == (4, 10)


@pytest.mark.parametrize("name, expected", [("cifar10_vgg", CIFAR_PARAMS), ("svhn_vgg", SVHN_PARAMS)])
def test_vgg_parameter_count_structure_and_output(name, expected):
    model = models.get(name)
    assert n_params(model) == expected
    kinds = [type(m).__name__ for m in model]
    block = ["BinaryConv2d", "BatchNorm2d", "Sign", "BinaryConv2d", "MaxPool2d", "BatchNorm2d", "Sign"]
    assert kinds == block * 3 + ["Flatten"] + ["BinaryLinear", "BatchNorm1d", "Sign"] * 2 + ["BinaryLinear", "BatchNorm1d"]
    convs = [m for m in model if isinstance(m, bn.nn.BinaryConv2d)]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) and c.stride == (1, 1) for c in convs)
    torch.manual_seed(0)
    model.eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_vgg_options():
    model = models.get("cifar10_vgg", widths=(8, 16), fc=(32,), image_size=16, in_channels=1,
                       num_classes=5, batchnorm="shift", pad_value=-1.0)
    convs = [m for m in model if isinstance(m, bn.nn.BinaryConv2d)]
    assert [c.pad_value for c in convs] == [0.0, -1.0, -1.0, -1.0]  # first conv sees real pixels
    assert sum(isinstance(m, bn.nn.ShiftBatchNorm2d) for m in model) == 4
    assert isinstance(model[-1], nn.BatchNorm1d)  # output BN always standard
    assert [m.in_features for m in model if isinstance(m, bn.nn.BinaryLinear)] == [16 * 4 * 4, 32]
    assert model(torch.randn(3, 1, 16, 16)).shape == (3, 5)


def test_bad_options_raise_clear_errors():
    with pytest.raises(ValueError, match=r"divisible by 2\*\*len\(widths\) = 8"):
        models.get("cifar10_vgg", image_size=28)
    with pytest.raises(ValueError, match="known models: birealnet18, cifar10_vgg, mnist_mlp, quicknet, reactnet18, reactnet_a, svhn_vgg"):
        models.get("resnet18")
    with pytest.raises(TypeError, match="no option.*hiden.*options are: hidden"):
        models.get("mnist_mlp", hiden=10)
    with pytest.raises(ValueError, match="batchnorm"):
        models.get("mnist_mlp", hidden=8, batchnorm="layer")


def test_register_user_builder(monkeypatch):
    monkeypatch.setattr(models.registry, "_REGISTRY", dict(models.registry._REGISTRY))

    @models.register("tiny")
    def tiny(width=3):
        """A user's model."""
        return nn.Sequential(nn.Flatten(), bn.nn.BinaryLinear(4, width))

    assert "tiny" in models.names()
    assert models.get("tiny", width=5)[1].out_features == 5
    with pytest.raises(ValueError, match="already registered"):
        models.register("tiny")(tiny)
