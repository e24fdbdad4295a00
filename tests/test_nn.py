"""binarynet.nn: binary layers, Sign, shift-based BN, latent-weight tagging and the clip warning."""
import copy
import io
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import binarynet as bn
from binarynet import quantizers as q
from binarynet.nn import latent


# ----------------------------------------------------------------------------- binary layers
def test_binary_linear_forward_uses_sign_of_latent_weight():
    torch.manual_seed(0)
    layer = bn.nn.BinaryLinear(5, 3)
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
        layer.weight[0, 0] = 0.0  # sign(0) = +1
    x = torch.randn(4, 5)
    wb = torch.where(layer.weight >= 0, 1.0, -1.0)
    assert torch.equal(layer(x), x @ wb.T + layer.bias)
    assert set(layer.quantized_weight().unique().tolist()) == {-1.0, 1.0}


def test_binary_layers_init_and_attributes():
    torch.manual_seed(0)
    for layer in (bn.nn.BinaryLinear(300, 200), bn.nn.BinaryConv2d(16, 32, 3)):
        assert isinstance(layer, bn.nn.BinaryLayer)
        w = layer.weight
        assert w.min() >= -1 and w.max() <= 1
        assert w.abs().max() > 0.99 and w.abs().mean() > 0.45  # U(-1, 1), not a small default init
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
        assert bn.nn.is_latent(w) and w._binarynet_latent is True
        assert not bn.nn.is_latent(layer.bias)
        assert layer.weight_quantizer is q.ste_sign and layer.weight_quantizer_name == "ste_sign"
        assert layer.input_quantizer is None and layer.input_quantizer_name is None
    conv = bn.nn.BinaryConv2d(4, 8, (3, 5), stride=2, padding=(1, 2), dilation=1, groups=2, bias=False)
    assert conv.stride == (2, 2) and conv.padding == (1, 2) and conv.groups == 2
    assert conv.bias is None and conv.pad_value == 0.0
    assert bn.nn.BinaryLinear(3, 2, bias=False).bias is None


def test_quantizer_arguments_by_name_callable_and_assignment():
    layer = bn.nn.BinaryLinear(4, 2, input_quantizer="ste_sign", weight_quantizer=q.sign)
    assert layer.input_quantizer is q.ste_sign and layer.weight_quantizer_name == "sign"
    layer.input_quantizer = None
    assert layer.input_quantizer_name is None

    def my_quantizer(t):
        return t.clamp(-1, 1)

    layer.weight_quantizer = my_quantizer
    assert layer.weight_quantizer_name.endswith("my_quantizer")
    with pytest.raises(ValueError, match="unknown quantizer 'xnor'.*ste_sign"):
        bn.nn.BinaryLinear(4, 2, weight_quantizer="xnor")
    with pytest.raises(ValueError, match="BinaryConv2d"):
        bn.nn.BinaryConv2d(1, 1, 3, input_quantizer="nope")


def test_input_quantizer_gradient_and_weight_identity_ste():
    layer = bn.nn.BinaryLinear(4, 1, bias=False, input_quantizer="ste_sign")
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.3, -0.2, 1.0, -1.0]]))
    x = torch.tensor([[-2.0, 0.5, 0.0, 1.0]], requires_grad=True)
    y = layer(x)
    assert y.item() == (-1 * 1) + (1 * -1) + (1 * 1) + (1 * -1)
    y.backward()
    # input STE: g * wb * 1{|x| <= 1}; weight: gradient w.r.t. sign(W) = x_b (identity STE on [-1, 1]).
    assert x.grad.tolist() == [[0.0, -1.0, 1.0, -1.0]]
    assert layer.weight.grad.tolist() == [[-1.0, 1.0, 1.0, 1.0]]


def test_stochastic_input_quantizer_follows_module_mode():
    layer = bn.nn.BinaryLinear(1000, 1, bias=False, input_quantizer="stochastic_sign")
    x = torch.full((1, 1000), 0.2)
    layer.eval()
    assert torch.equal(layer.quantized_input(x), torch.ones_like(x))
    layer.train()
    torch.manual_seed(0)
    xb = layer.quantized_input(x)
    assert 0.5 < (xb == 1).float().mean() < 0.7  # P(+1) = 0.6


def _conv_pair(pad_value, in_channels=1):
    torch.manual_seed(3)
    ref = bn.nn.BinaryConv2d(in_channels, 4, 3, padding=1)
    other = bn.nn.BinaryConv2d(in_channels, 4, 3, padding=1, pad_value=pad_value)
    other.load_state_dict(ref.state_dict())
    return ref, other


@pytest.mark.parametrize("pad_value", [1.0, -1.0])
def test_conv_pad_value_differs_from_zero_padding_exactly_at_border(pad_value):
    ref, other = _conv_pair(pad_value, in_channels=1)  # 3 or 5 padded taps: odd sums, never 0
    x = torch.where(torch.randn(2, 1, 7, 6) >= 0, 1.0, -1.0)
    a, b = ref(x), other(x)
    diff = b - a
    border = torch.ones(7, 6, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    assert torch.equal(diff[..., ~border], torch.zeros_like(diff[..., ~border]))
    assert bool((diff[..., border] != 0).all())
    # The difference is pad_value times the sum of the binary weights over the padded taps.
    pad_indicator = F.pad(torch.zeros(1, 1, 7, 6), (1, 1, 1, 1), value=1.0)
    expected = pad_value * F.conv2d(pad_indicator, ref.quantized_weight())
    assert torch.equal(diff, expected.expand_as(diff))
    # With binary input and +-1 padding every output (minus bias) is a +-1 dot product of length 9.
    sums = b - other.bias.view(1, -1, 1, 1)
    assert torch.equal(sums.remainder(2), torch.ones_like(sums))


def test_conv_pad_value_zero_equals_torch_conv():
    torch.manual_seed(1)
    layer = bn.nn.BinaryConv2d(3, 5, 3, stride=2, padding=1)
    x = torch.randn(2, 3, 9, 9)
    expected = F.conv2d(x, q.sign(layer.weight), layer.bias, stride=2, padding=1)
    assert torch.equal(layer(x), expected)


def test_bad_inputs_raise_clear_errors():
    lin = bn.nn.BinaryLinear(8, 2)
    with pytest.raises(ValueError, match=r"BinaryLinear\(8->2\).*\(N, 8\).*\(3, 7\)"):
        lin(torch.randn(3, 7))
    with pytest.raises(TypeError, match="floating-point"):
        lin(torch.ones(3, 8, dtype=torch.int64))
    conv = bn.nn.BinaryConv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"BinaryConv2d\(3->4\).*\(N, 3, H, W\).*\(2, 1, 8, 8\)"):
        conv(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        conv(torch.randn(3, 8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        conv(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="pad_value"):
        bn.nn.BinaryConv2d(3, 4, 3, padding=1, pad_value=0.5)
    with pytest.raises(ValueError, match="integer padding"):
        bn.nn.BinaryConv2d(3, 4, 3, padding="same", pad_value=1.0)


def test_latent_tag_survives_deepcopy_and_pickle():
    model = torch.nn.Sequential(bn.nn.BinaryLinear(4, 3), bn.nn.BinaryConv2d(1, 1, 1))
    clone = copy.deepcopy(model)
    assert bn.nn.is_latent(clone[0].weight) and bn.nn.is_latent(clone[1].weight)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert bn.nn.is_latent(loaded[0].weight)
    assert loaded[0].weight_quantizer is q.ste_sign
    assert torch.equal(loaded[0].weight, model[0].weight)


# ----------------------------------------------------------------------------- Sign module
def test_sign_module_deterministic_and_stochastic():
    x = torch.tensor([-1.5, -0.2, 0.0, 0.4, 3.0], requires_grad=True)
    s = bn.nn.Sign()
    out = s(x)
    assert out.tolist() == [-1, -1, 1, 1, 1]
    out.sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 0]
    stochastic = bn.nn.Sign(stochastic=True)
    z = torch.zeros(20_000)
    torch.manual_seed(0)
    frac = (stochastic(z) == 1).float().mean().item()
    assert abs(frac - 0.5) < 5 * (0.25 / 20_000) ** 0.5
    stochastic.eval()
    assert torch.equal(stochastic(z), torch.ones_like(z))


# ----------------------------------------------------------------------------- shift BN
def test_shift_bn_hand_computed_train_eval_and_backward():
    # x = [1, 2, 3, 6]: mu = 3, C = [-2, -1, 0, 3], AP2(C) = [-2, -1, 0, 4], mean(C AP2(C)) = 17/4,
    # inv = 1/sqrt(4.25) = 0.485 -> AP2 = 0.5; gamma = 3 -> AP2 = 4; beta = 0.5:
    # y = C * 0.5 * 4 + 0.5 = [-3.5, -1.5, 0.5, 6.5].
    layer = bn.nn.ShiftBatchNorm1d(1, eps=0.0)
    with torch.no_grad():
        layer.weight.fill_(3.0)
        layer.bias.fill_(0.5)
    x = torch.tensor([[1.0], [2.0], [3.0], [6.0]], requires_grad=True)
    y = layer(x)
    assert y.flatten().tolist() == [-3.5, -1.5, 0.5, 6.5]
    inv = 1 / 4.25 ** 0.5
    assert layer.running_mean.item() == pytest.approx(0.125 * 3)
    assert layer.running_inv_std.item() == pytest.approx(0.875 * 1 + 0.125 * inv)
    # Backward with g = [1, 0, -1, 2]: mean(g) = 0.5, mean(C_hat g) = 1.5, s = 0.5:
    # g_x = 4 * 0.5 * (g - 0.5 - C_hat * 0.25 * 1.5) = [2.5, -0.25, -3, 0];
    # x_hat = C * 0.5 = [-1, -0.5, 0, 1.5] -> AP2 = [-1, -0.5, 0, 2]: g_gamma = -1 + 4 = 3; g_beta = 2.
    y.backward(torch.tensor([[1.0], [0.0], [-1.0], [2.0]]))
    assert x.grad.flatten().tolist() == [2.5, -0.25, -3.0, 0.0]
    assert layer.weight.grad.tolist() == [3.0]
    assert layer.bias.grad.tolist() == [2.0]
    # Eval: AP2(running_inv_std = 0.9356) = 1, so y = (x - 0.375) * 1 * 4 + 0.5.
    layer.eval()
    out = layer(torch.tensor([[1.0], [0.375], [-2.0]]))
    assert out.flatten().tolist() == [3.0, 0.5, -9.0]
    scale, shift = layer.eval_affine()
    assert scale.tolist() == [4.0] and shift.tolist() == [0.5 - 0.375 * 4]


def test_shift_bn_equals_standard_bn_autograd_when_everything_is_a_power_of_two():
    # C in {+-2, +-1, 0} with mean(C^2) = 1 and eps = 0: AP2 is exact everywhere, so shift BN and
    # its T7 backward must equal vanilla BN and its autograd gradient.
    c = torch.tensor([2.0, -2.0, 1.0, -1.0, 1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    x = torch.stack([c + 5.0, 2 * c - 3.0], dim=1)  # channel 2: mean(C^2) = 4 -> inv = 1/2
    gamma = torch.tensor([2.0, 0.25])
    beta = torch.tensor([0.1, -1.0])
    g = torch.randn(12, 2, generator=torch.Generator().manual_seed(0))

    layer = bn.nn.ShiftBatchNorm1d(2, eps=0.0)
    with torch.no_grad():
        layer.weight.copy_(gamma)
        layer.bias.copy_(beta)
    xs = x.clone().requires_grad_()
    ys = layer(xs)
    ys.backward(g)

    xr = x.clone().requires_grad_()
    gr = gamma.clone().requires_grad_()
    br = beta.clone().requires_grad_()
    centered = xr - xr.mean(0)
    yr = centered / centered.square().mean(0).sqrt() * gr + br  # vanilla BN, biased variance, eps 0
    yr.backward(g)
    torch.testing.assert_close(ys, yr, rtol=0, atol=1e-6)
    torch.testing.assert_close(xs.grad, xr.grad, rtol=0, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad, gr.grad, rtol=0, atol=1e-5)
    torch.testing.assert_close(layer.bias.grad, br.grad, rtol=0, atol=1e-6)


def _np_ap2(a):
    with np.errstate(divide="ignore"):
        return np.sign(a) * np.exp2(np.round(np.log2(np.abs(a))))


def test_shift_bn_2d_matches_reference_formula_forward_backward_running():
    rng = np.random.default_rng(5)
    x = rng.normal(1.0, 3.0, size=(4, 3, 5, 5))
    gamma = np.array([0.7, -1.3, 2.2])
    beta = np.array([0.1, 0.0, -0.4])
    g = rng.normal(size=x.shape)
    eps, m = 1e-5, 0.125

    layer = bn.nn.ShiftBatchNorm2d(3).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(gamma))
        layer.bias.copy_(torch.from_numpy(beta))
    xt = torch.from_numpy(x).requires_grad_()
    y = layer(xt)
    y.backward(torch.from_numpy(g))

    ax = (0, 2, 3)
    r = lambda v: v.reshape(1, -1, 1, 1)  # noqa: E731
    mu = x.mean(axis=ax)
    c = x - r(mu)
    ch = _np_ap2(c)
    inv = 1 / np.sqrt((c * ch).mean(axis=ax) + eps)
    s = _np_ap2(inv)
    y_ref = c * r(s) * r(_np_ap2(gamma)) + r(beta)
    gx_ref = r(_np_ap2(gamma) * s) * (g - r(g.mean(axis=ax)) - ch * r(s**2) * r((ch * g).mean(axis=ax)))
    gg_ref = (_np_ap2(c * r(s)) * g).sum(axis=ax)
    np.testing.assert_allclose(y.detach().numpy(), y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(xt.grad.numpy(), gx_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.weight.grad.numpy(), gg_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.bias.grad.numpy(), g.sum(axis=ax), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.running_mean.numpy(), m * mu, rtol=1e-12)
    np.testing.assert_allclose(layer.running_inv_std.numpy(), (1 - m) + m * inv, rtol=1e-12)

    layer.eval()
    x2 = rng.normal(size=(2, 3, 4, 4))
    rm, ris = m * mu, (1 - m) + m * inv
    expected = (x2 - r(rm)) * r(_np_ap2(ris)) * r(_np_ap2(gamma)) + r(beta)
    np.testing.assert_allclose(layer(torch.from_numpy(x2)).detach().numpy(), expected, rtol=1e-12, atol=1e-12)


def test_shift_bn_buffers_params_and_errors():
    layer = bn.nn.ShiftBatchNorm2d(4)
    assert dict(layer.named_buffers()).keys() == {"running_mean", "running_inv_std"}
    assert layer.running_mean.tolist() == [0.0] * 4 and layer.running_inv_std.tolist() == [1.0] * 4
    assert layer.weight.tolist() == [1.0] * 4 and layer.bias.tolist() == [0.0] * 4
    assert layer.momentum == 0.125 and layer.eps == 1e-5
    assert bn.nn.ShiftBatchNorm1d(3, affine=False).weight is None
    with pytest.raises(ValueError, match=r"ShiftBatchNorm2d\(4\).*\(N, 4, H, W\)"):
        layer(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"ShiftBatchNorm1d\(4\)"):
        bn.nn.ShiftBatchNorm1d(4)(torch.randn(5, 4, 2, 2))
    with pytest.raises(ValueError, match="more than 1 value"):
        bn.nn.ShiftBatchNorm1d(4)(torch.randn(1, 4))
    with pytest.raises(TypeError):
        layer(torch.ones(2, 4, 3, 3, dtype=torch.int32))


def test_shift_bn_without_affine_equals_gamma_one_beta_zero():
    plain = bn.nn.ShiftBatchNorm1d(3, affine=False)
    affine = bn.nn.ShiftBatchNorm1d(3)
    x = torch.randn(8, 3, 2)
    g = torch.randn(8, 3, 2)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = plain(xa), affine(xb)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(ya, yb) and torch.equal(xa.grad, xb.grad)
    assert torch.equal(plain.running_inv_std, affine.running_inv_std)


# ----------------------------------------------------------------------------- clip warning
def _binary_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(bn.nn.BinaryLinear(6, 4), torch.nn.BatchNorm1d(4))


def _one_step(model, optimizer):
    optimizer.zero_grad()
    model(torch.randn(8, 6)).square().mean().backward()
    optimizer.step()


def test_unclipped_optimizer_warns_once(monkeypatch):
    monkeypatch.setattr(latent, "_warned", False)
    model = _binary_model()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            _one_step(model, sgd)
        _one_step(model, torch.optim.SGD(model.parameters(), lr=0.1))  # once per process
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1
    assert "SGD" in messages[0] and "clip" in messages[0] and "binarynet.optim.Adam" in messages[0]


def test_library_optimizers_and_float_models_do_not_warn(monkeypatch):
    monkeypatch.setattr(latent, "_warned", False)
    model = _binary_model()
    float_model = torch.nn.Linear(6, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _one_step(model, bn.optim.Adam(bn.optim.param_groups(model, 1e-3)))
        _one_step(model, bn.optim.ShiftAdaMax(model.parameters()))
        for _ in range(2):
            _one_step(float_model, torch.optim.SGD(float_model.parameters(), lr=0.1))
    assert [w for w in caught if "clip" in str(w.message)] == []
    assert latent._warned is False


# ----------------------------------------------------------------------------- reused sign(W) storage
def _plain_twin(layer):
    twin = copy.deepcopy(layer)
    twin.weight_quantizer = lambda w: q.ste_sign(w)  # a custom callable: never the buffered path
    return twin


def test_buffered_weight_sign_matches_plain_ste_over_several_forwards():
    torch.manual_seed(0)
    layer = bn.nn.BinaryLinear(6, 3)
    twin = _plain_twin(layer)
    xs = [torch.randn(4, 6) for _ in range(3)]
    # Several forwards before one backward: each graph must keep its own sign(W).
    sum(layer(x).square().sum() for x in xs).backward()
    sum(twin(x).square().sum() for x in xs).backward()
    assert torch.equal(layer.weight.grad, twin.weight.grad)
    # Forward / backward / update loop: the output always uses the current sign(W).
    opt = bn.optim.Adam(layer.parameters(), lr=0.3)
    storage = set()
    for _ in range(4):
        opt.zero_grad()
        layer(xs[0]).square().sum().backward()
        storage.add(layer._sign_buffer.tensor.data_ptr())
        opt.step()
        with torch.no_grad():
            assert torch.equal(layer(xs[0]), xs[0] @ q.sign(layer.weight).T + layer.bias)
    assert len(storage) == 1  # the same storage served every training step
    # Interleaved graphs: f1, f2, b1, f3, b2, b3.
    x = [t.clone().requires_grad_() for t in xs]
    outs = [layer(x[0]), layer(x[1])]
    outs[0].sum().backward()
    outs.append(layer(x[2]))
    outs[1].sum().backward()
    outs[2].sum().backward()
    for t in x:
        assert torch.equal(t.grad, q.sign(layer.weight).sum(0).expand(4, 6))


def test_buffered_weight_sign_never_gives_a_stale_value_to_a_retained_graph():
    layer = bn.nn.BinaryLinear(6, 3)
    x = torch.randn(2, 6, requires_grad=True)
    loss = layer(x).square().sum()
    loss.backward(retain_graph=True)
    with torch.no_grad():
        layer.weight.neg_()
    layer(torch.randn(2, 6))
    with pytest.raises(RuntimeError, match="inplace"):
        loss.backward()


def test_buffered_weight_sign_frozen_weight_inference_mode_and_public_copy():
    layer = bn.nn.BinaryLinear(5, 2)
    layer.weight.requires_grad_(False)
    x1, x2 = torch.randn(3, 5, requires_grad=True), torch.randn(3, 5, requires_grad=True)
    (layer(x1).sum() + layer(x2).sum()).backward()
    assert torch.equal(x1.grad, q.sign(layer.weight).sum(0).expand(3, 5))
    assert torch.equal(x2.grad, x1.grad)
    layer.weight.requires_grad_(True)
    with torch.inference_mode():
        layer(torch.randn(3, 5))
    layer(torch.randn(3, 5)).sum().backward()  # an inference tensor is never reused for training
    assert layer.weight.grad is not None
    public = layer.quantized_weight()
    layer(torch.randn(3, 5))
    assert public.data_ptr() != layer._sign_buffer.tensor.data_ptr()


def test_weight_gradient_is_masked_outside_the_clip_range():
    # Not clipped (e.g. a plain SGD): ste_sign gives no gradient where |w| > 1, in both paths.
    layer = bn.nn.BinaryLinear(3, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.5, -0.5, -1.0]]))
    twin = _plain_twin(layer)
    x = torch.ones(2, 3)
    layer(x).sum().backward()
    twin(x).sum().backward()
    assert layer.weight.grad.tolist() == [[0.0, 2.0, 2.0]]
    assert torch.equal(twin.weight.grad, layer.weight.grad)


def test_torch_compile_traces_without_graph_breaks():
    # aot_eager: dynamo + autograd tracing, without compiling C++ (keeps the test fast).
    torch.manual_seed(0)
    model = bn.models.get("mnist_mlp", hidden=32, depth=2, batchnorm="shift", dropout_in=0.0, dropout_hidden=0.0)
    twin = copy.deepcopy(model)
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)
    x = torch.randn(8, 1, 28, 28)
    y_ref, y = model(x), compiled(x)
    torch.testing.assert_close(y, y_ref)
    y_ref.square().sum().backward()
    y.square().sum().backward()
    for p_ref, p in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad)


def test_latent_tag_restored_after_parameter_replacement():
    source = bn.nn.BinaryLinear(4, 3)
    layer = bn.nn.BinaryLinear(4, 3)
    layer.load_state_dict(source.state_dict(), assign=True)
    if bn.nn.is_latent(layer.weight):
        pytest.skip("this torch keeps Parameter attributes on assign=True")
    layer(torch.randn(2, 4))
    assert bn.nn.is_latent(layer.weight)


def test_clipping_optimizer_marks_weights_and_the_mask_returns_after_a_change():
    torch.manual_seed(0)
    layer = bn.nn.BinaryLinear(3, 1, bias=False)
    opt = bn.optim.Adam(layer.parameters(), lr=0.1)
    layer(torch.randn(4, 3)).sum().backward()
    opt.step()
    assert latent.known_clipped(layer.weight)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.5, -0.5, -1.0]]))  # in place: the version moves on
    assert not latent.known_clipped(layer.weight)
    layer.weight.grad = None
    layer(torch.ones(2, 3)).sum().backward()
    assert layer.weight.grad.tolist() == [[0.0, 2.0, 2.0]]
