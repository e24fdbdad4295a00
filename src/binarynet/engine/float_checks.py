"""Validation of the format-3 ops of the real-valued stream (the semantics: float_ops.py).

Each check takes the op's input value(s) as ``(kind, shape)`` per sample and returns its
output value; :func:`binarynet.engine.graph.validate` walks the DAG and calls them.
"""
from __future__ import annotations

import numpy as np

from .checker import LIMITS, pool_output_size, pool_window_error, words

__all__ = ["OPS", "ARITY", "CHECKS"]


def _per_channel(chk, i, op, roles, c):
    for role in roles:
        chk.tensor(i, op, role, np.float32, (c,))
    chk.no_extra_roles(i, op, roles)


def _input_float(chk, i, op, act, graph, integer):
    chk.expect(i, op, act, "image")
    chk.no_extra_roles(i, op, [])
    shape = act[1]
    return ("float", (shape[1], shape[2], shape[0]) if len(shape) == 3 else shape)


def _conv_real(chk, i, op, act, graph, integer):
    chk.expect(i, op, act, "float", 3)
    c, o, kernel, groups, ho, wo = chk.conv_attrs(i, op, act)
    chk.tensor(i, op, "weight", np.float32, (o, kernel[0], kernel[1], c // groups))
    chk.tensor(i, op, "bias", np.float32, (o,))
    chk.no_extra_roles(i, op, ["weight", "bias"])
    return ("float", (ho, wo, o))


def _features(chk, i, op, act, kind):
    chk.expect(i, op, act, kind, 1)
    k = chk.int_attr(i, op, "in_features", 1, LIMITS["features"])
    o = chk.int_attr(i, op, "out_features", 1, LIMITS["features"])
    if k != act[1][0]:
        chk.fail(i, f"{op['op']}: in_features {k} != {act[1][0]} input features")
    return k, o


def _dense_real(chk, i, op, act, graph, integer):
    k, o = _features(chk, i, op, act, "float")
    chk.tensor(i, op, "weight", np.float32, (o, k))
    chk.tensor(i, op, "bias", np.float32, (o,))
    chk.no_extra_roles(i, op, ["weight", "bias"])
    return ("float", (o,))


def _bconv(chk, i, op, act, graph, integer):
    o, ho, wo = chk.binary_conv(i, op, act)
    chk.tensor(i, op, "scale", np.float32, (o,))
    chk.tensor(i, op, "shift", np.float32, (o,))
    chk.no_extra_roles(i, op, ["weight", "scale", "shift"])
    return ("float", (ho, wo, o))


def _bdense(chk, i, op, act, graph, integer):
    k, o = _features(chk, i, op, act, "bits")
    chk.packed_weight(i, op, (o, words(k)), k)
    chk.tensor(i, op, "scale", np.float32, (o,))
    chk.tensor(i, op, "shift", np.float32, (o,))
    chk.no_extra_roles(i, op, ["weight", "scale", "shift"])
    return ("float", (o,))


def _sign(chk, i, op, act, graph, integer):
    chk.expect(i, op, act, "float")
    c = act[1][-1]
    chk.tensor(i, op, "thresh", np.float32, (c,))  # may be +-inf, never NaN
    chk.tensor(i, op, "flip", np.bool_, (c,))
    chk.no_extra_roles(i, op, ["thresh", "flip"])
    return ("bits", act[1])


def _scale_shift(chk, i, op, act, graph, integer):
    chk.expect(i, op, act, "float")
    _per_channel(chk, i, op, ["scale", "shift"], act[1][-1])
    return act


def _relu(chk, i, op, act, graph, integer):
    chk.expect(i, op, act, "float")
    chk.no_extra_roles(i, op, [])
    return act


def _prelu(chk, i, op, act, graph, integer):
    chk.expect(i, op, act, "float")
    _per_channel(chk, i, op, ["shift_in", "slope", "shift_out"], act[1][-1])
    return act


def _add(chk, i, op, acts, graph, integer):
    for act in acts:
        chk.expect(i, op, act, "float")
    if acts[0][1] != acts[1][1]:
        chk.fail(i, f"add: operands of shapes {acts[0][1]} and {acts[1][1]} differ")
    chk.no_extra_roles(i, op, [])
    return acts[0]


def _concat(chk, i, op, acts, graph, integer):
    for act in acts:
        chk.expect(i, op, act, "float", 3)
    sizes = {act[1][:2] for act in acts}
    if len(sizes) > 1:
        chk.fail(i, f"concat: inputs of different heights and widths {sorted(sizes)[:4]}")
    c = sum(act[1][2] for act in acts)
    if c > LIMITS["channels"]:
        chk.fail(i, f"concat: {c} channels, over the limit of {LIMITS['channels']}")
    chk.no_extra_roles(i, op, [])
    return ("float", acts[0][1][:2] + (c,))


def _pool_window(chk, i, op, act):
    """Output (Ho, Wo, C) of a PyTorch-style pool with padding and ceil_mode."""
    chk.expect(i, op, act, "float", 3)
    h, w, c = act[1]
    kernel = chk.pair_attr(i, op, "kernel", 1, LIMITS["kernel"])
    stride = chk.pair_attr(i, op, "stride", 1, LIMITS["stride"])
    padding = chk.pair_attr(i, op, "padding", 0, LIMITS["padding"])
    ceil_mode = chk.bool_attr(i, op, "ceil_mode")
    problem = pool_window_error(op["op"], h, w, kernel, padding)
    if problem:
        chk.fail(i, problem)
    ho, wo = (pool_output_size(n, k, s, p, ceil_mode)
              for n, k, s, p in zip((h, w), kernel, stride, padding))
    return ("float", (ho, wo, c))


def _avgpool(chk, i, op, act, graph, integer):
    out = _pool_window(chk, i, op, act)
    chk.bool_attr(i, op, "count_include_pad")
    chk.no_extra_roles(i, op, [])
    return out


def _maxpool_real(chk, i, op, act, graph, integer):
    out = _pool_window(chk, i, op, act)
    chk.no_extra_roles(i, op, [])
    return out


def _global_avgpool(chk, i, op, act, graph, integer):
    chk.expect(i, op, act, "float", 3)
    chk.no_extra_roles(i, op, [])
    return ("float", (1, 1, act[1][2]))


CHECKS = {
    "input_float": _input_float, "conv_real": _conv_real, "dense_real": _dense_real,
    "bconv": _bconv, "bdense": _bdense, "sign": _sign, "scale_shift": _scale_shift,
    "relu": _relu, "prelu": _prelu, "add": _add, "concat": _concat, "avgpool": _avgpool,
    "global_avgpool": _global_avgpool, "maxpool_real": _maxpool_real,
}
OPS = tuple(CHECKS)
# (fewest, most) values an op reads; every other op reads one
ARITY = {"add": (2, 2), "concat": (2, LIMITS["inputs"])}
# the elementwise ops of the real-valued stream (a fused kernel can apply them in its output)
ELEMENTWISE = ("relu", "scale_shift", "prelu", "add")
