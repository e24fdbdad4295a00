"""The packed model's graph: the ops the engine runs, their attributes and tensors, and validation.

A graph is a JSON object::

    {"input": {"shape": [C, H, W] or [K], "scale": [..] or null, "offset": [..] or null},
     "num_classes": 10,
     "ops": [{"op": "first_dense", "name": "1", ["inputs": ["input"],] ...,
              "tensors": {"weight": "1.weight", ...}}, ...]}

``scale`` / ``offset`` (one per input channel; one value for a flat input) describe the data
normalisation x_f = x_u8 * scale + offset the model was trained with; with them the engine
accepts uint8 images.

The ops form a DAG (format 3). Each op produces one value, named by the op's ``name``; the
model input is the value ``"input"`` (no op may be named so). ``inputs`` lists the values an
op reads, each ``"input"`` or the name of exactly one earlier op; without it an op reads the
previous op's value (the first op: ``"input"``), so a format-2 chain is a valid format-3 graph.
Ops are listed in execution order. Every value but the last op's must be read by a later op;
the last op's value is the output: logits or float of shape ``(num_classes,)``. Values are of
four kinds (per sample; the batch axis N is in front):

- ``image``: the model input, (N, *input.shape), float (normalised) or uint8;
- ``bits``: +-1 activations packed LSB-first in uint64, NHWC ``(H, W, C)`` or flat ``(K,)``;
- ``float``: float32, NHWC ``(H, W, C)`` or flat ``(K,)``: the real-valued stream of modern
  BNNs (Bi-Real, ReActNet, QuickNet), whose ops are checked in
  :mod:`binarynet.engine.float_checks` and computed as :mod:`binarynet.engine.float_ops` says;
- ``logits``: float32 ``(num_classes,)``, the output of the format-2 output ops.

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
flatten        bits or same    none: (H, W, C) -> (H*W*C,) in NHWC order
               float
dense_logits   bits    logits  weight U64 (O, ceil(K/64)), scale F64 (O,), shift F64 (O,)
============== ======= ======= ==================================================================

Ops of the real-valued stream (format 3; per-channel tensors F32 (C,)): ``input_float`` (image
-> float, NHWC), ``conv_real`` / ``dense_real`` (float weights and bias), ``bconv`` /
``bdense`` (bits -> float: float32(s) * scale + shift, s the +-1 dot product), ``sign``
(float -> bits: x >= thresh, x <= thresh where flip), ``scale_shift``, ``relu``, ``prelu``
(shift_in, slope, shift_out), ``add`` (two values), ``concat`` (two or more, along channels),
``avgpool`` / ``maxpool_real`` (PyTorch's pools with padding and ceil_mode), ``global_avgpool``.

First layers (real-valued input). ``z`` is the pre-activation x_f . w + bias. Float input:
bit = z >= vthresh (z <= vthresh where flip) with z = float32(x_f . w summed in float64) +
float32 bias, rounded as the float32 training layer rounds them. uint8 input with one scale
for all channels: the integer sum s = x_u8 . w (bit planes or an integer product, ``mode``)
is compared with the integer ``thresh`` (per border class of output positions for a conv:
``thresh[row_class[y], col_class[x], o]``), exact for the real-valued z = scale*s + offset*sum(w)
+ bias. Logits: scale * z + shift. Hidden layers: bit = s >= thresh (s <= thresh where flip),
s the +-1 dot product; logits = scale * s + shift.

Validation bounds every size and geometry field to what a real model can have (:data:`LIMITS`:
kernel, stride, dilation and padding at most 64, at most 65536 channels, images at most 16384
pixels a side...), checks that weight pad bits are 0, that BOOL ``flip`` tensors are 0/1 (in
:mod:`binarynet.engine.format`) and that float tensors are finite (thresholds may be +-inf: a
channel whose sign is constant), and that no op needs more working memory per sample than a
bound (:mod:`binarynet.engine.memory`; values a DAG keeps alive for later ops count too), so a
crafted file is refused at load with the layer named instead of failing or exhausting the
machine at predict.
"""
from __future__ import annotations

import math

import numpy as np

from . import float_checks, memory
from .checker import LIMITS, PAD_MODES, Checker, conv_output_size, words
from .format import _short

__all__ = ["OPS", "INPUT", "PAD_MODES", "FIRST_LAYER_MODES", "LIMITS", "words", "validate",
           "sources", "conv_output_size", "as_pair", "conv_geometry", "integer_first_layer"]

OPS = ("binarize_input", "first_dense", "first_conv", "dense", "conv", "maxpool", "flatten",
       "dense_logits") + float_checks.OPS
INPUT = "input"  # the value name of the model input
FIRST_LAYER_MODES = ("bitplane", "int")
FIRST_LAYER_PAD_VALUES = (0.0, 1.0, -1.0)


def as_pair(op: str, name: str, value, minimum: int) -> tuple[int, int]:
    """A kernel argument given as an int or a pair of ints, each >= minimum (errors name ``op``)."""
    if type(value) is tuple and len(value) == 2 and type(value[0]) is int \
            and type(value[1]) is int and value[0] >= minimum and value[1] >= minimum:
        return value  # the runner's own, already checked (a kernel call's fast path)
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


def _finite_number(v) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return abs(v) < 2**53 if isinstance(v, int) else math.isfinite(v)


def validate(graph: dict, tensors: dict, max_bytes=None) -> list:
    """Check that ``graph`` is well formed and consistent with ``tensors`` (dtypes, shapes, use),
    that every field is within :data:`LIMITS`, that its ops form a DAG whose values are all used
    and whose last value is the logits, and that no op needs more than ``max_bytes`` of working
    memory per sample, counting every value still alive while it runs
    (:mod:`binarynet.engine.memory`; None: the default bound, :func:`memory.limit`).

    Returns the value of each op, ``(kind, shape)`` per sample (the model input is
    ``("image", input shape)``; :func:`sources` says which values an op reads). Raises
    :class:`ModelFileError` naming the op and the problem.
    """
    chk = Checker(graph, tensors)
    image = _check_header(chk, graph)
    ops = graph["ops"]
    reads = _resolve(chk, ops)
    integer = integer_first_layer(graph)
    acts = []
    for i, op in enumerate(ops):
        ins = [image if j < 0 else acts[j] for j in reads[i]]
        if any(act[0] == "logits" for act in ins):
            chk.fail(i, f"{op['op']} follows the logits; the output op must come last")
        low, high = float_checks.ARITY.get(op["op"], (1, 1))
        if not low <= len(ins) <= high:
            chk.fail(i, f"{op['op']}: reads {len(ins)} values, takes "
                        f"{low if low == high else f'{low} to {high}'}")
        acts.append(_CHECKS[op["op"]](chk, i, op, ins if high > 1 else ins[0], graph, integer))
    bound = memory.limit(max_bytes)
    for i, need in enumerate(memory.op_needs(ops, reads, acts, image)):
        if need > bound:
            chk.fail(i, memory.too_much(ops[i]["op"], need, bound))
    num_classes = graph["num_classes"]
    if acts[-1] not in (("logits", (num_classes,)), ("float", (num_classes,))):
        chk.fail(None, f"the last op must produce logits or float of shape ({num_classes},), "
                       f"got {acts[-1][0]} of shape {acts[-1][1]}")
    read = {j for sources_of_op in reads for j in sources_of_op}
    dead = [j for j in range(len(ops) - 1) if j not in read]
    if dead:
        chk.fail(dead[0], f"{ops[dead[0]]['op']}: its value is not read by any later op (only "
                          "the last op's value may be unused)")
    unused = sorted(set(tensors) - chk.used)
    if unused:
        chk.fail(None, f"tensors not used by any op: {', '.join(unused[:5])}")
    return acts


def _check_header(chk, graph) -> tuple:
    """The input description and class count: returns the input value ("image", shape)."""
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
    return ("image", tuple(shape))


def _resolve(chk, ops) -> list:
    """The value indices each op reads (-1: the model input), from its ``inputs`` names or, with
    none given, the previous op's value (format 2's chain). Checks each op's kind, name and
    tensor table first."""
    earlier: dict = {}  # name -> indices of the ops so far with that name
    reads = []
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or op.get("op") not in OPS:
            chk.fail(i, f"unknown op {_short(op.get('op') if isinstance(op, dict) else op)} "
                        f"(known: {', '.join(OPS)})")
        name = op.get("name")
        if not isinstance(name, str) or name == INPUT:
            chk.fail(i, f"{op['op']}: 'name' must be a string other than {INPUT!r}, got "
                        f"{_short(name)}")
        if not isinstance(op.get("tensors"), dict):
            chk.fail(i, f"{op['op']}: 'tensors' must be an object")
        names = op.get("inputs")
        if names is None and "inputs" not in op:
            reads.append([i - 1])
        elif (not isinstance(names, list) or not 1 <= len(names) <= LIMITS["inputs"]
              or not all(isinstance(n, str) for n in names)):
            chk.fail(i, f"{op['op']}: attribute 'inputs' must be a list of 1 to "
                        f"{LIMITS['inputs']} value names, got {_short(names)}")
        else:
            reads.append([_source(chk, i, op, n, earlier, ops) for n in names])
        earlier.setdefault(name, []).append(i)
    return reads


def _source(chk, i, op, name, earlier, ops) -> int:
    if name == INPUT:
        return -1
    found = earlier.get(name, [])
    if len(found) == 1:
        return found[0]
    if found:
        chk.fail(i, f"{op['op']}: input {_short(name)} is ambiguous: ops {found[:5]} are all "
                    "named so")
    later = any(isinstance(o, dict) and o.get("name") == name for o in ops[i:])
    chk.fail(i, f"{op['op']}: input {_short(name)} "
                + ("is a forward reference (ops must come after the values they read)" if later
                   else "names no earlier op (nor 'input')"))


def sources(graph: dict) -> list:
    """The value indices each op of a validated ``graph`` reads (-1: the model input)."""
    return _resolve(Checker(graph, {}), graph["ops"])


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


def _first_conv(chk, i, op, act, graph, integer):
    chk.expect(i, op, act, "image", 3)
    c, o, kernel, groups, ho, wo = chk.conv_attrs(i, op, act)
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
    o, ho, wo = chk.binary_conv(i, op, act)
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
    chk.expect(i, op, act, ("bits", "float"), 3)
    chk.no_extra_roles(i, op, [])
    return (act[0], (math.prod(act[1]),))


_CHECKS = {
    "binarize_input": _binarize_input,
    "first_dense": _first_dense,
    "first_conv": _first_conv,
    "dense": _dense,
    "conv": _conv,
    "maxpool": _maxpool,
    "flatten": _flatten,
    "dense_logits": _dense,
    **float_checks.CHECKS,
}
