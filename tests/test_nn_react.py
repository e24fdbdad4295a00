"""ReActNet's RSign / RPReLU, per-channel scaling of binary layers, and blocks with real shortcuts:
forward values and gradients on hand-computed tensors, shapes, and what the shortcut does."""
import pytest
import torch
from torch import nn

import binarynet as bn
from binarynet import quantizers


def test_rsign_forward_and_gradients_by_hand():
    rsign = bn.nn.RSign(2)
    with torch.no_grad():
        rsign.shift.copy_(torch.tensor([0.5, -1.0]))
    # (N=1, C=2, 1, 3): channel 0 shifted by +0.5, channel 1 by -1.0
    x = torch.tensor([[[[-0.5, -0.6, 1.0]], [[1.0, 0.5, 2.5]]]], requires_grad=True)
    y = rsign(x)
    # x + shift = [[0.0, -0.1, 1.5], [0.0, -0.5, 1.5]] -> sign(0) = +1
    assert y.tolist() == [[[[1.0, -1.0, 1.0]], [[1.0, -1.0, 1.0]]]]
    g = torch.tensor([[[[1.0, 2.0, 3.0]], [[4.0, 5.0, 6.0]]]])
    y.backward(g)
    # STE mask 1{|x + shift| <= 1}: 1.5 is outside
    assert x.grad.tolist() == [[[[1.0, 2.0, 0.0]], [[4.0, 5.0, 0.0]]]]
    assert rsign.shift.grad.tolist() == [3.0, 9.0]


def test_rsign_with_approx_sign_gradient_and_2d_input():
    rsign = bn.nn.RSign(2, quantizer="approx_sign")
    x = torch.tensor([[0.25, -0.5], [2.0, 0.0]], requires_grad=True)
    rsign(x).sum().backward()
    # 2 - 2|x| inside [-1, 1), 0 outside
    assert x.grad.tolist() == [[1.5, 1.0], [0.0, 2.0]]
    assert rsign.shift.grad.tolist() == [1.5, 3.0]


def test_rprelu_forward_and_gradients_by_hand():
    act = bn.nn.RPReLU(2)
    with torch.no_grad():
        act.shift_in.copy_(torch.tensor([-1.0, 0.5]))
        act.slope.copy_(torch.tensor([0.5, 0.1]))
        act.shift_out.copy_(torch.tensor([2.0, -1.0]))
    x = torch.tensor([[[[3.0, 0.0]], [[-2.5, 1.5]]]], requires_grad=True)
    y = act(x)
    # channel 0: z = x - 1 = [2, -1] -> [2, -0.5] + 2 = [4, 1.5]
    # channel 1: z = x + 0.5 = [-2, 2] -> [-0.2, 2] - 1 = [-1.2, 1]
    assert torch.allclose(y, torch.tensor([[[[4.0, 1.5]], [[-1.2, 1.0]]]]))
    g = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    y.backward(g)
    assert torch.allclose(x.grad, torch.tensor([[[[1.0, 1.0]], [[0.3, 4.0]]]]))  # g * (1 or slope)
    assert torch.allclose(act.shift_in.grad, torch.tensor([1.0 + 2.0 * 0.5, 3.0 * 0.1 + 4.0]))
    assert torch.allclose(act.slope.grad, torch.tensor([2.0 * -1.0, 3.0 * -2.0]))  # g * z where z <= 0
    assert torch.allclose(act.shift_out.grad, torch.tensor([3.0, 7.0]))


def test_react_modules_reject_bad_input():
    with pytest.raises(ValueError, match="channels"):
        bn.nn.RSign(0)
    with pytest.raises(ValueError, match="known quantizers"):
        bn.nn.RSign(2, quantizer="nope")
    with pytest.raises(ValueError, match=r"RPReLU: expected input of shape \(N, 3"):
        bn.nn.RPReLU(3)(torch.zeros(1, 2, 4, 4))


@pytest.mark.parametrize("make", [lambda s: bn.nn.BinaryConv2d(2, 3, 3, padding=1, scale=s),
                                  lambda s: bn.nn.BinaryLinear(4, 3, scale=s)])
def test_mean_abs_scale_equals_magnitude_aware_sign_and_keeps_weights_binary(make):
    torch.manual_seed(0)
    scaled = make("mean_abs")
    plain = make(None)
    plain.load_state_dict(scaled.state_dict())
    plain.weight_quantizer = "magnitude_aware_sign"
    with torch.no_grad():
        scaled.bias.normal_()
        plain.bias.copy_(scaled.bias)
    x = torch.randn(2, 2, 5, 5) if isinstance(scaled, nn.Conv2d) else torch.randn(5, 4)
    y_scaled, y_plain = scaled(x), plain(x)
    assert torch.allclose(y_scaled, y_plain, atol=1e-6)
    # same Bi-Real gradient: alpha * g * 1{|w| <= 1}
    y_scaled.sum().backward()
    y_plain.sum().backward()
    assert torch.allclose(scaled.weight.grad, plain.weight.grad, atol=1e-5)
    # the +-1 weights stay apart from alpha, which is mean |W| per output channel
    assert set(scaled.quantized_weight().unique().tolist()) <= {-1.0, 1.0}
    alpha = scaled.weight.detach().abs().flatten(1).mean(1)
    assert torch.allclose(scaled.output_scale(), alpha)


def test_learned_scale_is_a_parameter_with_its_gradient():
    layer = bn.nn.BinaryLinear(2, 2, bias=False, scale="learned")
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -0.5], [-0.2, -0.3]]))
        layer.channel_scale.copy_(torch.tensor([2.0, 3.0]))
    x = torch.tensor([[1.0, -1.0]])
    y = layer(x)
    assert y.tolist() == [[4.0, 0.0]]  # [2 * (1 + 1), 3 * (-1 + 1)]
    y.sum().backward()
    assert layer.channel_scale.grad.tolist() == [2.0, 0.0]
    assert "channel_scale" in dict(layer.named_parameters())
    assert layer.output_scale() is layer.channel_scale
    with pytest.raises(ValueError, match="scale must be one of"):
        bn.nn.BinaryConv2d(1, 1, 3, scale="max")


def test_unscaled_layers_are_unchanged():
    layer = bn.nn.BinaryConv2d(2, 3, 3)
    assert layer.scale is None and layer.output_scale() is None
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]


def test_shortcut_is_identity_pool_or_pool_conv_bn():
    assert isinstance(bn.nn.shortcut(8, 8, 1), nn.Identity)
    assert isinstance(bn.nn.shortcut(8, 8, 2), nn.AvgPool2d)
    down = bn.nn.shortcut(4, 8, 2)
    assert [type(m).__name__ for m in down] == ["AvgPool2d", "Conv2d", "BatchNorm2d"]
    assert down(torch.zeros(1, 4, 7, 7)).shape == (1, 8, 4, 4)  # rounds up, as the 3x3 conv


@pytest.mark.parametrize("react", [False, True])
@pytest.mark.parametrize("cin, cout, stride, side", [(8, 8, 1, 6), (8, 16, 2, 6), (4, 8, 2, 5)])
def test_bireal_block_shapes(react, cin, cout, stride, side):
    block = bn.nn.bireal_block(cin, cout, stride, react=react)
    out = block(torch.randn(2, cin, side, side))
    assert out.shape == (2, cout, -(-side // stride), -(-side // stride))
    kinds = [type(m).__name__ for m in block]
    assert kinds == (["Residual", "RPReLU"] if react else ["Residual"])


def test_bireal_block_adds_the_real_input_to_the_binary_branch():
    torch.manual_seed(0)
    block = bn.nn.bireal_block(4, 4).eval()
    x = torch.randn(2, 4, 5, 5)
    residual = block[0]
    assert torch.allclose(block(x), residual.body(x) + x)
    # the body sees only sign(x): the shortcut is what carries the real values through
    assert torch.allclose(residual.body(x), residual.body(quantizers.sign(x)))
    conv = residual.body[0]
    assert conv.input_quantizer_name == "approx_sign" and conv.scale == "mean_abs"


def test_bireal_block_downsampling_shortcut_is_real_valued():
    torch.manual_seed(0)
    block = bn.nn.bireal_block(4, 8, 2).eval()
    x = torch.randn(1, 4, 6, 6)
    res = block[0]
    expected = res.shortcut[2](res.shortcut[1](nn.functional.avg_pool2d(x, 2)))
    assert torch.allclose(res.shortcut(x), expected)
    assert torch.allclose(block(x), res.body(x) + expected)
