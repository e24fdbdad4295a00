"""The engine runs format-3 DAGs: hand-built residual graphs against torch computing the same
thing, the fused and unfused plans, trace, format-2 files, and use without torch."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from binarynet.engine import backends, float_ops, plan, reference
from binarynet.errors import BinarynetError
from dag_fixtures import GraphBuilder, conv_attrs, f32, packed, pm1, residual_net
from engine_fixtures import predict_without_torch


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def channels(v):
    """A per-channel vector broadcast over NCHW."""
    return t(v).view(1, -1, 1, 1)


def torch_sign(x, thresh, flip):
    """+-1 of x >= thresh (x <= thresh where flip), per channel of NCHW."""
    up = torch.where(channels(flip), x <= channels(thresh), x >= channels(thresh))
    return torch.where(up, 1.0, -1.0)


def torch_prelu(x, params):
    shift_in, slope, shift_out = params
    z = x + channels(shift_in)
    return torch.where(z > 0, z, channels(slope) * z) + channels(shift_out)


def torch_bconv(bits, w_pm1, scale, shift, **kw):
    s = F.conv2d(bits, t(w_pm1).permute(0, 3, 1, 2), **kw)  # exact small integers
    return s * channels(scale) + channels(shift)


def residual_net_torch(p, x):
    """What residual_net computes, in torch NCHW float32."""
    y = F.conv2d(x, t(p["stem.w"]).permute(0, 3, 1, 2), t(p["stem.b"]), padding=1)
    y = torch_prelu(y * channels(p["bn0.s"]) + channels(p["bn0.h"]), p["act0"])
    b = torch_bconv(torch_sign(y, p["s1.t"], p["s1.f"]), p["b1.w"], p["b1.s"], p["b1.h"],
                    padding=1)
    y1 = torch_prelu(b * channels(p["bn1.s"]) + channels(p["bn1.h"]) + y, p["act1"])
    b = torch_bconv(torch_sign(y1, p["s2.t"], p["s2.f"]), p["b2.w"], p["b2.s"], p["b2.h"],
                    stride=2, padding=1)
    y2 = torch.relu(F.avg_pool2d(y1, 2, 2) + b)
    y = torch.cat([y2, F.max_pool2d(y1, 3, 2, 1)], 1)
    y = F.conv2d(y, t(p["proj.w"]).permute(0, 3, 1, 2), t(p["proj.b"]))
    y = F.adaptive_avg_pool2d(y, 1).flatten(1)
    return F.linear(y, t(p["fc.w"]), t(p["fc.b"]))


@pytest.mark.parametrize("seed", [0, 1])
def test_a_residual_dag_with_every_new_op_equals_torch(seed):
    g, p = residual_net(seed)
    x = np.random.default_rng(seed + 10).standard_normal((6, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = residual_net_torch(p, t(x)).numpy()
    model = g.model()
    np.testing.assert_allclose(model.predict(x), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(g.model(reference=True).predict(x), model.predict(x))


# -- each op of the real-valued stream against torch --------------------------------------------
def nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def nchw(y):
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_conv_real_equals_torch(data):
    """Odd channel counts, stride, padding, dilation, groups (depthwise with a multiplier)."""
    draw = data.draw
    c = draw(st.sampled_from([1, 3, 5, 6]))
    groups = draw(st.sampled_from([g for g in (1, 2, 3, c) if c % g == 0]))
    o = groups * draw(st.integers(1, 3))
    k, stride, dilation = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    padding = draw(st.integers(0, 2))
    size = draw(st.integers(dilation * (k - 1) + 1, 7))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    x = rng.standard_normal((2, c, size, size)).astype(np.float32)
    w = rng.standard_normal((o, c // groups, k, k)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    got = float_ops.conv_real(nhwc(x), np.ascontiguousarray(w.transpose(0, 2, 3, 1)), b,
                              (stride, stride), (padding, padding), (dilation, dilation), groups)
    want = F.conv2d(t(x), t(w), t(b), stride, padding, dilation, groups).numpy()
    np.testing.assert_allclose(nchw(got), want, rtol=1e-5, atol=1e-5)


def pool_case(draw):
    k = draw(st.integers(1, 4))
    stride = draw(st.integers(1, 3))
    padding = draw(st.integers(0, k // 2))
    h, w = draw(st.integers(max(1, k - 2 * padding), 9)), draw(st.integers(max(1, k - 2 * padding), 9))
    seed = draw(st.integers(0, 2**31))
    x = np.random.default_rng(seed).standard_normal((2, 3, h, w)).astype(np.float32)
    return x, (k, k), (stride, stride), (padding, padding), draw(st.booleans())


@settings(max_examples=150, deadline=None)
@given(data=st.data(), count_include_pad=st.booleans())
def test_avgpool_equals_torch_with_ceil_mode_and_padding(data, count_include_pad):
    x, kernel, stride, padding, ceil_mode = pool_case(data.draw)
    got = float_ops.avgpool(nhwc(x), kernel, stride, padding, ceil_mode, count_include_pad)
    want = F.avg_pool2d(t(x), kernel, stride, padding, ceil_mode, count_include_pad).numpy()
    assert got.shape == nhwc(want).shape
    np.testing.assert_allclose(nchw(got), want, rtol=1e-5, atol=1e-6)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_maxpool_real_equals_torch_with_ceil_mode_and_padding(data):
    x, kernel, stride, padding, ceil_mode = pool_case(data.draw)
    got = float_ops.maxpool_real(nhwc(x), kernel, stride, padding, ceil_mode)
    want = F.max_pool2d(t(x), kernel, stride, padding, ceil_mode=ceil_mode).numpy()
    np.testing.assert_array_equal(nchw(got), want)


def test_elementwise_ops_equal_torch_float32_exactly():
    """Two roundings (no fused multiply-add), negative and zero scales, PReLU and RPReLU."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3, 5, 7)).astype(np.float32)
    scale, shift = np.array([-1.5, 0.0, 0.3], np.float32), rng.standard_normal(3).astype(np.float32)
    np.testing.assert_array_equal(
        nchw(float_ops.scale_shift(nhwc(x), scale, shift)),
        (t(x) * channels(scale) + channels(shift)).numpy())
    slope = np.array([0.25, -0.5, 0.0], np.float32)
    zero = np.zeros(3, np.float32)
    np.testing.assert_array_equal(nchw(float_ops.prelu(nhwc(x), zero, slope, zero)),
                                  F.prelu(t(x), t(slope)).numpy())
    params = (shift, slope, scale)
    np.testing.assert_array_equal(nchw(float_ops.prelu(nhwc(x), *params)),
                                  torch_prelu(t(x), params).numpy())
    np.testing.assert_array_equal(nchw(float_ops.relu(nhwc(x))), torch.relu(t(x)).numpy())
    np.testing.assert_allclose(nchw(float_ops.global_avgpool(nhwc(x))),
                               F.adaptive_avg_pool2d(t(x), 1).numpy(), rtol=1e-6, atol=1e-7)
    u8 = rng.integers(0, 256, (2, 3, 4, 4), dtype=np.uint8)
    want = (t(u8).float() * channels(scale) + channels(shift)).numpy()
    np.testing.assert_array_equal(nchw(float_ops.input_float(u8, scale.tolist(), shift.tolist())),
                                  want)


@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (2, 1, 4, 3), (1, 16, 3, 2), (2, 17, 2, 3)])
def test_nchw_images_become_contiguous_nhwc_values(shape):
    """float_ops.nchw_to_nhwc copies one channel plane at a time (few channels) or the
    transposed view (many): the same values either way, C-contiguous."""
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    for got in (float_ops.nchw_to_nhwc(x), float_ops.input_float(x)):
        assert got.flags.c_contiguous and got.dtype == np.float32
        np.testing.assert_array_equal(got, x.transpose(0, 2, 3, 1))
    # uint8 images: scaled and shifted per channel plane into the NHWC result, each operation
    # rounded to float32 as numpy rounds the whole-array expression
    rng = np.random.default_rng(6)
    u8 = rng.integers(0, 256, shape, dtype=np.uint8)
    scale = (rng.random(shape[1]) / 37).astype(np.float32)
    offset = rng.standard_normal(shape[1]).astype(np.float32)
    got = float_ops.input_float(u8, scale, offset)
    want = u8.astype(np.float32) * scale.reshape(1, -1, 1, 1) + offset.reshape(1, -1, 1, 1)
    assert got.flags.c_contiguous and got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), want.transpose(0, 2, 3, 1).view(np.uint32))


def test_sign_ties_flip_and_infinite_thresholds():
    """x == thresh gives +1 both ways (x >= t; x <= t where flip); -inf/+inf: constant channels."""
    thresh = np.array([0.5, 0.5, -np.inf, np.inf, np.inf], np.float32)
    flip = np.array([False, True, False, False, True])
    x = np.array([[0.5, 0.5, -3e38, 3e38, -3e38], [0.4, 0.6, 0.0, 0.0, 0.0]], np.float32)
    got = float_ops.sign(x, thresh, flip)
    np.testing.assert_array_equal(got, [[True, True, True, False, True],
                                        [False, False, True, False, True]])
    np.testing.assert_array_equal(torch_sign(t(x).view(2, 5, 1, 1), thresh, flip).view(2, 5) > 0,
                                  got)


# -- the fused plan -----------------------------------------------------------------------------
class ContractKernels:
    """The reference kernels plus the fused ones of graph_v3's contract, written in numpy here
    (reference.bconv2d / bgemm, then float_ops), counting their calls."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return getattr(reference, name)

    def _finish(self, s, scale, shift, steps, residual, sign_thresh, sign_flip, float_out):
        assert float_out or sign_thresh is not None
        assert len(steps) <= plan.MAX_STEPS and (residual is None or residual.flags.c_contiguous)
        y = float_ops.output_transform(s, scale, shift)
        assert [step[0] for step in steps].count("add") <= 1
        for step in steps:
            y = float_ops.apply_step(y, step, residual)
        bits = None if sign_thresh is None else reference.pack(
            float_ops.sign(y, sign_thresh, sign_flip).astype(np.int8) * 2 - 1)
        self.calls.append((len(steps), sign_thresh is not None, float_out))
        return (y if float_out else None), bits

    def bconv2d_transform(self, x, w, c, scale, shift, *, steps=(), residual=None,
                          sign_thresh=None, sign_flip=None, float_out=True, **geometry):
        return self._finish(reference.bconv2d(x, w, c, **geometry), scale, shift, steps,
                            residual, sign_thresh, sign_flip, float_out)

    def bgemm_transform(self, a, w, k, scale, shift, *, steps=(), residual=None,
                        sign_thresh=None, sign_flip=None, float_out=True):
        return self._finish(reference.bgemm(a, w, k), scale, shift, steps, residual,
                            sign_thresh, sign_flip, float_out)


class ContractBackend(backends.CpuBackend):
    def __init__(self):
        super().__init__(reference=True)
        self.kernels = ContractKernels()


def mlp_dag(seed=0, k=70, hidden=65, classes=7):
    """float input -> sign -> bdense -> bn -> rprelu -> sign -> bdense -> bn (float logits)."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder((k,), classes)
    g.op("input_float", "in")
    g.op("sign", "s0", tensors={"thresh": f32(rng, k, -0.3, 0.3), "flip": rng.random(k) < 0.5})
    for n, (i, o) in enumerate(((k, hidden), (hidden, classes))):
        g.op("bdense", f"d{n}", in_features=i, out_features=o,
             tensors={"weight": packed(pm1(rng, (o, i))), "scale": f32(rng, o, -0.2, 0.2),
                      "shift": f32(rng, o)})
        g.op("scale_shift", f"bn{n}", tensors={"scale": f32(rng, o, -2, 2), "shift": f32(rng, o)})
        if n == 0:
            g.op("prelu", "act", tensors={"shift_in": f32(rng, o), "slope": f32(rng, o),
                                          "shift_out": f32(rng, o)})
            g.op("sign", "s1", tensors={"thresh": f32(rng, o, -0.5, 0.5),
                                        "flip": rng.random(o) < 0.5})
    return g


def test_a_binary_mlp_dag_equals_torch():
    """bdense with scale/shift, signs on flat values, and a float head as the output."""
    g = mlp_dag(1)
    x = np.random.default_rng(9).standard_normal((20, 70)).astype(np.float32)
    ops = {op["name"]: op for op in g.graph["ops"]}

    def tensor(name, role):
        return t(g.tensors[ops[name]["tensors"][role]])

    def sign(v, name):
        up = torch.where(tensor(name, "flip"), v <= tensor(name, "thresh"), v >= tensor(name, "thresh"))
        return torch.where(up, 1.0, -1.0)

    def bdense(v, name):
        w = t(reference.unpack(g.tensors[ops[name]["tensors"]["weight"]], ops[name]["in_features"]))
        return (v @ w.float().T) * tensor(name, "scale") + tensor(name, "shift")

    y = bdense(sign(t(x), "s0"), "d0") * tensor("bn0", "scale") + tensor("bn0", "shift")
    z = y + tensor("act", "shift_in")
    y = torch.where(z > 0, z, tensor("act", "slope") * z) + tensor("act", "shift_out")
    want = bdense(sign(y, "s1"), "d1") * tensor("bn1", "scale") + tensor("bn1", "shift")
    np.testing.assert_array_equal(g.model().predict(x), want.numpy())


@pytest.mark.parametrize("pad_mode, pad_value", [("zero", 0.0), ("one", 1.0), ("minus_one", -1.0)])
def test_a_grouped_strided_bconv_with_each_pad_mode_equals_torch(pad_mode, pad_value):
    """Groups over channel slices that are not word aligned (run unfused: the fused kernels
    take groups 1), stride 2, and the three readings of the padding."""
    rng = np.random.default_rng(11)
    g = GraphBuilder((6, 7, 7), 3)
    g.op("input_float", "in")
    thresh, flip = f32(rng, 6, -0.3, 0.3), rng.random(6) < 0.5
    g.op("sign", "s", tensors={"thresh": thresh, "flip": flip})
    w = pm1(rng, (4, 3, 3, 3))
    scale, shift = f32(rng, 4), f32(rng, 4)
    g.op("bconv", "b", pad_mode=pad_mode, **conv_attrs(6, 4, 3, stride=2, padding=1, groups=2),
         tensors={"weight": packed(w), "scale": scale, "shift": shift})
    g.op("global_avgpool", "gap")
    g.op("flatten", "flat")
    fc_w, fc_b = f32(rng, (3, 4)), f32(rng, 3)
    g.op("dense_real", "fc", in_features=4, out_features=3, tensors={"weight": fc_w, "bias": fc_b})
    x = rng.standard_normal((5, 6, 7, 7)).astype(np.float32)
    bits = F.pad(torch_sign(t(x), thresh, flip), (1, 1, 1, 1), value=pad_value)
    y = F.conv2d(bits, t(w).permute(0, 3, 1, 2), stride=2, groups=2)
    y = y * channels(scale) + channels(shift)
    want = F.linear(F.adaptive_avg_pool2d(y, 1).flatten(1), t(fc_w), t(fc_b))
    model = g.model()
    np.testing.assert_allclose(model.predict(x), want.numpy(), rtol=1e-5, atol=1e-5)
    fused = g.model(reference=True)._on_backend(ContractBackend())
    assert all(step.kind == "op" for step in fused._runner.plan)
    np.testing.assert_array_equal(fused.predict(x), model.predict(x))


def test_uint8_images_are_normalised_as_the_float_input_is():
    g, _ = residual_net(5)
    g.graph["input"].update(scale=[1 / 64, 1 / 128, 1 / 32], offset=[-2.0, -1.0, -4.0])
    u8 = np.random.default_rng(3).integers(0, 256, (4, 3, 8, 8), dtype=np.uint8)
    x_f = (u8.astype(np.float32) * np.float32([1 / 64, 1 / 128, 1 / 32]).reshape(1, 3, 1, 1)
           + np.float32([-2, -1, -4]).reshape(1, 3, 1, 1))
    model = g.model()
    np.testing.assert_array_equal(model.predict(u8), model.predict(x_f))


def test_fused_and_unfused_plans_give_identical_results():
    g, _ = residual_net(2)
    x = np.random.default_rng(5).standard_normal((3, 3, 8, 8)).astype(np.float32)
    unfused = g.model(reference=True)
    fused = unfused._on_backend(ContractBackend())
    steps = {fused.ops[s.ops[0]]["name"]: [fused.ops[i]["name"] for i in s.ops]
             for s in fused._runner.plan if s.kind == "transform"}
    # b1's chain runs through the add up to act1, which three ops read: s2 is folded and the
    # float value kept; b2's add reads pool2, listed after b2: b2's step waits for it
    assert steps == {"b1": ["b1", "bn1", "add1", "act1", "s2"], "b2": ["b2", "add2", "act2"]}
    order = [fused.ops[s.ops[0]]["name"] for s in fused._runner.plan]
    assert order.index("pool2") < order.index("b2") and order.index("b2") < order.index("cat")
    np.testing.assert_array_equal(fused.predict(x), unfused.predict(x))
    assert fused._runner.kernels.calls == [(3, True, True), (2, False, True)]
    trace = {name: v for name, _, v in fused.trace(x)}  # trace runs the ops one by one
    assert set(trace) == {op["name"] for op in fused.ops}


def test_a_folded_sign_drops_the_float_value_nobody_else_reads():
    g = mlp_dag()
    x = np.random.default_rng(6).standard_normal((5, 70)).astype(np.float32)
    unfused = g.model(reference=True)
    fused = unfused._on_backend(ContractBackend())
    assert [(s.kind, s.writes) for s in fused._runner.plan] == [
        ("op", (0,)), ("op", (1,)), ("transform", (5,)), ("transform", (7,))]
    np.testing.assert_array_equal(fused.predict(x), unfused.predict(x))
    assert fused._runner.kernels.calls == [(2, True, False), (1, False, True)]


def test_a_fused_steps_kernel_arguments_are_made_once_and_kept():
    """The runner makes a fused step's arguments (its steps, sign tensors) on the first run and
    passes the same objects on every later one: no per-run rebuilding."""
    x = np.random.default_rng(7).standard_normal((2, 70)).astype(np.float32)
    fused = mlp_dag().model(reference=True)._on_backend(ContractBackend())
    kernels, seen = fused._runner.kernels, []
    contract = kernels.bgemm_transform

    def spy(a, w, k, scale, shift, **kwargs):
        seen.append(kwargs["steps"])
        return contract(a, w, k, scale, shift, **kwargs)
    kernels.bgemm_transform = spy
    np.testing.assert_array_equal(fused.predict(x), fused.predict(x))
    assert len(seen) == 4 and seen[2] is seen[0] and seen[3] is seen[1]


def test_a_chain_longer_than_a_kernel_takes_continues_unfused():
    g = GraphBuilder((64,), 3)
    g.op("input_float", "in")
    g.op("sign", "s", tensors={"thresh": np.zeros(64, np.float32), "flip": np.zeros(64, bool)})
    g.op("bdense", "d", in_features=64, out_features=3, tensors={
        "weight": packed(pm1(np.random.default_rng(0), (3, 64))),
        "scale": np.full(3, 0.5, np.float32), "shift": np.full(3, -1.0, np.float32)})
    for n in range(plan.MAX_STEPS + 2):
        g.op("prelu" if n % 2 else "relu", f"a{n}", tensors={} if n % 2 == 0 else {
            "shift_in": np.full(3, -0.25, np.float32), "slope": np.full(3, -0.5, np.float32),
            "shift_out": np.full(3, 0.125, np.float32)})
    unfused = g.model(reference=True)
    fused = unfused._on_backend(ContractBackend())
    x = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
    np.testing.assert_array_equal(fused.predict(x), unfused.predict(x))
    assert fused._runner.kernels.calls == [(plan.MAX_STEPS, False, True)]
    assert len(fused._runner.plan) == 2 + 1 + 2  # in, s, the fused step, two ops left


def freed_at(model, steps) -> dict:
    """value name -> the name of the (first op of the) step after which it is dropped."""
    frees = {}
    for step in steps:
        for j in step.frees:
            frees[model.ops[j]["name"] if j >= 0 else "input"] = model.ops[step.ops[0]]["name"]
    return frees


def test_values_are_freed_after_their_last_reader():
    g, _ = residual_net()
    model = g.model(reference=True)
    frees = freed_at(model, plan.single_ops(model.graph, model._runner.reads))
    assert frees["act0"] == "add1" and frees["act1"] == "mp" and frees["input"] == "in"
    assert "fc" not in frees  # the output
    assert len(frees) == len(model.ops)  # every other value, once
    # fused, the shortcut act0 is read (and dropped) by b1's step, which runs the add
    fused = model._on_backend(ContractBackend())
    assert freed_at(fused, fused._runner.plan)["act0"] == "b1"


# -- trace, backends, torch-free use --------------------------------------------------------------
def test_trace_returns_each_value_in_the_training_layout():
    g, p = residual_net(3)
    x = np.random.default_rng(7).standard_normal((2, 3, 8, 8)).astype(np.float32)
    trace = {name: (kind, v) for name, kind, v in g.model().trace(x)}
    with torch.no_grad():
        stem = F.conv2d(t(x), t(p["stem.w"]).permute(0, 3, 1, 2), t(p["stem.b"]), padding=1)
        y = torch_prelu(stem * channels(p["bn0.s"]) + channels(p["bn0.h"]), p["act0"])
    np.testing.assert_allclose(trace["stem"][1], stem.numpy(), rtol=1e-5, atol=1e-5)
    assert trace["s1"][1].dtype == np.int8  # bits unpacked to +-1, NCHW
    np.testing.assert_array_equal(trace["s1"][1], torch_sign(y, p["s1.t"], p["s1.f"]).numpy())
    assert trace["cat"][1].shape == (2, 32, 4, 4) and trace["gap"][1].shape == (2, 5, 1, 1)
    np.testing.assert_array_equal(trace["flat"][1], trace["gap"][1].reshape(2, 5))
    np.testing.assert_allclose(trace["fc"][1], g.model().predict(x), rtol=0, atol=0)


def test_a_flattened_float_map_is_traced_in_nchw_order():
    g = GraphBuilder((2, 3, 3), 4)
    g.op("input_float", "in")
    g.op("flatten", "flat")
    w = np.arange(4 * 18, dtype=np.float32).reshape(4, 18) / 100
    g.op("dense_real", "fc", in_features=18, out_features=4,
         tensors={"weight": w, "bias": np.zeros(4, np.float32)})
    x = np.arange(36, dtype=np.float32).reshape(2, 2, 3, 3)
    trace = g.model().trace(x)
    np.testing.assert_array_equal(trace[1][2], x.reshape(2, 18))  # torch's Flatten order
    np.testing.assert_allclose(g.model().predict(x), nhwc(x).reshape(2, 18) @ w.T, rtol=1e-6)


def test_a_backend_without_float_ops_names_the_op_it_cannot_run():
    """The "cuda" backend runs format-2 graphs only (it has no float_ops): a clear error."""
    class Format2Only(backends.CpuBackend):
        float_ops = None
        device = "format2"
    g, _ = residual_net()
    with pytest.raises(BinarynetError, match="PackedModel on format2: this backend does not run "
                       "op 0 \\(input_float, layer 'in'\\) of the real-valued stream yet; run "
                       "this model on 'cpu'"):
        g.model()._on_backend(Format2Only())


def test_the_cuda_backend_runs_dags_as_the_cpu_engine_does():
    """On torch tensors (CPU ones in Triton's interpreter here; the same code on a GPU): the
    pools and elementwise ops equal float_ops bit for bit; the convolutions, dense layers and
    global mean may sum in another order, so a whole DAG agrees within float32 rounding."""
    from gpu_setup import torch_and_triton
    torch_and_triton()  # skips without triton, or with triton imported outside its interpreter
    from binarynet.gpu.engine_backend import TorchFloatOps, on_torch_device
    ops, rng = TorchFloatOps(), np.random.default_rng(12)
    x = rng.standard_normal((2, 7, 6, 5)).astype(np.float32)
    per_channel = [rng.standard_normal(5).astype(np.float32) for _ in range(3)]
    flip = rng.random(5) < 0.5
    for name, args in [("avgpool", ((3, 2), (2, 2), (1, 1), True, False)),
                       ("avgpool", ((2, 3), (1, 2), (1, 0), False, True)),
                       ("maxpool_real", ((3, 3), (2, 2), (1, 1), True)),
                       ("prelu", per_channel), ("scale_shift", per_channel[:2]), ("relu", ()),
                       ("sign", (per_channel[0], flip)), ("flatten", ())]:
        want = getattr(float_ops, name)(x, *args)
        got = getattr(ops, name)(t(x), *(t(a) if isinstance(a, np.ndarray) else a for a in args))
        np.testing.assert_array_equal(got.numpy(), want, err_msg=name)
    g, _ = residual_net(6)
    g.graph["input"].update(scale=[1 / 64, 1 / 128, 1 / 32], offset=[-2.0, -1.0, -4.0])
    u8 = rng.integers(0, 256, (3, 3, 8, 8), dtype=np.uint8)
    cpu = g.model()
    gpu = on_torch_device(cpu, "cpu")
    np.testing.assert_allclose(gpu.predict(u8), cpu.predict(u8), rtol=1e-5, atol=1e-5)
    for (name, _, want), (_, _, got) in zip(cpu.trace(u8), gpu.trace(u8)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)
    g = mlp_dag(2)  # bdense and signs of flat values: exact
    x = rng.standard_normal((6, 70)).astype(np.float32)
    np.testing.assert_array_equal(on_torch_device(g.model(), "cpu").predict(x), g.model().predict(x))


def test_the_engine_runs_a_dag_without_torch(tmp_path):
    g, _ = residual_net(4)
    model = g.model()
    x = np.random.default_rng(8).standard_normal((3, 3, 8, 8)).astype(np.float32)
    result = predict_without_torch(tmp_path, model, x)
    assert result.returncode == 0, result.stderr
    assert "ok: torch-free" in result.stdout
