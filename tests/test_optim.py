"""binarynet.optim: Glorot LR scales (docs/paper.md §2.5), param groups, latent clipping, shift-AdaMax."""
import math

import pytest
import torch
from torch import nn

import binarynet as bn
from binarynet import models
from binarynet.optim import ShiftAdaMax, glorot_lr_scale, param_groups


def _scales(model, pow2=False):
    return [g["lr_scale"] for g in param_groups(model, 1.0, pow2=pow2) if g["latent_clip"]]


def test_lr_scale_table_mnist():
    assert [round(s, 2) for s in _scales(models.get("mnist_mlp"))] == [57.04, 73.90, 73.90, 52.32]
    t7 = models.get("mnist_mlp", hidden=2048)
    assert [round(s, 2) for s in _scales(t7)] == [43.45, 52.26, 52.26, 37.04]


def test_lr_scale_table_cifar_and_svhn():
    cifar = models.get("cifar10_vgg")
    assert [round(s, 2) for s in _scales(cifar)] == [
        28.04, 39.19, 48.0, 55.43, 67.88, 78.38,  # convs
        78.38, 36.95, 26.26,  # fc 8192->1024, 1024->1024, 1024->10
    ]
    assert _scales(cifar, pow2=True) == [32, 32, 64, 64, 64, 64, 64, 32, 32]
    svhn = models.get("svhn_vgg")
    assert [round(s, 2) for s in _scales(svhn)][:7] == [20.05, 27.71, 33.94, 39.19, 48.0, 55.43, 58.42]
    assert _scales(svhn, pow2=True)[:7] == [16, 32, 32, 32, 64, 64, 64]


def test_glorot_lr_scale_formula_and_errors():
    conv = bn.nn.BinaryConv2d(3, 128, 3)
    assert glorot_lr_scale(conv) == 1 / math.sqrt(1.5 / (3 * 9 + 128 * 9))
    assert glorot_lr_scale(bn.nn.BinaryLinear(784, 4096)) == 1 / math.sqrt(1.5 / (784 + 4096))
    with pytest.raises(TypeError, match="BinaryLayer"):
        glorot_lr_scale(nn.Linear(3, 4))


def test_param_groups_structure():
    model = models.get("mnist_mlp", hidden=16, depth=2)
    groups = param_groups(model, 0.01)
    binary = [m for m in model if isinstance(m, bn.nn.BinaryLayer)]
    assert len(groups) == len(binary) + 1
    for group, layer in zip(groups, binary):
        assert group["params"] == [layer.weight]
        assert group["latent_clip"] is True
        assert group["lr"] == pytest.approx(0.01 * glorot_lr_scale(layer))
        assert group["lr_scale"] == glorot_lr_scale(layer)
    rest = groups[-1]
    assert rest["latent_clip"] is False and rest["lr"] == 0.01 and rest["lr_scale"] == 1.0
    expected_rest = {id(m.bias) for m in binary} | {
        id(p) for m in model if isinstance(m, nn.BatchNorm1d) for p in m.parameters()
    }
    assert {id(p) for p in rest["params"]} == expected_rest
    all_ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(all_ids) == sorted(id(p) for p in model.parameters())
    pow2 = param_groups(model, 0.01, pow2=True)
    assert all(math.log2(g["lr_scale"]).is_integer() for g in pow2)


def _huge_steps(optimizer_cls, model):
    opt = optimizer_cls(param_groups(model, 1.0))
    for _ in range(3):
        # Huge gradients of a fixed, mixed sign pattern: every parameter is pushed far outward.
        for p in model.parameters():
            pattern = torch.where(torch.arange(p.numel()) % 2 == 0, 1.0, -1.0).view_as(p)
            p.grad = 1e6 * pattern
        opt.step()


@pytest.mark.parametrize("optimizer_cls", [bn.optim.Adam, ShiftAdaMax])
def test_latent_weights_clipped_biases_and_bn_not(optimizer_cls):
    torch.manual_seed(0)
    model = nn.Sequential(bn.nn.BinaryLinear(5, 7), nn.BatchNorm1d(7), bn.nn.Sign(), bn.nn.BinaryLinear(7, 3))
    _huge_steps(optimizer_cls, model)
    for layer in (model[0], model[3]):
        assert layer.weight.abs().max() <= 1.0
        assert (layer.weight.abs() == 1.0).all()  # pushed against the bound, not beyond
    unclipped = [model[0].bias, model[1].weight, model[1].bias, model[3].bias]
    assert all(p.abs().min().item() > 1.0 for p in unclipped)


def test_adam_equals_torch_adam_then_clamp():
    torch.manual_seed(0)
    model = nn.Sequential(bn.nn.BinaryLinear(4, 3), nn.BatchNorm1d(3))
    reference = [p.detach().clone() for p in model.parameters()]
    opt = bn.optim.Adam(param_groups(model, 0.05), betas=(0.8, 0.99))
    ref_params = [p.clone().requires_grad_() for p in reference]
    ref_groups = [
        {"params": [ref_params[0]], "lr": 0.05 * glorot_lr_scale(model[0])},
        {"params": ref_params[1:], "lr": 0.05},
    ]
    ref_opt = torch.optim.Adam(ref_groups, betas=(0.8, 0.99))
    for _ in range(3):
        x = torch.randn(8, 4)
        opt.zero_grad()
        model(x).square().sum().backward()
        opt.step()
        grads = [p.grad.clone() for p in model.parameters()]
        for p, g in zip(ref_params, grads):
            p.grad = g
        ref_opt.step()
        with torch.no_grad():
            ref_params[0].clamp_(-1, 1)
        for p, r in zip(model.parameters(), ref_params):
            torch.testing.assert_close(p, r, rtol=0, atol=0)


@pytest.mark.parametrize("optimizer_name", ["adam", "bop_adam"])
def test_recipes_take_the_fused_adam_step_and_it_is_adams(optimizer_name):
    """Recipes train with torch's fused Adam, on the CPU too (one pass per tensor instead of one
    per operation): the default step's update up to float32 rounding, clipped the same way."""
    import copy

    from binarynet.train import recipes
    from binarynet.train.builders import build_optimizer

    recipe = recipes.apply_overrides(recipes.get("synthetic_mlp"), {"optimizer": optimizer_name})
    torch.manual_seed(0)
    model = models.mnist_mlp(hidden=16, depth=2, in_shape=(1, 8, 8), dropout_in=0.0,
                             dropout_hidden=0.0)
    twin = copy.deepcopy(model)
    optimizer = build_optimizer(recipe, model, 3e-3)
    adams = optimizer.optimizers[1:] if optimizer_name == "bop_adam" else [optimizer]
    assert [adam.defaults["fused"] for adam in adams] == [True]
    if optimizer_name == "bop_adam":
        return
    reference = bn.optim.Adam(param_groups(twin, 3e-3), lr=3e-3)  # torch's default step
    assert not reference.defaults["fused"]
    x = torch.rand(16, 1, 8, 8) * 2 - 1
    for net, opt in ((model, optimizer), (twin, reference)):
        for _ in range(3):
            opt.zero_grad()
            net(x).square().sum().backward()
            opt.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert float(model[1].weight.detach().abs().max()) <= 1.0  # the first binary layer's latent weights


def test_adam_with_plain_parameter_list_clips_tagged_weights_only():
    layer = bn.nn.BinaryLinear(3, 2)
    opt = bn.optim.Adam(layer.parameters(), lr=10.0)
    layer(torch.ones(4, 3)).sum().backward()
    opt.step()
    assert layer.weight.abs().max() == 1.0
    assert layer.bias.abs().min() > 5.0  # moved by ~lr, not clipped


def _ap2(x):
    return 0.0 if x == 0 else math.copysign(2.0 ** round(math.log2(abs(x))), x)


def _scalar_shift_adamax(p, grads, lr, b1, b2, variant):
    """Element-by-element hand computation of docs/paper.md §2.4."""
    m = v = 0.0
    out = []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        if variant == "paper":
            v = max(b2 * v, abs(g))
            denom = _ap2(v)
        else:
            v = _ap2(max(b2 * v, abs(g))) + 2.0 ** -27
            denom = v
        step = _ap2(lr / (1 - b1 ** t))
        p = p - step * m / denom if denom else p
        out.append(p)
    return out


GRADS = [[0.1, -0.3, 0.0], [-0.2, 0.05, 0.0], [0.4, 0.0, 0.0]]


@pytest.mark.parametrize("variant", ["paper", "torch7"])
def test_shift_adamax_first_steps_equal_hand_computation(variant):
    start = [0.5, -0.25, 0.3]
    p = nn.Parameter(torch.tensor(start, dtype=torch.float64))
    opt = ShiftAdaMax([p], lr=2 ** -6, variant=variant)
    b1, b2 = (1 - 2 ** -3, 1 - 2 ** -10) if variant == "paper" else (0.9, 0.999)
    assert opt.param_groups[0]["betas"] == (b1, b2)
    history = []
    for g in GRADS:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        history.append(p.detach().clone())
    if variant == "paper":
        # Step 1 by hand: m = 0.125 g = [0.0125, -0.0375], v = |g|, AP2(v) = [1/8, 1/4],
        # step = AP2(2^-6 / 0.125) = 1/8: p = [0.5 - 0.0125, -0.25 + 0.01875, 0.3] (g = 0: no move).
        assert history[0].tolist() == pytest.approx([0.4875, -0.23125, 0.3], abs=1e-15)
    else:
        # m = 0.1 g, v = AP2(|g|) + 2^-27, step = AP2(2^-6 / 0.1 = 0.156) = 1/8.
        expected = [0.5 - 0.125 * 0.01 / (0.125 + 2 ** -27), -0.25 + 0.125 * 0.03 / (0.25 + 2 ** -27), 0.3]
        assert history[0].tolist() == pytest.approx(expected, abs=1e-15)
    for i in range(3):
        hand = _scalar_shift_adamax(start[i], [g[i] for g in GRADS], 2 ** -6, b1, b2, variant)
        assert [h[i].item() for h in history] == pytest.approx(hand, abs=1e-14)
    assert torch.isfinite(p).all()


def test_shift_adamax_uses_scaled_group_lr_and_rejects_bad_arguments():
    layer = bn.nn.BinaryLinear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, 0.0]]))
    groups = param_groups(layer, 2 ** -10)
    opt = ShiftAdaMax(groups)
    layer.weight.grad = torch.tensor([[1.0, -1.0]])
    opt.step()
    # m = 0.125 g, AP2(v) = 1, step = AP2(lr * scale / 0.125); scale = 1/sqrt(1.5/3) = 1.414.
    step = _ap2(2 ** -10 * math.sqrt(2.0) / 0.125)
    assert layer.weight.tolist() == [[-step * 0.125, step * 0.125]]
    with pytest.raises(ValueError, match="variant"):
        ShiftAdaMax(layer.parameters(), variant="lua")
    with pytest.raises(ValueError, match="betas"):
        ShiftAdaMax(layer.parameters(), betas=(1.0, 0.5))
