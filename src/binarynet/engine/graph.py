"""The packed model's graph: the ops the engine runs, their attributes and tensors, and validation.

A graph is a JSON object::

    {"input": {"shape": [C, H, W] or [K], "scale": [..] or null, "offset": [..] or null},
     "num_classes": 10,
     "ops": [{"op": "first_dense", "name": "1", ..., "tensors": {"weight": "1.weight", ...}}, ...]}

``scale`` / ``offset`` (one per input channel; one value for a flat input) describe the data
normalisation x_f = x_u8 * scale + offset the model was trained with; with them the engine
accepts uint8 images. Activations flow between ops as one of three kinds:

- ``image``: the model input, (N, *input.shape), float (normalised) or uint8;
- ``bits``: +-1 activations packed LSB-first in uint64, NHWC ``(H, W, C)`` or flat ``(K,)``;
- ``logits``: float32 ``(num_classes,)``, the output.

Ops (every binary weight is packed along its reduction axis, docs/design.md):

============== ======= ======= ==================================================================
op             in      out     tensors (dtype, shape)
============== ======= ======= ==================================================================
binarize_input image   bits    [u8_threshold I16 (C,)]: bit = x_u8 >= t_c; float input: x >= 0
first_dense    image   bits or weight U64 (O, ceil(K/64)) over the NCHW-flattened input; bias F32 (O,);
                       logits  bits: vthresh F32 (O,), flip BOOL (O,), [thresh I32 (O,)];
                               logits: scale F64 (O,), shift F64 (O,)
first_conv     image   bits    weight U64 (O, ceil(KH*KW*C/g/64)) over (kh, kw, c) patches; bias,
                               vthresh, flip as first_dense; [thresh I32 (R, S, O),
                               row_class I32 (Ho,), col_class I32 (Wo,)]
dense          bits    bits    weight U64 (O, ceil(K/64)), thresh I32 (O,), flip BOOL (O,)
conv           bits    bits    weight U64 (O, KH, KW, ceil(C/g/64)), thresh I32 (O,), flip BOOL (O,)
maxpool        bits    bits    flip BOOL (C,) (OR where False, AND where True)
flatten        bits    bits    none: (H, W, C) -> (H*W*C,) in NHWC order
dense_logits   bits    logits  weight U64 (O, ceil(K/64)), scale F64 (O,), shift F64 (O,)
============== ======= ======= ==================================================================

First layers (real-valued input). ``z`` is the pre-activation x_f . w + bias. Float input:
bit = z >= vthresh (z <= vthresh where flip) with z = float32(x_f . w summed in float64) +
float32 bias, rounded as the float32 training layer rounds them. uint8 input with one scale
for all channels: the integer sum s = x_u8 . w (bit planes or an integer product, ``mode``)
is compared with the integer ``thresh`` (per border class of output positions for a conv:
``thresh[row_class[y], col_class[x], o]``), exact for the real-valued z = scale*s + offset*sum(w)
+ bias. Logits: scale * z + shift. Hidden layers: bit = s >= thresh (s <= thresh where flip),
s the +-1 dot product; logits = scale * s + shift.

Validation bounds every size and geometry field to what a real model can have (:data:`LIMITS`:
kernel, stride, dilation and padding at most 64, at most 65536
channels, images at most 16384 pixels a side...), checks that weight pad bits are 0, that BOOL
``flip`` tensors are 0/1 (in :mod:`binarynet.engine.format`) and that float tensors are finite,
and that no op needs more working memory per sample than a bound (:mod:`binarynet.engine.memory`),
so a crafted file is refused at load with the layer named instead of failing or exhausting the
machine at predict.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ModelFileError
from . import memory
from .format import _short

__all__ = ["OPS", "PAD_MODES", "FIRST_LAYER_MODES", "words", "validate", "conv_output_size",
           "as_pair", "conv_geometry",
           "integer_first_layer"]

OPS = ("binarize_input", "first_dense", "first_conv", "dense", "conv", "maxpool", "flatten",
       "dense_logits")
PAD_MODES = ("zero", "one", "minus_one")
FIRST_LAYER_MODES = ("bitplane", "int")
FIRST_LAYER_PAD_VALUES = (0.0, 1.0, -1.0)

# Upper bounds on graph fields, far above any real BNN (the paper's largest layer has 1024
# channels, 3x3 kernels, 32x32 images) yet low enough that no field alone can make a load or a
# predict allocate or loop without limit.
LIMITS = {
    "kernel": 64,        # conv/pool window side
    "stride": 64,
    "dilation": 64,
    "padding": 64,
    "channels": 1 << 16,  # in/out channels, groups
    "size": 1 << 14,      # image height/width
    "features": 1 << 26,  # dense in/out features, flat input size
    "classes": 1 << 20,
}


def words(bits: int) -> int:
    """uint64 words holding ``bits`` packed bits: ceil(bits / 64)."""
    return -(-bits // 64)


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a convolution/pooling window along one axis, as PyTorch's Conv2d."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def as_pair(op: str, name: str, value, minimum: int) -> tuple[int, int]:
    """A kernel argument given as an int or a pair of ints, each >= minimum (errors name ``op``)."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))
                             for v in pair):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in pair):
        raise ValueError(f"{op}: {name} values must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def conv_geometry(op: str, x_shape, w_shape, stride, padding, dilation, pad_mode):
    """Checked arguments of a binary convolution of a packed (N, H, W, words) input with packed
    (O, kh, kw, words) weights: returns (stride, padding, dilation, Ho, Wo)."""
    stride = as_pair(op, "stride", stride, 1)
    padding = as_pair(op, "padding", padding, 0)
    dilation = as_pair(op, "dilation", dilation, 1)
    if pad_mode not in PAD_MODES:
        raise ValueError(f"{op}: pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    _, h, wd, _ = x_shape
    _, kh, kw, _ = w_shape
    ho = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    wo = conv_output_size(wd, kw, stride[1], padding[1], dilation[1])
    if ho < 1 or wo < 1:
        raise ValueError(f"{op}: kernel {kh}x{kw} (dilation {dilation}, padding {padding}) does not "
                         f"fit the {h}x{wd} input")
    return stride, padding, dilation, ho, wo


def integer_first_layer(graph: dict) -> bool:
    """True when uint8 images take the exact integer first-layer path (one input scale > 0)."""
    scale = graph["input"]["scale"]
    return scale is not None and len(set(scale)) == 1 and scale[0] > 0


class _Checker:
    """Walks the ops, tracking the activation kind/shape, and collects the tensors they need."""

    def __init__(self, graph: dict, tensors: dict):
        self.graph = graph
        self.tensors = tensors
        self.used: set = set()

    def fail(self, op_index, message):
        where = "graph"
        if op_index is not None:
            op = self.graph["ops"][op_index]
            name = op.get("name") if isinstance(op, dict) else None
            where = f"op {op_index}" + (f" (layer {name!r})" if isinstance(name, str) else "")
        raise ModelFileError(f"invalid graph: {where}: {message}")

    # attribute readers -----------------------------------------------------------------------
    def int_attr(self, i, op, key, minimum, maximum):
        value = op.get(key)
        if type(value) is not int or not minimum <= value <= maximum:
            self.fail(i, f"{op.get('op')}: attribute {key!r} must be an integer in "
                         f"[{minimum}, {maximum}], got {_short(value)}")
        return value

    def pair_attr(self, i, op, key, minimum, maximum):
        value = op.get(key)
        if (not isinstance(value, list) or len(value) != 2
                or not all(type(v) is int and minimum <= v <= maximum for v in value)):
            self.fail(i, f"{op.get('op')}: attribute {key!r} must be a pair of integers in "
                         f"[{minimum}, {maximum}], got {_short(value)}")
        return value

    def choice_attr(self, i, op, key, choices):
        value = op.get(key)
        if value not in choices:
            self.fail(i, f"{op.get('op')}: attribute {key!r} must be one of {list(choices)}, "
                         f"got {_short(value)}")
        return value

    def tensor(self, i, op, role, dtype, shape):
        names = op.get("tensors")
        name = names.get(role) if isinstance(names, dict) else None
        if not isinstance(name, str):
            self.fail(i, f"{op.get('op')}: missing tensor role {role!r}")
        array = self.tensors.get(name)
        if array is None:
            self.fail(i, f"{op.get('op')}: tensor {name!r} ({role}) is not in the file")
        if array.dtype != np.dtype(dtype):
            self.fail(i, f"{op.get('op')}: tensor {name!r} ({role}) has dtype {array.dtype}, "
                         f"expected {np.dtype(dtype)}")
        if tuple(array.shape) != tuple(shape):
            self.fail(i, f"{op.get('op')}: tensor {name!r} ({role}) has shape "
                         f"{tuple(array.shape)}, expected {tuple(shape)}")
        if array.dtype.kind == "f":
            # vthresh may be +-inf (a channel whose sign is constant); nothing may be NaN
            bad = np.isnan(array) if role == "vthresh" else ~np.isfinite(array)
            if bad.any():
                self.fail(i, f"{op.get('op')}: tensor {name!r} ({role}) holds "
                             f"{'NaN' if role == 'vthresh' else 'NaN or infinite'} values")
        self.used.add(name)
        return array

    def packed_weight(self, i, op, shape, k):
        """A uint64 weight packed along its last axis, rows of ``k`` bits: pad bits must be 0
        (the kernels rely on it: K - 2 popcount(a ^ w) counts every set pad bit)."""
        w = self.tensor(i, op, "weight", np.uint64, shape)
        used = k % 64
        if used and np.any(w[..., -1] >> np.uint64(used)):
            self.fail(i, f"{op.get('op')}: weight has pad bits set beyond its {k} bits per row "
                         "(they must be 0)")
        return w

    def no_extra_roles(self, i, op, roles):
        extra = set(op.get("tensors", {})) - set(roles)
        if extra:
            self.fail(i, f"{op.get('op')}: unexpected tensor roles {sorted(extra)}")

    def expect(self, i, op, act, kind, ndim=None):
        if act[0] != kind or (ndim is not None and len(act[1]) != ndim):
            want = f"{kind} ({'(H, W, C)' if ndim == 3 else '(K,)' if ndim == 1 else 'any'})"
            self.fail(i, f"{op['op']} takes {want} activations, got {act[0]} of shape {act[1]}")




def _finite_number(v) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return abs(v) < 2**53 if isinstance(v, int) else math.isfinite(v)


def validate(graph: dict, tensors: dict, max_bytes=None) -> list:
    """Check that ``graph`` is well formed and consistent with ``tensors`` (dtypes, shapes, use),
    that every field is within :data:`LIMITS`, and that no op needs more than ``max_bytes`` of
    working memory per sample (:func:`binarynet.engine.memory.sample_bytes`; None: the default
    bound, :func:`binarynet.engine.memory.limit`).

    Returns the activation after each op, ``(kind, shape)`` per sample. Raises
    :class:`ModelFileError` naming the op and the problem.
    """
    chk = _Checker(graph, tensors)
    if not isinstance(graph, dict):
        chk.fail(None, "must be a JSON object")
    missing = [k for k in ("input", "num_classes", "ops") if k not in graph]
    if missing:
        chk.fail(None, f"missing {', '.join(missing)}")
    inp = graph["input"]
    if not isinstance(inp, dict):
        chk.fail(None, "'input' must be an object")
    shape = inp.get("shape")
    bounds = ([LIMITS["features"]] if isinstance(shape, list) and len(shape) == 1
              else [LIMITS["channels"], LIMITS["size"], LIMITS["size"]])
    if (not isinstance(shape, list) or len(shape) not in (1, 3)
            or not all(type(d) is int and 1 <= d <= top for d, top in zip(shape, bounds))):
        chk.fail(None, f"input shape must be [K] (K <= {LIMITS['features']}) or [C, H, W] "
                       f"(C <= {LIMITS['channels']}, H, W <= {LIMITS['size']}), got {_short(shape)}")
    channels = shape[0] if len(shape) == 3 else 1
    scale, offset = inp.get("scale"), inp.get("offset")
    if (scale is None) != (offset is None):
        chk.fail(None, "input scale and offset must both be given or both be null")
    for key, value in (("scale", scale), ("offset", offset)):
        if value is not None and (not isinstance(value, list) or len(value) != channels
                                  or not all(_finite_number(v) for v in value)):
            chk.fail(None, f"input {key} must be null or {channels} finite numbers, got "
                           f"{_short(value)}")
    num_classes = graph["num_classes"]
    if type(num_classes) is not int or not 1 <= num_classes <= LIMITS["classes"]:
        chk.fail(None, f"num_classes must be an integer in [1, {LIMITS['classes']}], got "
                       f"{_short(num_classes)}")
    ops = graph["ops"]
    if not isinstance(ops, list) or not ops:
        chk.fail(None, "'ops' must be a non-empty list")
    integer = integer_first_layer(graph)
    act = ("image", tuple(shape))
    acts = []
    bound = memory.limit(max_bytes)
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or op.get("op") not in OPS:
            chk.fail(i, f"unknown op {op.get('op') if isinstance(op, dict) else op!r} "
                        f"(known: {', '.join(OPS)})")
        if not isinstance(op.get("name"), str):
            chk.fail(i, f"{op['op']}: 'name' must be a string")
        if not isinstance(op.get("tensors"), dict):
            chk.fail(i, f"{op['op']}: 'tensors' must be an object")
        if act[0] == "logits":
            chk.fail(i, f"{op['op']} follows the logits; the output op must come last")
        before = act
        act = _CHECKS[op["op"]](chk, i, op, act, graph, integer)
        acts.append(act)
        need = memory.sample_bytes(op, before, act)
        if need > bound:
            chk.fail(i, memory.too_much(op["op"], need, bound))
    if act != ("logits", (num_classes,)):
        chk.fail(None, f"the last op must produce logits of shape ({num_classes},), got "
                       f"{act[0]} of shape {act[1]}")
    unused = sorted(set(tensors) - chk.used)
    if unused:
        chk.fail(None, f"tensors not used by any op: {', '.join(unused[:5])}")
    return acts


def _binarize_input(chk, i, op, act, graph, integer):
    chk.expect(i, op, act, "image")
    shape = act[1]
    channels = shape[0] if len(shape) == 3 else 1
    roles = []
    if graph["input"]["scale"] is not None:
        t = chk.tensor(i, op, "u8_threshold", np.int16, (channels,))
        if t.size and (t.min() < 0 or t.max() > 256):
            chk.fail(i, "binarize_input: u8_threshold values must be in [0, 256]")
        roles.append("u8_threshold")
    chk.no_extra_roles(i, op, roles)
    return ("bits", (shape[1], shape[2], shape[0]) if len(shape) == 3 else shape)


def _first_common(chk, i, op, o, integer_shape):
    output = op.get("output", "bits")
    roles = ["weight", "bias"]
    chk.tensor(i, op, "bias", np.float32, (o,))
    if output == "bits":
        chk.tensor(i, op, "vthresh", np.float32, (o,))
        chk.tensor(i, op, "flip", np.bool_, (o,))
        roles += ["vthresh", "flip"]
        if integer_shape is not None:
            chk.tensor(i, op, "thresh", np.int32, integer_shape)
            roles.append("thresh")
    else:
        chk.tensor(i, op, "scale", np.float64, (o,))
        chk.tensor(i, op, "shift", np.float64, (o,))
        roles += ["scale", "shift"]
    return roles


def _first_dense(chk, i, op, act, graph, integer):
    chk.expect(i, op, act, "image")
    k = chk.int_attr(i, op, "in_features", 1, LIMITS["features"])
    o = chk.int_attr(i, op, "out_features", 1, LIMITS["features"])
    if k != math.prod(act[1]):
        chk.fail(i, f"first_dense: in_features {k} != input size {math.prod(act[1])}")
    chk.choice_attr(i, op, "mode", FIRST_LAYER_MODES)
    output = chk.choice_attr(i, op, "output", ("bits", "logits"))
    chk.packed_weight(i, op, (o, words(k)), k)
    roles = _first_common(chk, i, op, o, (o,) if integer else None)
    chk.no_extra_roles(i, op, roles)
    return ("bits", (o,)) if output == "bits" else ("logits", (o,))


def _conv_attrs(chk, i, op, act):
    c = chk.int_attr(i, op, "in_channels", 1, LIMITS["channels"])
    o = chk.int_attr(i, op, "out_channels", 1, LIMITS["channels"])
    if c != act[1][-1 if act[0] == "bits" else 0]:
        chk.fail(i, f"{op['op']}: in_channels {c} does not match the input {act[1]}")
    kernel = chk.pair_attr(i, op, "kernel", 1, LIMITS["kernel"])
    stride = chk.pair_attr(i, op, "stride", 1, LIMITS["stride"])
    dilation = chk.pair_attr(i, op, "dilation", 1, LIMITS["dilation"])
    padding = chk.pair_attr(i, op, "padding", 0, LIMITS["padding"])
    groups = chk.int_attr(i, op, "groups", 1, c)
    if c % groups or o % groups:
        chk.fail(i, f"{op['op']}: groups {groups} must divide in_channels {c} and out_channels {o}")
    h, w = (act[1][0], act[1][1]) if act[0] == "bits" else (act[1][1], act[1][2])
    ho = conv_output_size(h, kernel[0], stride[0], padding[0], dilation[0])
    wo = conv_output_size(w, kernel[1], stride[1], padding[1], dilation[1])
    if ho < 1 or wo < 1:
        chk.fail(i, f"{op['op']}: kernel {kernel} does not fit the {h}x{w} input")
    return c, o, kernel, groups, ho, wo


def _first_conv(chk, i, op, act, graph, integer):
    chk.expect(i, op, act, "image", 3)
    c, o, kernel, groups, ho, wo = _conv_attrs(chk, i, op, act)
    chk.choice_attr(i, op, "mode", FIRST_LAYER_MODES)
    chk.choice_attr(i, op, "output", ("bits",))
    chk.choice_attr(i, op, "pad_value", FIRST_LAYER_PAD_VALUES)
    k = kernel[0] * kernel[1] * (c // groups)
    chk.packed_weight(i, op, (o, words(k)), k)
    integer_shape = None
    roles = []
    if integer:
        row_class = chk.tensor(i, op, "row_class", np.int32, (ho,))
        col_class = chk.tensor(i, op, "col_class", np.int32, (wo,))
        thresh_name = op["tensors"].get("thresh")
        thresh = chk.tensors.get(thresh_name) if isinstance(thresh_name, str) else None
        if thresh is None or thresh.ndim != 3:
            chk.fail(i, "first_conv: tensor 'thresh' must be 3-D (row class, column class, O)")
        integer_shape = (thresh.shape[0], thresh.shape[1], o)
        for name, classes, bound in (("row_class", row_class, thresh.shape[0]),
                                     ("col_class", col_class, thresh.shape[1])):
            if classes.min() < 0 or classes.max() >= bound:
                chk.fail(i, f"first_conv: {name} values must index thresh (0..{bound - 1})")
        roles += ["row_class", "col_class"]
    roles += _first_common(chk, i, op, o, integer_shape)
    chk.no_extra_roles(i, op, roles)
    return ("bits", (ho, wo, o))


def _dense(chk, i, op, act, graph, integer):
    chk.expect(i, op, act, "bits", 1)
    k = chk.int_attr(i, op, "in_features", 1, LIMITS["features"])
    o = chk.int_attr(i, op, "out_features", 1, LIMITS["features"])
    if k != act[1][0]:
        chk.fail(i, f"{op['op']}: in_features {k} != {act[1][0]} input features")
    chk.packed_weight(i, op, (o, words(k)), k)
    if op["op"] == "dense":
        chk.tensor(i, op, "thresh", np.int32, (o,))
        chk.tensor(i, op, "flip", np.bool_, (o,))
        chk.no_extra_roles(i, op, ["weight", "thresh", "flip"])
        return ("bits", (o,))
    chk.tensor(i, op, "scale", np.float64, (o,))
    chk.tensor(i, op, "shift", np.float64, (o,))
    chk.no_extra_roles(i, op, ["weight", "scale", "shift"])
    return ("logits", (o,))


def _conv(chk, i, op, act, graph, integer):
    chk.expect(i, op, act, "bits", 3)
    c, o, kernel, groups, ho, wo = _conv_attrs(chk, i, op, act)
    chk.choice_attr(i, op, "pad_mode", PAD_MODES)
    chk.packed_weight(i, op, (o, kernel[0], kernel[1], words(c // groups)), c // groups)
    chk.tensor(i, op, "thresh", np.int32, (o,))
    chk.tensor(i, op, "flip", np.bool_, (o,))
    chk.no_extra_roles(i, op, ["weight", "thresh", "flip"])
    return ("bits", (ho, wo, o))


def _maxpool(chk, i, op, act, graph, integer):
    chk.expect(i, op, act, "bits", 3)
    h, w, c = act[1]
    kernel = chk.pair_attr(i, op, "kernel", 1, LIMITS["kernel"])
    stride = chk.pair_attr(i, op, "stride", 1, LIMITS["stride"])
    if kernel[0] > h or kernel[1] > w:
        chk.fail(i, f"maxpool: kernel {kernel} is larger than the {h}x{w} input")
    chk.tensor(i, op, "flip", np.bool_, (c,))
    chk.no_extra_roles(i, op, ["flip"])
    return ("bits", ((h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1, c))


def _flatten(chk, i, op, act, graph, integer):
    chk.expect(i, op, act, "bits", 3)
    chk.no_extra_roles(i, op, [])
    return ("bits", (math.prod(act[1]),))


_CHECKS = {
    "binarize_input": _binarize_input,
    "first_dense": _first_dense,
    "first_conv": _first_conv,
    "dense": _dense,
    "conv": _conv,
    "maxpool": _maxpool,
    "flatten": _flatten,
    "dense_logits": _dense,
}
