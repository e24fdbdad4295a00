"""PackedModel: predict/save/load/summary, input checks, batching, and torch-free use."""
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import binarynet as bn
from binarynet import engine
from binarynet.engine import _core, backends, kernels
from binarynet.errors import BinarynetError
from binarynet.export import export
from engine_fixtures import predict_without_torch


@pytest.fixture(scope="module")
def cnn():
    """A small exported CNN (paper layout, reduced) and a batch of uint8 images."""
    torch.manual_seed(0)
    model = bn.models.get("cifar10_vgg", widths=(8, 16), fc=(32,), image_size=8).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-5, 5)
                m.weight.uniform_(-1, 1)
    x = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8)
    packed = export(model, x, input_scale=2 / 255, input_offset=-1.0)
    return model, packed, x.numpy()


def test_save_load_round_trip_predicts_the_same(cnn, tmp_path):
    _, packed, x = cnn
    size = packed.save(tmp_path / "m.bnn")
    loaded = engine.load(tmp_path / "m.bnn")
    assert size == os.path.getsize(tmp_path / "m.bnn")
    assert loaded.graph == packed.graph
    np.testing.assert_array_equal(loaded.predict(x), packed.predict(x))
    assert loaded.summary() == packed.summary()
    assert loaded.summary().splitlines()[-1].endswith(f"= file {size} bytes")


def test_batching_does_not_change_results(cnn):
    _, packed, x = cnn
    whole = packed.predict(x)
    for batch_size in (1, 5, 100):
        np.testing.assert_array_equal(packed.predict(x, batch_size=batch_size), whole)
    assert whole.dtype == np.float32 and whole.shape == (12, 10)


def test_reference_runner_equals_kernels(cnn):
    _, packed, x = cnn
    reference = engine.PackedModel(packed.graph, packed.tensors, reference=True)
    np.testing.assert_array_equal(reference.predict(x), packed.predict(x))


def test_float_and_uint8_inputs_agree_when_float_is_exact():
    """x_f = x_u8/64 - 2 is exact in float32: both first-layer paths give the same logits."""
    torch.manual_seed(1)
    model = bn.models.get("mnist_mlp", hidden=70, depth=2, in_shape=(1, 6, 6)).eval()
    x = torch.randint(0, 256, (30, 1, 6, 6), dtype=torch.uint8)
    packed = export(model, x, input_scale=1 / 64, input_offset=-2.0, first_layer="int")
    x_u8 = x.numpy()
    np.testing.assert_allclose(packed.predict(x_u8), packed.predict(x_u8 / np.float32(64) - 2),
                               rtol=1e-6, atol=1e-5)


def test_input_checks(cnn):
    model, packed, x = cnn
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, 8, 8\), got \(12, 8, 8, 3\)"):
        packed.predict(x.transpose(0, 2, 3, 1))
    with pytest.raises(TypeError, match="x must be uint8 images or floats, got dtype int32"):
        packed.predict(x.astype(np.int32))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        packed.predict(x, batch_size=0)
    no_norm = export(model, torch.from_numpy(x).float() / 128 - 1)  # float input only
    with pytest.raises(ValueError, match="uint8 input needs the input normalisation"):
        no_norm.predict(x)


def test_float_first_layers_sum_in_the_kernel_not_blas(cnn, monkeypatch):
    """Float32 input to a first dense with bits out takes the C core's first_dense_float_sign
    (through kernels.prepare), to a first conv kernels.conv2d_float_sign (numpy's BLAS threads
    spin after each call and slowed the next op 1.9x), with the reference's results."""
    calls = []
    real_dense, real_conv = _core.first_dense_float_sign, kernels.conv2d_float_sign

    def spy_dense(x, *args):
        calls.append(("first_dense_float_sign", x.shape))
        return real_dense(x, *args)

    def spy_conv(x, *args, **kwargs):
        calls.append(("conv2d_float_sign", x.shape))
        return real_conv(x, *args, **kwargs)

    monkeypatch.setattr(_core, "first_dense_float_sign", spy_dense)
    monkeypatch.setattr(kernels, "conv2d_float_sign", spy_conv)
    torch.manual_seed(3)
    mlp = bn.models.get("mnist_mlp", hidden=70, depth=2, in_shape=(1, 6, 6)).eval()
    x_mlp = torch.randn(5, 1, 6, 6)
    for model, x in ((cnn[0], torch.randn(4, 3, 8, 8)), (mlp, x_mlp)):
        packed = export(model, x)
        reference = engine.PackedModel(packed.graph, packed.tensors, reference=True)
        calls.clear()
        np.testing.assert_allclose(packed.predict(x.numpy()), reference.predict(x.numpy()),
                                   rtol=1e-6, atol=1e-6)
        assert calls[0] == (("conv2d_float_sign", (4, 3, 8, 8)) if model is cnn[0]
                            else ("first_dense_float_sign", (5, 36)))


def test_per_channel_normalisation_uses_the_float_path():
    """Different scales per channel: no integer thresholds; uint8 is normalised in float64."""
    torch.manual_seed(2)
    model = bn.models.get("cifar10_vgg", widths=(4,), fc=(8,), image_size=4).eval()
    scale, offset = [1 / 64, 1 / 32, 1 / 16], [-2.0, -4.0, -8.0]
    x = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8)
    packed = export(model, x, input_scale=scale, input_offset=offset)
    assert "0.thresh" not in packed.tensors
    x_f = (x.double() * torch.tensor(scale).view(1, 3, 1, 1)
           + torch.tensor(offset).view(1, 3, 1, 1)).float()
    with torch.no_grad():
        want = model(x_f).numpy()
    np.testing.assert_allclose(packed.predict(x.numpy()), want, rtol=1e-5, atol=1e-4)


def test_repr_and_summary_list_every_op(cnn):
    _, packed, _ = cnn
    text = packed.summary()
    for op in packed.ops:
        assert f"{op['op']} ({op['name']})" in text
    assert "first_conv" in repr(packed)


def torch_in_engine_sources() -> list:
    """"file:line" of every line of the engine's Python sources that names the torch package."""
    folder = Path(engine.__file__).parent
    sources = sorted(folder.glob("*.py"))
    assert {"__init__.py", "model.py", "runner.py", "backends.py"} <= {p.name for p in sources}
    return [f"{p.name}:{n}" for p in sources
            for n, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(r"\btorch\b", line, re.IGNORECASE)]


def test_engine_works_without_torch(cnn, tmp_path):
    """Load and predict in a subprocess where importing torch fails; and no engine module's
    source names torch, not even for a lazy import (the CUDA backend registers itself from
    binarynet.gpu; docs/design.md: the engine never touches torch)."""
    assert torch_in_engine_sources() == []
    _, packed, x = cnn
    result = predict_without_torch(tmp_path, packed, x, then="""
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch could be imported")
    """)
    assert result.returncode == 0, result.stderr
    assert "ok: torch-free" in result.stdout


def test_unknown_and_unavailable_backends(cnn, monkeypatch):
    _, packed, x = cnn
    with pytest.raises(ValueError, match="device must be one of 'cpu', 'cuda'"):
        packed.to("tpu")
    # a known backend whose module cannot be imported: one clear error, not an ImportError
    monkeypatch.setitem(backends.KNOWN_BACKENDS, "fpga", ("binarynet.no_such_module", "an FPGA"))
    with pytest.raises(BinarynetError, match=r"PackedModel.to\('fpga:1'\) needs an FPGA"):
        packed.to("fpga:1")


def test_registered_backend_runs_the_graph(cnn, monkeypatch):
    """A backend registered by name is found by to(); it runs the same op code."""
    _, packed, x = cnn
    made = []

    class Traced(backends.CpuBackend):
        def __init__(self, device):
            super().__init__()
            self.device = device
            made.append(device)

    monkeypatch.setattr(backends, "_FACTORIES", {})
    engine.register_backend("traced", Traced)
    moved = packed.to("traced:3")
    assert made == ["traced:3"] and moved.device == "traced:3" and packed.device == "cpu"
    assert moved.to("traced:3") is moved
    np.testing.assert_array_equal(moved.predict(x), packed.predict(x))
    assert moved.to("cpu").device == "cpu"
    with pytest.raises(ValueError, match="identifier other than 'cpu'"):
        engine.register_backend("cpu", Traced)


def test_grouped_conv_and_odd_channels_match_torch():
    """Groups (int32 path per group, channel slices not word aligned) and a flatten repack."""
    torch.manual_seed(4)
    nn = torch.nn
    model = nn.Sequential(
        bn.nn.BinaryConv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), bn.nn.Sign(),
        bn.nn.BinaryConv2d(6, 9, 3, padding=1, groups=3, pad_value=-1.0), nn.MaxPool2d(2),
        nn.BatchNorm2d(9), bn.nn.Sign(), nn.Flatten(), bn.nn.BinaryLinear(9 * 9, 5)).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-4, 4)
    x = (torch.randint(0, 256, (7, 2, 6, 6)).float() / 64 - 2)
    packed = export(model, x)
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(packed.predict(x.numpy()), want, rtol=1e-5, atol=1e-4)
    assert [op["op"] for op in packed.ops] == ["first_conv", "conv", "maxpool", "flatten",
                                                "dense_logits"]
