"""A real learning test: a small binary MLP trained with bn.optim.Adam + squared hinge learns."""

import torch
from torch import nn

import binarynet as bn

NUM_CLASSES = 10
DIM = 32


def _synthetic(n, generator, centers):
    """Two Gaussian clusters per class around random centers (noise 1.0): a learnable 10-class
    problem with chance 10%, where a float linear classifier gets ~93% and this binary MLP ~97%."""
    cluster = torch.randint(0, len(centers), (n,), generator=generator)
    x = centers[cluster] + 1.0 * torch.randn(n, DIM, generator=generator)
    return x, cluster % NUM_CLASSES


def _binary_mlp():
    return nn.Sequential(
        bn.nn.BinaryLinear(DIM, 256), nn.BatchNorm1d(256), bn.nn.Sign(),
        bn.nn.BinaryLinear(256, 256), nn.BatchNorm1d(256), bn.nn.Sign(),
        bn.nn.BinaryLinear(256, NUM_CLASSES), nn.BatchNorm1d(NUM_CLASSES),
    )


def _accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_binary_mlp_learns_synthetic_clusters(one_thread):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(2 * NUM_CLASSES, DIM, generator=gen)
    x_train, y_train = _synthetic(4000, gen, centers)
    x_test, y_test = _synthetic(2000, gen, centers)

    model = _binary_mlp()
    before = _accuracy(model, x_test, y_test)
    opt = bn.optim.Adam(bn.optim.param_groups(model, lr=3e-3))
    for step in range(300):
        idx = torch.randint(0, len(x_train), (100,), generator=gen)
        model.train()
        loss = bn.losses.squared_hinge(model(x_train[idx]), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _accuracy(model, x_test, y_test)

    assert before < 0.3, before  # untrained: near chance
    assert after >= 0.90, after
    for layer in model:
        if isinstance(layer, bn.nn.BinaryLayer):
            assert layer.weight.abs().max() <= 1.0
            assert set(layer.quantized_weight().unique().tolist()) == {-1.0, 1.0}
