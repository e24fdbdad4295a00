"""Graph validation at load: bounded geometry, bounded working memory, pad bits, finite floats.

Every file here has valid hashes (written by format.encode): only the graph's own checks can
refuse it, and they must do so at load, naming the layer, with a ModelFileError.
"""
import numpy as np
import pytest

from binarynet import engine
from binarynet.engine import format as fmt
from binarynet.engine import memory
from binarynet.errors import BinarynetError, ModelFileError
from engine_fixtures import tiny_dense_model as dense_model


def conv_model(size=6, out=4, padding=1, pool=2):
    """float image (1, size, size) -> first_conv 3x3 -> conv 3x3 -> maxpool -> flatten -> logits."""
    conv_out = size  # 3x3 kernels with padding 1 keep the size
    pooled = (conv_out - pool) // pool + 1
    flat = pooled * pooled * out
    graph = {
        "input": {"shape": [1, size, size], "scale": None, "offset": None},
        "num_classes": 2,
        "ops": [
            {"op": "first_conv", "name": "c1", "in_channels": 1, "out_channels": out,
             "kernel": [3, 3], "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1],
             "groups": 1, "mode": "bitplane", "output": "bits", "pad_value": 0.0,
             "tensors": {"weight": "c1.w", "bias": "c1.b", "vthresh": "c1.v", "flip": "c1.f"}},
            {"op": "conv", "name": "c2", "in_channels": out, "out_channels": out,
             "kernel": [3, 3], "stride": [1, 1], "padding": [padding, padding],
             "dilation": [1, 1], "groups": 1, "pad_mode": "zero",
             "tensors": {"weight": "c2.w", "thresh": "c2.t", "flip": "c2.f"}},
            {"op": "maxpool", "name": "p2", "kernel": [pool, pool], "stride": [pool, pool],
             "tensors": {"flip": "c2.f"}},
            {"op": "flatten", "name": "flat", "tensors": {}},
            {"op": "dense_logits", "name": "fc", "in_features": flat, "out_features": 2,
             "tensors": {"weight": "fc.w", "scale": "fc.s", "shift": "fc.h"}},
        ],
    }
    rng = np.random.default_rng(0)
    fc_words = -(-flat // 64)
    fc_w = rng.integers(0, 2**63, (2, fc_words), dtype=np.uint64)
    if flat % 64:
        fc_w[:, -1] &= np.uint64((1 << (flat % 64)) - 1)
    tensors = {
        "c1.w": rng.integers(0, 2**9, (out, 1), dtype=np.uint64),
        "c1.b": rng.standard_normal(out).astype(np.float32),
        "c1.v": np.array([0.5, -np.inf, np.inf, 0.0] * (out // 4), np.float32),
        "c1.f": np.arange(out) % 2 == 0,
        "c2.w": rng.integers(0, 2**out, (out, 3, 3, 1), dtype=np.uint64),
        "c2.t": np.zeros(out, np.int32),
        "c2.f": np.arange(out) % 3 == 0,
        "fc.w": fc_w, "fc.s": np.ones(2), "fc.h": np.zeros(2),
    }
    return graph, tensors


def load_edited(tmp_path, model, change=None, **load_args):
    graph, tensors = model
    if change is not None:
        change(graph, tensors)
    path = tmp_path / "m.bnn"
    path.write_bytes(fmt.encode(graph, tensors))
    return engine.load(path, **load_args)


def test_the_valid_models_load_and_predict(tmp_path):
    model = load_edited(tmp_path, conv_model())
    x = np.random.default_rng(1).standard_normal((3, 1, 6, 6)).astype(np.float32)
    assert model.predict(x).shape == (3, 2)
    assert load_edited(tmp_path, dense_model()).predict(np.ones((1, 5), np.float32)).shape == (1, 3)


@pytest.mark.parametrize("change, message", [
    (lambda g, t: g["ops"][1].update(padding=[1000, 1000]),
     "op 1 \\(layer 'c2'\\): conv: attribute 'padding' must be a pair of integers in \\[0, 64\\]"),
    (lambda g, t: g["ops"][1].update(stride=[65, 1]), "'stride' must be a pair of integers in \\[1, 64\\]"),
    (lambda g, t: g["ops"][1].update(dilation=[1, 100]), "'dilation' must be a pair of integers in \\[1, 64\\]"),
    (lambda g, t: g["ops"][1].update(kernel=[65, 65]), "'kernel' must be a pair of integers in \\[1, 64\\]"),
    (lambda g, t: g["ops"][2].update(stride=[2**70, 2]),
     "op 2 \\(layer 'p2'\\): maxpool: attribute 'stride' must be a pair of integers in \\[1, 64\\]"),
    (lambda g, t: g["ops"][1].update(groups=8), "'groups' must be an integer in \\[1, 4\\]"),
    (lambda g, t: g["ops"][0].update(out_channels=1 << 17), "'out_channels' must be an integer in \\[1, 65536\\]"),
    (lambda g, t: g["input"].update(shape=[1, 20000, 6]), "input shape must be .*H, W <= 16384"),
    (lambda g, t: g.update(num_classes=10**4000), "num_classes must be an integer in \\[1, 1048576\\], got 1000.*\\.\\.\\."),
    (lambda g, t: g["input"].update(scale=[10**400], offset=[0.0]), "input scale must be null or 1 finite numbers"),
])
def test_geometry_beyond_any_real_model_is_refused(tmp_path, change, message):
    with pytest.raises(ModelFileError, match="invalid graph: .*" + message):
        load_edited(tmp_path, conv_model(), change)


def big_first_conv(size=1024, out=256):
    """A 5 KB file whose first conv would need ~2.3 GiB per sample (int sums of 1M positions)."""
    graph = {
        "input": {"shape": [1, size, size], "scale": None, "offset": None},
        "num_classes": 2,
        "ops": [
            {"op": "first_conv", "name": "big", "in_channels": 1, "out_channels": out,
             "kernel": [3, 3], "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1],
             "groups": 1, "mode": "bitplane", "output": "bits", "pad_value": 0.0,
             "tensors": {"weight": "w", "bias": "b", "vthresh": "v", "flip": "f"}},
            {"op": "maxpool", "name": "pool", "kernel": [64, 64], "stride": [64, 64],
             "tensors": {"flip": "f"}},
            {"op": "flatten", "name": "flat", "tensors": {}},
            {"op": "dense_logits", "name": "fc", "in_features": 16 * 16 * out, "out_features": 2,
             "tensors": {"weight": "fw", "scale": "s", "shift": "h"}},
        ],
    }
    tensors = {"w": np.zeros((out, 1), np.uint64), "b": np.zeros(out, np.float32),
               "v": np.zeros(out, np.float32), "f": np.zeros(out, bool),
               "fw": np.zeros((2, 16 * 16 * out // 64), np.uint64), "s": np.ones(2),
               "h": np.zeros(2)}
    return graph, tensors


def test_working_memory_is_bounded_and_the_bound_can_be_raised(tmp_path, monkeypatch):
    monkeypatch.delenv(memory.ENV_MAX_BYTES, raising=False)
    with pytest.raises(ModelFileError, match="op 0 \\(layer 'big'\\): first_conv: one sample needs "
                       "about 2\\.[0-9] GiB of working memory, over the limit of 1\\.0 GiB.*"
                       "load\\(path, max_bytes=...\\) or the environment variable "
                       "BINARYNET_MAX_BYTES"):
        load_edited(tmp_path, big_first_conv())
    assert load_edited(tmp_path, big_first_conv(), max_bytes=3 << 30).num_classes == 2
    monkeypatch.setenv(memory.ENV_MAX_BYTES, str(3 << 30))
    assert load_edited(tmp_path, big_first_conv()).num_classes == 2
    # a small bound refuses even the small model; a bad setting is one clear error
    with pytest.raises(ModelFileError, match="over the limit of 1000 bytes"):
        load_edited(tmp_path, conv_model(), max_bytes=1000)
    monkeypatch.setenv(memory.ENV_MAX_BYTES, "lots")
    with pytest.raises(BinarynetError, match="\\$BINARYNET_MAX_BYTES must be a positive integer"):
        load_edited(tmp_path, conv_model())


def set_pad_bit(graph, tensors, name, bit):
    tensors[name] = tensors[name].copy()
    tensors[name][(0,) * (tensors[name].ndim - 1) + (-1,)] |= np.uint64(1 << bit)


@pytest.mark.parametrize("model, name, bit, layer", [
    (dense_model, "fc.weight", 5, "fc"),     # 5 features: bits 5..63 are padding
    (conv_model, "c1.w", 9, "c1"),           # 3x3x1 taps
    (conv_model, "c2.w", 4, "c2"),           # 4 channels
    (conv_model, "fc.w", 63, "fc"),          # 3*3*4 = 36 features
])
def test_weight_pad_bits_are_checked_at_load(tmp_path, model, name, bit, layer):
    """Found only at predict before (or never, by the first layer's float path)."""
    with pytest.raises(ModelFileError, match=f"layer '{layer}'.*weight has pad bits set beyond"):
        load_edited(tmp_path, model(), lambda g, t: set_pad_bit(g, t, name, bit))


@pytest.mark.parametrize("name, value, message", [
    ("fc.scale", np.nan, "tensor 'fc.scale' \\(scale\\) holds NaN or infinite values"),
    ("fc.shift", np.inf, "tensor 'fc.shift' \\(shift\\) holds NaN or infinite values"),
])
def test_non_finite_scales_and_shifts_are_refused(tmp_path, name, value, message):
    def change(graph, tensors):
        tensors[name] = tensors[name].copy()
        tensors[name][1] = value
    with pytest.raises(ModelFileError, match=message):
        load_edited(tmp_path, dense_model(), change)


def test_nan_bias_and_vthresh_are_refused_but_infinite_vthresh_is_a_constant_channel(tmp_path):
    assert np.isinf(conv_model()[1]["c1.v"]).any()  # exported models have them: they load
    for name, role in (("c1.b", "bias"), ("c1.v", "vthresh")):
        def change(graph, tensors):
            tensors[name] = tensors[name].copy()
            tensors[name][0] = np.nan
        with pytest.raises(ModelFileError, match=f"tensor '{name}' \\({role}\\) holds NaN"):
            load_edited(tmp_path, conv_model(), change)
