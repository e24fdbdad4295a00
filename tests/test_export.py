"""Export: the packed engine reproduces the torch model's eval decisions exactly (ties included).

Inputs and first-layer biases are dyadic in the exactness tests (x_f = x_u8/64 - 2, biases in
1/32 steps): then torch's float32 first layer is exact too, so every hidden bit must agree.
Hidden layers get arbitrary float biases and batch-norm statistics: their thresholds are
exact for the float32 computation by construction (verified over every reachable sum).
"""
import io
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import binarynet as bn
from binarynet.errors import ExportError
from binarynet.export import export, to_torch

DYADIC = dict(input_scale=1 / 64, input_offset=-2.0)
HYP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- helpers -----------------------------------------------------------------------------------
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest)


def randomize(model, seed, zero_gamma=0.15, first_bias_dyadic=True):
    """Random BN statistics (thresholds land anywhere, incl. negative and zero scales) and biases."""
    g = torch.Generator().manual_seed(seed)

    def u(n, lo, hi):
        return torch.rand(n, generator=g) * (hi - lo) + lo

    first = True
    fan_in = 1
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, bn.nn.BinaryLayer):
                fan_in = m.weight[0].numel()
                if m.bias is not None:
                    if first and first_bias_dyadic:
                        m.bias.copy_(torch.randint(-64, 65, m.bias.shape, generator=g) / 32)
                    else:
                        m.bias.copy_(u(m.bias.numel(), -3, 3))
                first = False
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                spread = 3 * fan_in ** 0.5
                m.running_mean.copy_(u(n, -spread, spread))
                m.running_var.copy_(u(n, 0.05, fan_in))
                gamma = u(n, -2, 2)
                gamma[torch.rand(n, generator=g) < zero_gamma] = 0.0
                m.weight.copy_(gamma)
                m.bias.copy_(u(n, -1, 1))
            elif isinstance(m, (bn.nn.ShiftBatchNorm1d, bn.nn.ShiftBatchNorm2d)):
                n = m.num_features
                spread = 3 * fan_in ** 0.5
                m.running_mean.copy_(u(n, -spread, spread))
                m.running_inv_std.copy_(u(n, 0.02, 2))
                gamma = u(n, -2, 2)
                gamma[torch.rand(n, generator=g) < zero_gamma] = 0.0
                m.weight.copy_(gamma)
                m.bias.copy_(u(n, -1, 1))
    return model.eval()


def torch_signs(model, x):
    """Outputs of every Sign module (+-1) and the logits of the torch model in eval mode."""
    signs = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: signs.append(out.detach().clone()))
             for m in model.modules() if isinstance(m, bn.nn.Sign)]
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    return signs, logits


def layer_outputs(packed, x):
    """The engine's binary layer outputs (after pooling) in torch layout, and its logits."""
    trace = packed.trace(x)
    kinds = [kind for _, kind, _ in trace] + [None]
    outs = []
    for i, (_, kind, arr) in enumerate(trace[:-1]):
        if kinds[i + 1] == "maxpool" or (kind == "binarize_input" and kinds[i + 1] == "flatten"):
            continue  # torch pools before its Sign / flattens before binarizing the input
        if kind != "flatten" or (i and kinds[i - 1] == "binarize_input"):
            outs.append(arr)
    return outs, trace[-1][2]


def assert_matches_torch(model, packed, x_engine, x_torch):
    """Every hidden bit equal, logits equal to float tolerance, same argmax."""
    signs, logits = torch_signs(model, x_torch)
    outs, engine_logits = layer_outputs(packed, x_engine)
    assert len(outs) == len(signs)
    for layer, (want, got) in enumerate(zip(signs, outs)):
        np.testing.assert_array_equal(got, want.numpy().astype(np.int8), err_msg=f"layer {layer}")
    logits = logits.numpy()
    np.testing.assert_allclose(engine_logits, logits, rtol=1e-5, atol=1e-5 * (1 + np.abs(logits).max()))
    np.testing.assert_array_equal(packed.predict(x_engine), engine_logits)
    if x_engine.dtype != np.uint8:  # the float torch network rebuilt from the packed one
        with torch.no_grad():
            rebuilt = to_torch(packed)(torch.from_numpy(x_engine)).numpy()
        np.testing.assert_allclose(rebuilt, engine_logits, rtol=1e-5,
                                   atol=1e-5 * (1 + np.abs(logits).max()))
    assert np.array_equal(engine_logits.argmax(1), logits.argmax(1)) or np.allclose(
        np.sort(logits, 1)[:, -1], np.sort(logits, 1)[:, -2])  # argmax ties only


def dyadic_inputs(shape, n, seed):
    g = torch.Generator().manual_seed(seed)
    x_u8 = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    return x_u8, x_u8.float() / 64 - 2  # exact in float32


def batchnorm(kind, dims, n, eps=1e-5):
    if kind == "none":
        return []
    if kind == "standard":
        return [nn.BatchNorm1d(n, eps=eps) if dims == 1 else nn.BatchNorm2d(n, eps=eps)]
    return [bn.nn.ShiftBatchNorm1d(n, eps=eps) if dims == 1 else bn.nn.ShiftBatchNorm2d(n, eps=eps)]


# -- randomized exactness ----------------------------------------------------------------------
@HYP
@given(data=st.data())
def test_dense_models_match_torch(data):
    shape = data.draw(st.sampled_from([(1, 5, 7), (2, 3, 4), (65,), (64,), (1, 1, 1)]), "shape")
    widths = data.draw(st.lists(st.sampled_from([1, 3, 63, 64, 65, 130]), min_size=1, max_size=3),
                       "widths")
    kinds = data.draw(st.lists(st.sampled_from(["standard", "shift", "none"]),
                               min_size=len(widths), max_size=len(widths)), "bn")
    binary_input = data.draw(st.booleans(), "binary_input")
    bias = data.draw(st.booleans(), "bias")
    classes = data.draw(st.sampled_from([1, 2, 10]), "classes")
    output_bn = data.draw(st.booleans(), "output_bn")
    mode = data.draw(st.sampled_from(["bitplane", "int"]), "mode")
    seed = data.draw(st.integers(0, 2 ** 16), "seed")
    torch.manual_seed(seed)
    layers = [nn.Flatten()] if len(shape) == 3 else []
    if binary_input:
        layers.append(bn.nn.Sign())
    k = int(np.prod(shape))
    for width, kind in zip(widths, kinds):
        layers += [bn.nn.BinaryLinear(k, width, bias=bias), *batchnorm(kind, 1, width),
                   bn.nn.Sign(), nn.Dropout(0.3)]
        k = width
    layers.append(bn.nn.BinaryLinear(k, classes, bias=bias))
    if output_bn:
        layers.append(nn.BatchNorm1d(classes))
    model = randomize(nn.Sequential(*layers), seed)
    x_u8, x_f = dyadic_inputs(shape, 17, seed)
    packed = export(model, x_u8, first_layer=mode, **DYADIC)
    assert_matches_torch(model, packed, x_u8.numpy(), x_f)
    assert_matches_torch(model, packed, x_f.numpy(), x_f)


@HYP
@given(data=st.data())
def test_conv_models_match_torch(data):
    c_in = data.draw(st.sampled_from([1, 3, 4]), "c_in")
    size = data.draw(st.integers(5, 9), "size")
    binary_input = data.draw(st.booleans(), "binary_input")
    seed = data.draw(st.integers(0, 2 ** 16), "seed")
    layers, c, h = [], c_in, size
    if binary_input:
        layers.append(bn.nn.Sign())
    for depth in range(2):
        out = data.draw(st.sampled_from([2, 5, 64, 67] if depth else [4, 6, 8]), f"out{depth}")
        kernel = data.draw(st.sampled_from([1, 3]), f"kernel{depth}")
        stride = data.draw(st.sampled_from([1, 2]), f"stride{depth}")
        padding = data.draw(st.sampled_from([0, 1, 2]), f"padding{depth}")
        dilation = data.draw(st.sampled_from([1, 2]), f"dilation{depth}")
        pad_value = data.draw(st.sampled_from([0.0, 1.0, -1.0]), f"pad_value{depth}")
        groups = data.draw(st.sampled_from([g for g in (1, 2) if c % g == 0 and out % g == 0]),
                           f"groups{depth}")
        if h + 2 * padding - dilation * (kernel - 1) < 1:
            padding, dilation = 1, 1
        layers.append(bn.nn.BinaryConv2d(c, out, kernel, stride=stride, padding=padding,
                                         dilation=dilation, groups=groups, pad_value=pad_value))
        h = (h + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
        if h >= 2 and data.draw(st.booleans(), f"pool{depth}"):
            layers.append(nn.MaxPool2d(2))
            h //= 2
        layers += batchnorm(data.draw(st.sampled_from(["standard", "shift"]), f"bn{depth}"), 2, out)
        layers.append(bn.nn.Sign())
        c = out
    layers += [nn.Flatten(), bn.nn.BinaryLinear(c * h * h, 7), nn.BatchNorm1d(7)]
    model = randomize(nn.Sequential(*layers), seed)
    x_u8, x_f = dyadic_inputs((c_in, size, size), 5, seed)
    packed = export(model, x_u8, **DYADIC)
    assert_matches_torch(model, packed, x_u8.numpy(), x_f)
    assert_matches_torch(model, packed, x_f.numpy(), x_f)


def test_kernels_and_reference_runners_agree():
    torch.manual_seed(3)
    model = randomize(bn.models.get("cifar10_vgg", widths=(8, 70), fc=(33,), image_size=8), 3)
    x_u8, x_f = dyadic_inputs((3, 8, 8), 6, 3)
    packed = export(model, x_u8, **DYADIC)
    reference = bn.engine.PackedModel(packed.graph, packed.tensors, reference=True)
    for x in (x_u8.numpy(), x_f.numpy()):
        for (name, kind, a), (_, _, b) in zip(packed.trace(x), reference.trace(x)):
            np.testing.assert_array_equal(a, b, err_msg=f"{kind} {name}")
        np.testing.assert_array_equal(packed.predict(x), reference.predict(x))
    assert_matches_torch(model, packed, x_u8.numpy(), x_f)


# -- exhaustive ties -----------------------------------------------------------------------------
def all_sign_vectors(k):
    codes = np.arange(2 ** k)[:, None] >> np.arange(k)[None, :]
    return torch.from_numpy(np.where(codes & 1, 1.0, -1.0).astype(np.float32))


@pytest.mark.parametrize("norm", ["standard", "shift"])
def test_dense_ties_exhaustive(norm):
    """Each unit's BN output is exactly 0 at one reachable s; sign(0) = +1 must survive export.

    eps = 0, var = 1 and power-of-two gammas make every BN product exact, so that the float
    model itself sees the tie (torch's BN computes x * alpha + beta, which is not exactly 0 at
    x = mean for a general alpha; the export reproduces that too, see the randomized tests).
    """
    k, units = 7, 12
    torch.manual_seed(0)
    model = nn.Sequential(bn.nn.Sign(), bn.nn.BinaryLinear(k, units),
                          *batchnorm(norm, 1, units, eps=0.0), bn.nn.Sign(),
                          bn.nn.BinaryLinear(units, 3))
    with torch.no_grad():
        hidden, bnorm = model[1], model[2]
        hidden.bias.copy_(torch.arange(units) / 8 - 0.5)  # dyadic: s + b exact
        ties = torch.tensor([-5, -5, -3, -1, 1, 3, 5, 5, -1, 1, 3, -3], dtype=torch.float32)
        bnorm.running_mean.copy_(ties + hidden.bias)  # BN input = s - tie: exactly 0 at s = tie
        gamma = torch.tensor([1, -1, 0.5, -0.5, 2, -2, 1, -1, 0, 0, 1, -1], dtype=torch.float32)
        bnorm.weight.copy_(gamma)
        bnorm.bias.zero_()  # y = 0 (or -0.0) at the tie: +1
        if norm == "standard":
            bnorm.running_var.fill_(1.0)
        else:
            bnorm.running_inv_std.fill_(1.0)
    model.eval()
    x = all_sign_vectors(k)  # every input: every reachable s of every unit
    packed = export(model, x)
    assert_matches_torch(model, packed, x.numpy(), x)
    thresh = packed.tensors["1.thresh"]
    flip = packed.tensors["1.flip"]
    # gamma > 0: +1 iff s >= tie; gamma < 0: +1 iff s <= tie; gamma = 0 with beta = 0: always +1
    for unit in range(units):
        if gamma[unit] > 0:
            assert (thresh[unit], flip[unit]) == (ties[unit], False)
        elif gamma[unit] < 0:
            assert (thresh[unit], flip[unit]) == (ties[unit], True)
        else:
            assert (thresh[unit], flip[unit]) == (np.iinfo(np.int32).min, False)
    assert packed.export_report["layers"]["1"]["thresholds_adjusted"] == 0


def test_conv_zero_padding_border_ties_exhaustive():
    """Zero padding: border positions sum 4 or 6 taps, so even s (unreachable inside) occur."""
    model = nn.Sequential(bn.nn.Sign(), bn.nn.BinaryConv2d(1, 4, 3, padding=1),
                          nn.BatchNorm2d(4, eps=0.0), bn.nn.Sign(), nn.Flatten(),
                          bn.nn.BinaryLinear(36, 2))
    torch.manual_seed(1)
    with torch.no_grad():
        conv, bnorm = model[1], model[2]
        conv.bias.copy_(torch.tensor([0.25, -0.5, 0.0, 0.75]))
        ties = torch.tensor([2.0, -2.0, 0.0, 4.0])  # even: only reachable at the border
        bnorm.running_mean.copy_(ties + conv.bias)
        bnorm.running_var.fill_(1.0)
        bnorm.weight.copy_(torch.tensor([1.0, -1.0, 4.0, -0.25]))
        bnorm.bias.zero_()
    model.eval()
    x = all_sign_vectors(9).reshape(-1, 1, 3, 3)
    packed = export(model, x)
    assert_matches_torch(model, packed, x.numpy(), x)
    np.testing.assert_array_equal(packed.tensors["1.thresh"], ties.numpy().astype(np.int32))
    np.testing.assert_array_equal(packed.tensors["1.flip"], [False, True, False, True])


def test_first_layer_ties_uint8():
    """First-layer thresholds exact on the integer sum: z = s/64 - 2*sum(w) + b hits v* exactly."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), bn.nn.BinaryLinear(3, 4), nn.BatchNorm1d(4, eps=0.0),
                          bn.nn.Sign(), bn.nn.BinaryLinear(4, 2))
    with torch.no_grad():
        lin, bnorm = model[1], model[2]
        lin.weight.copy_(torch.tensor([[1.0, 1, 1], [1, -1, 1], [-1, -1, 1], [1, 1, -1]]))
        lin.bias.copy_(torch.tensor([0.5, 0.0, -0.25, 1.0]))
        bnorm.running_mean.copy_(torch.tensor([1.0, -0.5, 0.125, 2.0]))
        bnorm.running_var.fill_(1.0)
        bnorm.weight.copy_(torch.tensor([1.0, -1.0, 2.0, -4.0]))
        bnorm.bias.zero_()
    model.eval()
    values = torch.arange(0, 256, 17, dtype=torch.uint8)
    x_u8 = torch.cartesian_prod(values, values, values).reshape(-1, 1, 1, 3)
    x_f = x_u8.float() / 64 - 2
    packed = export(model, x_u8, **DYADIC)
    assert_matches_torch(model, packed, x_u8.numpy(), x_f)
    assert_matches_torch(model, packed, x_f.numpy(), x_f)
    # unit 0: z = s/64 - 2*3 + 0.5 >= 1  <=>  s >= 416
    assert packed.tensors["1.thresh"][0] == 416 and not packed.tensors["1.flip"][0]


# -- paper normalisation: non-dyadic inputs ------------------------------------------------------
def test_paper_normalisation_disagrees_only_at_first_layer_near_ties():
    torch.manual_seed(5)
    model = randomize(bn.models.get("mnist_mlp", hidden=96, depth=2, in_shape=(1, 12, 12)), 5,
                      first_bias_dyadic=False)
    x_u8 = torch.randint(0, 256, (400, 1, 12, 12), dtype=torch.uint8)
    scale, offset = 2 / 255, -1.0
    x_f = (x_u8.double() * scale + offset).float()  # as binarynet.data.to_float
    packed = export(model, x_u8, input_scale=scale, input_offset=offset)
    signs, logits = torch_signs(model, x_f)
    outs, engine_logits = layer_outputs(packed, x_u8.numpy())
    lin = model[2]
    z = (x_u8.double().reshape(400, -1) * scale + offset) @ torch.where(
        lin.weight >= 0, 1.0, -1.0).double().T + lin.bias.double()
    v = torch.from_numpy(packed.tensors["2.vthresh"].astype(np.float64))
    differ = torch.from_numpy(outs[0]) != signs[0].to(torch.int8)
    # every first-layer disagreement is a near-tie of the float32 sum (|z - v*| tiny)
    assert torch.all((z - v).abs()[differ] < 1e-4)
    if not differ.any():
        np.testing.assert_allclose(engine_logits, logits.numpy(), rtol=1e-5, atol=1e-4)


# -- sizes ---------------------------------------------------------------------------------------
def test_paper_mlp_file_is_30x_smaller_than_float_state_dict(tmp_path):
    torch.manual_seed(0)
    model = bn.models.get("mnist_mlp").eval()  # full width 3 x 4096, untrained
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    float_bytes = buffer.tell()
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    packed = export(model, x, input_scale=2 / 255, input_offset=-1.0)
    packed_bytes = packed.save(tmp_path / "mlp.bnn")
    ratio = float_bytes / packed_bytes
    print(f"mnist_mlp: float32 state_dict {float_bytes} B, packed file {packed_bytes} B, "
          f"{ratio:.1f}x")
    assert ratio >= 30
    assert packed.summary().splitlines()[-1].endswith(f"= file {packed_bytes} bytes")


# -- rejected models -----------------------------------------------------------------------------
def small_mlp(*extra_hidden, output=None):
    layers = [nn.Flatten(), bn.nn.BinaryLinear(12, 8), nn.BatchNorm1d(8), bn.nn.Sign(), *extra_hidden,
              bn.nn.BinaryLinear(8, 3)]
    if output is not None:
        layers.append(output)
    return nn.Sequential(*layers).eval()


X12 = torch.randn(4, 12)


class NonMonotoneBN(nn.BatchNorm1d):
    def forward(self, x):
        return torch.cos(x)


@pytest.mark.parametrize("model, message", [
    (small_mlp(nn.ReLU()), r"module '4' \(ReLU\): takes binary \(\+-1\) activations"),
    (nn.Sequential(nn.Flatten(), bn.nn.BinaryLinear(12, 8), nn.BatchNorm1d(8), bn.nn.Sign()),
     "ends with binary activations"),
    (nn.Sequential(nn.Flatten(), bn.nn.BinaryLinear(12, 8, weight_quantizer=None),
                   nn.BatchNorm1d(8), bn.nn.Sign(), bn.nn.BinaryLinear(8, 3)),
     "weight_quantizer None does not give \\+-1 weights"),
    (nn.Sequential(nn.Flatten(), bn.nn.BinaryLinear(12, 8), NonMonotoneBN(8), bn.nn.Sign(),
                   bn.nn.BinaryLinear(8, 3)),
     "not monotone in the pre-activation"),
    (nn.Sequential(nn.Flatten(), bn.nn.BinaryLinear(12, 8), nn.BatchNorm1d(8, track_running_stats=False),
                   bn.nn.Sign(), bn.nn.BinaryLinear(8, 3)),
     "track_running_stats=False uses batch statistics"),
    (nn.Sequential(nn.Flatten(start_dim=2), bn.nn.BinaryLinear(12, 3)),
     "only Flatten\\(start_dim=1, end_dim=-1\\)"),
    (nn.Sequential(bn.nn.BinaryLinear(12, 8, input_quantizer=lambda x: torch.tanh(x)),
                   bn.nn.BinaryLinear(8, 3)),
     "input_quantizer does not binarize as sign"),
    (nn.Sequential(nn.Flatten(), bn.nn.BinaryLinear(12, 8), bn.nn.Sign(), nn.Flatten(),
                   bn.nn.BinaryLinear(8, 3), NonMonotoneBN(3), bn.nn.Sign(), bn.nn.BinaryLinear(3, 2)),
     "not monotone in the integer sum"),
])
def test_unsupported_models_raise_export_error(model, message):
    takes_flat = isinstance(model, nn.Sequential) and isinstance(model[0], bn.nn.BinaryLinear)
    with pytest.raises(ExportError, match=message):
        export(model.eval(), X12 if takes_flat else X12.reshape(4, 1, 3, 4))


def test_conv_specific_rejections():
    x = torch.randn(2, 1, 6, 6)

    def net(*middle, conv=None):
        conv = conv or bn.nn.BinaryConv2d(1, 4, 3)
        return nn.Sequential(conv, *middle, nn.BatchNorm2d(4), bn.nn.Sign(), nn.Flatten(),
                             bn.nn.BinaryLinear(4 * 16 if not middle else 4 * 4, 2)).eval()

    with pytest.raises(ExportError, match="only MaxPool2d without padding"):
        export(net(nn.MaxPool2d(2, padding=1)), x)
    reflect = bn.nn.BinaryConv2d(1, 4, 3, padding=1)
    reflect.padding_mode = "reflect"  # as nn.Conv2d would have it
    with pytest.raises(ExportError, match="padding_mode 'reflect' is not supported"):
        export(net(conv=reflect), x)
    with pytest.raises(ExportError, match="expected a 2d batch norm"):
        export(nn.Sequential(bn.nn.BinaryConv2d(1, 4, 3), nn.BatchNorm1d(4)).eval(), x)
    with pytest.raises(ExportError, match="output layer must be a BinaryLinear"):
        export(nn.Sequential(bn.nn.BinaryConv2d(1, 4, 3), nn.BatchNorm2d(4)).eval(), x)


def test_bad_arguments():
    model = small_mlp()
    x = torch.randint(0, 256, (2, 12), dtype=torch.uint8)
    with pytest.raises(ValueError, match="a uint8 example_input needs input_scale"):
        export(model, x)
    with pytest.raises(ValueError, match="give both input_scale and input_offset"):
        export(model, x, input_scale=0.5)
    with pytest.raises(ValueError, match="input_scale must be positive"):
        export(model, x, input_scale=-0.5, input_offset=0.0)
    with pytest.raises(ValueError, match="first_layer must be 'bitplane' or 'int'"):
        export(model, X12, first_layer="float")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        export("model", X12)
    with pytest.raises(ValueError, match="input_scale must be a finite number or 1 of them"):
        export(model, x, input_scale=[0.1, 0.2], input_offset=0.0)


def test_export_restores_training_mode_and_stochastic_sign_exports_deterministically():
    model = nn.Sequential(nn.Flatten(), bn.nn.BinaryLinear(12, 8), nn.BatchNorm1d(8),
                          bn.nn.Sign(stochastic=True), bn.nn.BinaryLinear(8, 3))
    randomize(model, 7)
    model.train()
    packed = export(model, X12)
    assert all(m.training for m in model.modules())
    model.eval()
    assert_matches_torch(model, packed, X12.numpy(), X12)


def test_constant_channels_and_report():
    model = small_mlp()
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([0.0, 0.0, 1, 1, 1, 1, 1, 1]))
        model[2].bias.copy_(torch.tensor([-1.0, 1.0, 0, 0, 0, 0, 0, 0]))
        model[2].running_mean.copy_(torch.tensor([0.0, 0.0, 100.0, 0, 0, 0, 0, 0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        packed = export(model, X12.reshape(4, 1, 3, 4))
    v = packed.tensors["1.vthresh"]
    assert v[0] == np.inf and v[1] == -np.inf  # gamma 0: constant -1 / +1
    assert packed.export_report["layers"]["1"]["constant_channels"] == 2
    assert packed.export_report["example_check"]["float"]["argmax_mismatches"] == 0


# -- real data -----------------------------------------------------------------------------------
def test_mnist_trained_mlp_engine_equals_torch_on_all_test_images():
    import os
    if not os.environ.get("BINARYNET_DATA"):
        pytest.skip("BINARYNET_DATA is not set (folder with mnist/)")
    from binarynet import data
    torch.manual_seed(0)
    train = data.load("mnist", "train")
    test = data.load("mnist", "test")
    scale, offset = data.normalization("mnist")
    model = bn.models.get("mnist_mlp", hidden=256, depth=2)
    optimizer = bn.optim.Adam(bn.optim.param_groups(model, lr=3e-3))
    model.train()
    for step, (x, y) in enumerate(data.batches(train, 100, shuffle=True, generator=0)):
        loss = bn.losses.squared_hinge(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 150:
            break
    model.eval()
    packed = export(model, test.images[:64], input_scale=scale, input_offset=offset)
    with torch.no_grad():
        torch_logits = model(data.to_float(test.images, scale, offset)).numpy()
    engine_logits = packed.predict(test.images.numpy())
    torch_pred, engine_pred = torch_logits.argmax(1), engine_logits.argmax(1)
    accuracy = float((engine_pred == test.labels.numpy()).mean())
    print(f"MNIST test: engine accuracy {accuracy:.4f}, "
          f"{int((torch_pred != engine_pred).sum())} prediction differences of 10000")
    assert accuracy > 0.85  # it learned: the comparison is meaningful
    np.testing.assert_array_equal(engine_pred, torch_pred)
    np.testing.assert_allclose(engine_logits, torch_logits, rtol=1e-4, atol=1e-3)


def test_package_attributes_name_the_functions():
    """``binarynet.export`` is the package; its ``export`` and ``to_torch`` are the functions."""
    import binarynet
    model = small_mlp()
    packed = binarynet.export.export(model, X12.reshape(4, 1, 3, 4))
    assert isinstance(packed, bn.engine.PackedModel)
    assert isinstance(binarynet.export.to_torch(packed), nn.Sequential)


def test_float64_models_are_refused():
    with pytest.raises(ExportError, match="reproduces float32 models.*call model.float\\(\\)"):
        export(small_mlp().double(), X12.reshape(4, 1, 3, 4).double())


@pytest.mark.parametrize("mode", ["bitplane", "int"])
def test_single_layer_model_first_layer_gives_logits(mode):
    """The first layer is also the output layer: logits = scale * z + shift on both input paths."""
    model = randomize(nn.Sequential(nn.Flatten(), bn.nn.BinaryLinear(35, 4), nn.BatchNorm1d(4)), 9)
    x_u8, x_f = dyadic_inputs((1, 5, 7), 11, 9)
    packed = export(model, x_u8, first_layer=mode, **DYADIC)
    assert [op["op"] for op in packed.ops] == ["first_dense"]
    with torch.no_grad():
        want = model(x_f).numpy()
    for x in (x_u8.numpy(), x_f.numpy()):
        np.testing.assert_allclose(packed.predict(x), want, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        rebuilt = to_torch(packed)(x_f).numpy()
    np.testing.assert_allclose(rebuilt, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale", ["mean_abs", "learned"])
def test_per_channel_weight_scales_are_folded_not_ignored(scale):
    """A binary layer's scale= is folded into the traced export's scale (the chain export
    refused it: exporting it as if absent gave a model disagreeing with torch half the time)."""
    model = nn.Sequential(bn.nn.Sign(), bn.nn.BinaryLinear(64, 32, scale=scale), nn.BatchNorm1d(32),
                          bn.nn.Sign(), bn.nn.BinaryLinear(32, 10), nn.BatchNorm1d(10))
    randomize(model, 7, zero_gamma=0.0)
    if scale == "learned":
        with torch.no_grad():
            model[1].channel_scale.uniform_(-2, 2)  # negative factors flip decisions too
    x = torch.randn(256, 64)
    packed = export(model, x[:8])
    with torch.no_grad():
        want = model(x).numpy()
    got = packed.predict(x.numpy())
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.99
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("model", [
    nn.Sequential(nn.Flatten(), bn.nn.BinaryLinear(12, 8), nn.BatchNorm1d(8),
                  bn.nn.BinaryLinear(8, 3)),  # a binary layer on real values: +-1 weights
    nn.Sequential(nn.Flatten(), nn.BatchNorm1d(12), bn.nn.BinaryLinear(12, 3)),
    nn.Sequential(nn.Flatten(), bn.nn.ShiftBatchNorm1d(12), bn.nn.Sign(), bn.nn.BinaryLinear(12, 8),
                  bn.nn.ShiftBatchNorm1d(8), nn.ReLU(), bn.nn.BinaryLinear(8, 3)),
], ids=["real-input-binary-layer", "batch-norm-first", "shift-batch-norm-relu"])
def test_chains_the_chain_export_refuses_take_the_traced_path(model):
    """These chains were refused (real values into a later binary layer; a batch norm before
    the first binary layer); the traced export computes them on the real stream."""
    randomize(model, 3, zero_gamma=0.0)
    x = torch.randn(64, 12)
    packed = export(model, x[:4])
    assert packed.export_report["path"] == "dag"
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(packed.predict(x.numpy()), want, rtol=1e-5,
                               atol=1e-5 * np.abs(want).max())
