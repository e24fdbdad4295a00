"""The traced export (torch.fx -> format-3 DAG): which path a model takes, the ops and folded
tensors it writes, and the errors naming what is not supported. Agreement with torch of the
zoo models: tests/test_export_dag_models.py."""
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import binarynet as bn
from binarynet.errors import ExportError
from binarynet.export import export
from binarynet.export.builder import walk
from binarynet.export.modules import flatten_modules
from binarynet.export.values import sign_threshold
from binarynet.export.writer import GraphWriter
from binarynet.models import registry


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest)


def realistic(model, x, batches=3):
    """Batch-norm statistics from data (train-mode passes), random affine and shifts, then eval."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) and m.affine:
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            elif isinstance(m, bn.nn.RSign):
                m.shift.copy_(torch.randn(m.shift.shape, generator=g) * 0.2)
            elif isinstance(m, bn.nn.RPReLU):
                m.shift_in.copy_(torch.randn(m.shift_in.shape, generator=g) * 0.1)
                m.shift_out.copy_(torch.randn(m.shift_out.shape, generator=g) * 0.1)
        model.train()
        for _ in range(batches):
            model(x)
    return model.eval()


def ops_of(packed):
    return [op["op"] for op in packed.ops]


class UserResNet(nn.Module):
    """A residual binary network of standard modules, written as users write them."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                                  nn.PReLU())
        self.sign = bn.nn.Sign()
        self.conv1 = bn.nn.BinaryConv2d(16, 16, 3, padding=1, bias=False, scale="mean_abs")
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = bn.nn.BinaryConv2d(16, 32, 3, stride=2, padding=1, pad_value=-1.0,
                                        input_quantizer="ste_sign", scale="learned")
        self.bn2 = nn.BatchNorm2d(32)
        self.down = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32))
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 10), nn.BatchNorm1d(10))

    def forward(self, x):
        x = self.stem(x)
        x = self.bn1(self.conv1(self.sign(x))) + x
        x = torch.relu(x)
        y = self.bn2(self.conv2(x)) + self.down(x)
        return self.head(self.pool(torch.cat([y[:, :16], y[:, 16:]], dim=1)))


class UserResNetNoSlice(UserResNet):
    def forward(self, x):
        x = self.stem(x)
        x = self.bn1(self.conv1(self.sign(x))) + x
        x = torch.relu(x)
        y = self.bn2(self.conv2(x)) + self.down(x)
        return self.head(self.pool(y))


# -- which path ----------------------------------------------------------------------------------
def paper_mlp():
    return nn.Sequential(nn.Flatten(), bn.nn.BinaryLinear(48, 32), nn.BatchNorm1d(32), bn.nn.Sign(),
                         nn.Dropout(0.1), bn.nn.BinaryLinear(32, 10), nn.BatchNorm1d(10)).eval()


@pytest.mark.parametrize("name, options, shape", [
    ("dropout-mlp", None, (3, 4, 4)),
    ("mnist_mlp", dict(hidden=32, depth=2), (1, 28, 28)),
    ("cifar10_vgg", dict(widths=(8, 8, 16), fc=(16, 16)), (3, 32, 32)),
])
@pytest.mark.filterwarnings("ignore:export. on the example input")  # untrained: first-layer ties
def test_paper_chain_models_keep_the_chain_ops_byte_identical(name, options, shape):
    """The paper networks are exported by the chain path exactly as before the traced path."""
    model = paper_mlp() if options is None else registry.get(name, **options).eval()
    x = torch.randint(0, 256, (8, *shape), dtype=torch.uint8)
    packed = export(model, x, input_scale=2 / 255, input_offset=-1.0)
    old = GraphWriter(shape, [2 / 255] * shape[0], [-1.0] * shape[0], "bitplane")
    with torch.no_grad():
        walk(old, flatten_modules(model))
    assert packed.graph == old.graph()
    assert packed.tensors.keys() == old.tensors.keys()
    for key, array in old.tensors.items():
        assert packed.tensors[key].tobytes() == array.tobytes()
    assert packed.export_report["path"] == "chain"
    assert "inputs" not in packed.ops[0] and packed.ops[0]["op"].startswith("first_")


def test_a_chain_inside_a_custom_module_is_traced_to_the_chain_path():
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = paper_mlp()

        def forward(self, x):
            return self.body(x)

    x = torch.randn(8, 3, 4, 4)
    packed = export(Wrapper().eval(), x)
    assert packed.export_report["path"] == "chain"
    assert [op["name"] for op in packed.ops] == ["body.1", "body.5"]


def test_scaled_binary_layers_take_the_traced_path():
    model = nn.Sequential(bn.nn.Sign(), bn.nn.BinaryLinear(64, 32, scale="mean_abs"),
                          nn.BatchNorm1d(32), bn.nn.Sign(), bn.nn.BinaryLinear(32, 10),
                          nn.BatchNorm1d(10))
    x = torch.randn(64, 64)
    packed = export(realistic(model, x), x[:8])
    assert packed.export_report["path"] == "dag"
    assert ops_of(packed) == ["input_float", "sign", "bdense", "sign", "bdense"]


# -- folding -------------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(a=st.floats(-1e3, 1e3, width=32), c=st.floats(-1e3, 1e3, width=32),
       x=st.floats(-1e4, 1e4, width=32))
def test_sign_threshold_keeps_every_real_number_decision(a, c, x):
    thresh, flip = sign_threshold(np.array([a]), np.array([c]))
    bit = x <= thresh[0] if flip[0] else x >= thresh[0]
    assert bit == (Fraction(a) * Fraction(x) + Fraction(c) >= 0)


def test_sign_threshold_of_a_constant_channel():
    thresh, flip = sign_threshold(np.array([0.0, 0.0]), np.array([0.0, -1e-9]))
    assert thresh.tolist() == [-np.inf, np.inf] and not flip.any()


def test_batch_norm_folds_into_the_binary_conv_scale_and_shift():
    """scale = alpha * gamma / sqrt(var + eps), shift = beta + (bias - mean) * gamma /
    sqrt(var + eps), checked against the torch modules on every reachable integer sum."""
    conv = bn.nn.BinaryConv2d(8, 6, 3, padding=1, bias=True, input_quantizer="ste_sign",
                              scale="mean_abs")
    norm = nn.BatchNorm2d(6)
    model = nn.Sequential(conv, norm, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    x = torch.randn(32, 8, 5, 5)
    with torch.no_grad():
        conv.bias.copy_(torch.randn(6))
    realistic(model, x)
    norm.weight.data[0] = -norm.weight.data[0]  # a negative slope folds as well
    packed = export(model, x[:4])
    op = next(op for op in packed.ops if op["op"] == "bconv")
    scale = packed.tensors[op["tensors"]["scale"]].astype(np.float64)
    shift = packed.tensors[op["tensors"]["shift"]].astype(np.float64)
    s = torch.arange(-72, 73, dtype=torch.float32)[:, None].expand(-1, 6)
    with torch.no_grad():
        alpha = conv.output_scale()
        want = norm((s * alpha + conv.bias)[:, :, None, None])[:, :, 0, 0].double().numpy()
    got = s.double().numpy() * scale + shift
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_rsign_and_batch_norm_fold_into_the_sign_threshold():
    """BN -> RSign -> binary layer: one sign op, thresh = the x where BN(x) + shift = 0."""
    norm = nn.BatchNorm2d(4)
    rsign = bn.nn.RSign(4)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), norm, rsign,
                          bn.nn.BinaryConv2d(4, 4, 1, bias=False), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2))
    x = torch.randn(16, 3, 4, 4)
    realistic(model, x)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.5, -0.5, 0.0, 2.0]))
        norm.bias.copy_(torch.tensor([0.1, 0.2, 0.3, -0.3]))
    packed = export(model, x[:4])
    assert ops_of(packed)[:5] == ["input_float", "conv_real", "relu", "sign", "bconv"]
    op = packed.ops[3]
    thresh = packed.tensors[op["tensors"]["thresh"]]
    flip = packed.tensors[op["tensors"]["flip"]]
    assert flip.tolist() == [False, True, False, False]
    assert thresh[2] == -np.inf  # gamma 0: BN gives beta = 0.3, + shift 0 >= 0: always +1
    with torch.no_grad():
        a = (norm.weight / torch.sqrt(norm.running_var + norm.eps)).double()
        c = (norm.bias - norm.running_mean * a).double() + rsign.shift.double()
    for ch in (0, 1, 3):
        np.testing.assert_allclose(thresh[ch], float(-c[ch] / a[ch]), rtol=1e-6)


def test_flatten_permutes_the_next_dense_weight_to_nhwc():
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.Flatten(), nn.Linear(3 * 2 * 2, 4)).eval()
    packed = export(model, torch.randn(2, 2, 2, 2))
    op = packed.ops[-1]
    w = packed.tensors[op["tensors"]["weight"]]
    want = model[2].weight.detach().reshape(4, 3, 2, 2).permute(0, 2, 3, 1).reshape(4, 12)
    np.testing.assert_array_equal(w, want.numpy())


def test_zoo_models_write_the_expected_ops():
    model = registry.get("reactnet_a", widths=(8, 16, 16)).eval()
    packed = export(model, torch.randn(2, 3, 32, 32))
    kinds = ops_of(packed)
    assert kinds[:2] == ["input_float", "conv_real"] and kinds[-3:] == [
        "global_avgpool", "flatten", "dense_real"]
    assert kinds.count("bconv") == 5 and kinds.count("concat") == 1
    assert kinds.count("sign") == 4  # one per RSign: the doubled 1x1 convs share theirs
    assert "scale_shift" not in kinds  # every batch norm folds into a conv
    quick = registry.get("quicknet", size="small", blocks=(1, 1), widths=(8, 16)).eval()
    packed = export(quick, torch.randn(2, 3, 32, 32))
    convs = [op for op in packed.ops if op["op"] == "bconv"]
    assert [op["pad_mode"] for op in convs] == ["one", "one"]
    assert ops_of(packed).count("scale_shift") == 2  # BN after ReLU: on the real stream


def test_shortcuts_are_written_before_the_binary_conv_they_are_added_to():
    """So that the engine can fuse each add into the binary conv's output transform."""
    model = registry.get("birealnet18", width=8, blocks=(2, 2)).eval()
    packed = export(model, torch.randn(2, 3, 32, 32))
    position = {op["name"]: i for i, op in enumerate(packed.ops)}
    kinds = {op["name"]: op["op"] for op in packed.ops}
    adds = [op["inputs"] for op in packed.ops if op["op"] == "add"]
    assert len(adds) == 4
    for a, b in adds:
        conv, shortcut = (a, b) if kinds[a] == "bconv" else (b, a)
        assert kinds[conv] == "bconv" and position[shortcut] < position[conv]


class FunctionalNet(nn.Module):
    """Users' functional idioms: view(x.size(0), -1), x.shape[0], mean over H and W."""

    def __init__(self, how):
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 2 * 2 if how in ("view", "reshape", "shape") else 4, 2)

    def forward(self, x):
        y = self.conv(x)
        if self.how == "view":
            y = y.view(y.size(0), -1)
        elif self.how == "reshape":
            y = torch.reshape(y, (y.shape[0], -1))
        elif self.how == "shape":
            y = y.reshape(y.shape[0], -1)
        elif self.how == "mean":
            y = y.mean((2, 3))
        elif self.how == "mean-keepdim":
            y = torch.mean(y, dim=[-1, -2], keepdim=True).flatten(1)
        else:
            y = nn.functional.adaptive_avg_pool2d(y, 1).flatten(1)
        return self.fc(y)


@pytest.mark.parametrize("how", ["view", "reshape", "shape", "mean", "mean-keepdim", "adaptive"])
def test_functional_flatten_and_pooling_idioms_export(how):
    model = FunctionalNet(how).eval()
    x = torch.randn(16, 3, 4, 4)
    packed = export(model, x[:2])
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(packed.predict(x.numpy()), want, rtol=1e-5, atol=1e-5)


def test_other_uses_of_the_shape_are_refused():
    class HalfView(FunctionalNet):
        def forward(self, x):
            y = self.conv(x)
            return self.fc(y.view(y.size(0) * 1, -1))

    with pytest.raises(ExportError, match="function 'mul' in the model's forward"):
        export(HalfView("view").eval(), torch.randn(2, 3, 4, 4))


# -- errors --------------------------------------------------------------------------------------
class Sigmoid(nn.Module):
    def forward(self, x):
        return torch.sigmoid(x)


class Branchy(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


class MyBN(nn.BatchNorm1d):
    def forward(self, x):
        return torch.cos(x)


def head(*middle):
    return [nn.Conv2d(3, 4, 1), *middle, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)]


@pytest.mark.parametrize("layers, message", [
    (head(nn.GELU()), r"module '1' \(GELU\) is not supported by export"),
    (head(Sigmoid()), r"function 'sigmoid' in module '1' \(Sigmoid\) is not supported"),
    (head(Branchy()), r"module '1' \(Branchy\) cannot be traced by torch.fx"),
    (head(nn.AvgPool2d(2, divisor_override=3)), r"module '1' \(AvgPool2d\): divisor_override"),
    (head(nn.AdaptiveAvgPool2d(2)), r"only output_size 1"),
    ([nn.Flatten(), nn.Linear(48, 8), MyBN(8), nn.Linear(8, 2)],
     r"module '2' \(MyBN\) is not supported by export"),
    ([nn.Conv2d(3, 4, 1), bn.nn.Sign(), nn.Flatten()], "returns binary \\(\\+-1\\) activations"),
    ([nn.Conv2d(3, 4, 1)], r"returns per-sample shape \(4, 4, 4\)"),
    ([nn.Conv2d(3, 4, 1), bn.nn.Sign(), nn.BatchNorm2d(4), nn.Flatten()],
     r"module '2' \(BatchNorm2d\): takes binary"),
])
def test_unsupported_modules_and_functions_are_named(layers, message):
    with pytest.raises(ExportError, match=message):
        export(nn.Sequential(*layers).eval(), torch.randn(2, 3, 4, 4))


def test_lstm_and_a_sigmoid_call_are_named():
    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(4, 4)

        def forward(self, x):
            return self.rnn(x)[0]  # (N, 4) read as an unbatched sequence of N steps

    with pytest.raises(ExportError, match=r"module 'rnn' \(LSTM\) is not supported"):
        export(Recurrent().eval(), torch.randn(2, 4))

    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return torch.sigmoid(self.fc(x))

    with pytest.raises(ExportError, match=r"function 'sigmoid' in the model's forward"):
        export(Gate().eval(), torch.randn(2, 4))


def test_a_batch_norm_with_a_negative_variance_is_named():
    model = nn.Sequential(*head(nn.BatchNorm2d(4))).eval()
    model[1].running_var[2] = -1.0
    with pytest.raises(ExportError, match=r"module '1' \(BatchNorm2d\): .* non-finite affine"):
        export(model, torch.randn(2, 3, 4, 4))


def test_in_place_ops_on_a_tensor_read_elsewhere_are_refused():
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.act = nn.ReLU(inplace=True)
            self.head = nn.Sequential(*head()[1:])

        def forward(self, x):
            y = self.conv(x)
            return self.head(self.act(y) + y)  # torch adds relu(y) to itself here

    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ExportError, match=r"module 'act' \(ReLU\): works in place on a tensor"):
        export(InPlace().eval(), x)

    class Accumulate(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
            self.head = nn.Sequential(*head()[1:])

        def forward(self, x):
            z = self.conv1(x)
            z += self.conv2(x)
            return self.head(z)

    packed = export(Accumulate().eval(), x)  # `z += y` on a tensor nothing else reads: an add
    assert "add" in [op["op"] for op in packed.ops]


def test_a_binary_layer_with_a_non_sign_quantizer_is_refused():
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 8),
                          bn.nn.BinaryLinear(8, 2, input_quantizer=torch.tanh, scale="mean_abs"))
    with pytest.raises(ExportError, match="input_quantizer does not binarize as sign"):
        export(model.eval(), torch.randn(2, 3, 4, 4))


def test_a_refused_chain_names_both_reasons():
    model = nn.Sequential(nn.Flatten(), bn.nn.BinaryLinear(12, 8), nn.BatchNorm1d(8),
                          bn.nn.Sign()).eval()
    with pytest.raises(ExportError, match="ends with binary activations.*traced export also "
                                          "refuses it: the model returns binary"):
        export(model, torch.randn(4, 12))


def test_a_model_failing_on_the_example_input_is_a_clear_error():
    with pytest.raises(ExportError, match=r"module '0' \(Conv2d\) fails on the example input "
                                          r"of shape \(2, 5, 4, 4\): .*channels"):
        export(nn.Sequential(*head()).eval(), torch.randn(2, 5, 4, 4))


# -- summary of DAG files ------------------------------------------------------------------------
def test_summary_of_a_dag_file_counts_binary_real_and_elementwise_work(tmp_path):
    """``binarynet summary model.bnn`` on a DAG: the MACs of the torch model, split the same way
    (binary convs on +-1 input, real convs and the classifier on floats), plus the real stream's
    elementwise operations."""
    model = registry.get("reactnet18", width=8, blocks=(1, 1))
    x = torch.randn(16, 3, 32, 32)
    packed = export(realistic(model, x), x[:2])
    path = tmp_path / "model.bnn"
    packed.save(path)
    packed_summary = bn.summary.summary(str(path))
    torch_summary = bn.summary.summary(model, (3, 32, 32))
    assert packed_summary.binary_macs == torch_summary.binary_macs > 0
    assert packed_summary.multibit_macs == torch_summary.multibit_macs > 0
    assert packed_summary.binary_params == torch_summary.binary_params
    rows = {row.name: row for row in packed_summary.layers}
    assert rows["1.0.body.1"].input_bits == 1 and rows["0.0"].input_bits == 32
    # the input (3x32x32); on 8x32x32 maps two signs, an add and a PReLU; the 2x2 average
    # pool (4 taps per 8x16x16 output); on 16x16x16 maps an add, a PReLU, the global pool
    assert packed_summary.elementwise_ops == 3 * 1024 + 4 * 8192 + 4 * 2048 + 3 * 4096
    assert "Real-stream float operations per sample" in str(packed_summary)
