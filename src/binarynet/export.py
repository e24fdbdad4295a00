"""Export a trained torch BNN to a :class:`~binarynet.engine.PackedModel` (1-bit weights, integer thresholds).

``export(model, example_input, input_scale=None, input_offset=None, first_layer="bitplane")``
walks an ``nn.Sequential`` (nested ones are flattened; the paper networks of
:mod:`binarynet.models` are such) in evaluation mode and turns each block

    Binary{Linear,Conv2d} -> [MaxPool2d] -> [BatchNorm] -> Sign   (hidden)
    BinaryLinear -> [BatchNorm1d]                                   (output)

into one engine op (see :mod:`binarynet.engine.graph`).

**Hidden layers: BN + sign -> integer threshold** (spec §5.3). With s the +-1 dot product
(an integer), the float model decides +1 iff sign(BN(s + b)) = +1. For BN's scale a > 0 this is
s >= tau with tau = mean - b - beta/a (s <= tau with a flip for a < 0; a constant channel for
a = 0). tau is derived from that formula, then *verified* by running the actual torch modules
(bias add in float32, the BN module itself in eval mode, then the Sign module or the next
layer's input quantizer) on every reachable s (the K+1 values of K's parity for fan-in K; all
integers in [-K, K] for a zero-padded conv, whose border positions have fewer taps) and
adjusted until the integer comparison equals the float decision for all of them, ties
included. Decisions that are not monotone in s raise :class:`ExportError`.

**Max-pool before BN**: the decision is monotone in s, so thresholding each position and then
OR-ing (AND-ing where flipped) the bits of the window is exactly sign(BN(max s)).

**Output layer**: logits = scale * s + shift per class (float64), scale and shift from BN's
affine map; checked against the BN module over every reachable s.

**First layer (real-valued input)**: the decision boundary v* of each unit on its float32
pre-activation v = x_f . w + b is found by bisection over all float32 values with the actual
modules, and spot-checked for monotonicity. Float input: the engine sums x_f . w in float64,
rounds to float32, adds the float32 bias (as the torch layer does) and compares with v*. uint8
input (``input_scale``/``input_offset`` given, x_f = x_u8*scale[c] +
offset[c]) with one scale for all channels: v = scale * s + sum_c offset[c]*sum(w over channel c)
+ b with the integer s = x_u8 . w (bit planes, paper §1.6, or an integer product:
``first_layer``), so the decision is an exact integer threshold on s, derived with rational
arithmetic; for a zero-padded conv the padded taps contribute nothing, so the threshold
depends on which taps are valid, i.e. on the border class of the output position (top row,
interior, ...), one threshold per class. Per-channel scales that differ (mean/std normalisation)
are supported by the float path only: uint8 images are then normalised in float64 by the engine.
The engine's uint8 first layer is exact for the *real-valued* pre-activation; torch's float32
first-layer sum (normalised pixels rounded to float32, float32 accumulation in some order) may
round differently at near-ties (|v - v*| within float32 rounding error), and so may the float
path where torch's float32 accumulation differs from the exact sum. Exact real-valued ties are
common in untrained networks (zero biases and default BN put v* at 0, which z = 2s/255 - sum(w)
reaches), rare in trained ones (0 of 10,000 MNIST test predictions differ in the tests).

Hidden layers reproduce torch's own float32 arithmetic, including its batch norm kernel
(x * alpha + beta with alpha = gamma/sqrt(var + eps), which is not exactly 0 at x = mean):
decisions are taken from the modules themselves, never from the formula alone.
"""
from __future__ import annotations

import copy
import math
import warnings
from fractions import Fraction
from typing import Optional

import numpy as np
import torch
from torch import nn

from . import nn as bnn
from ._callable import make_module_callable
from .engine import kernels
from .engine.graph import conv_output_size
from .engine.model import PackedModel
from .errors import ExportError

__all__ = ["export", "to_torch", "SUPPORTED_MODULES"]

INT32_MIN = -(2 ** 31)
INT32_MAX = 2 ** 31 - 1
SUPPORTED_MODULES = ("BinaryLinear", "BinaryConv2d", "MaxPool2d", "BatchNorm1d", "BatchNorm2d",
                     "ShiftBatchNorm1d", "ShiftBatchNorm2d", "Sign", "Flatten", "Dropout",
                     "Identity", "Sequential")
_IDENTITY = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
_BATCHNORMS = (nn.modules.batchnorm._BatchNorm, bnn.ShiftBatchNorm1d, bnn.ShiftBatchNorm2d)
_BN_1D = (nn.BatchNorm1d, bnn.ShiftBatchNorm1d)
# First-layer boundary search range: decisions for |pre-activation| > 1e30 are taken as constant.
_V_LIMIT = 1e30
# Elements per chunk of exhaustive decision evaluation.
_CHUNK = 1 << 22


def _pack(values: np.ndarray) -> np.ndarray:
    """+-1 weights -> uint64 words along the last axis (bit 1 <=> +1)."""
    return kernels.pack(np.ascontiguousarray(values, dtype=np.float32))


def _describe(path: str, module: nn.Module) -> str:
    return f"module {path!r} ({type(module).__name__})"


class _Block:
    """A binary layer and what follows it up to its binarization (or the end of the model)."""

    def __init__(self, path, layer, in_shape, first, binary_input, flat_source):
        self.path, self.layer, self.in_shape = path, layer, in_shape
        self.first, self.binary_input = first, binary_input
        self.flat_source = flat_source  # (H, W, C) when a dense layer reads flattened conv bits
        self.pool = None  # (path, MaxPool2d)
        self.bn = None  # (path, BN module)
        self.binarize = None  # callable: BN output -> +-1
        self.binarize_path = None

    @property
    def is_conv(self) -> bool:
        return isinstance(self.layer, bnn.BinaryConv2d)


def export(model: nn.Module, example_input, input_scale=None, input_offset=None,
           first_layer: str = "bitplane") -> PackedModel:
    """Turn a trained binarynet model into a :class:`~binarynet.engine.PackedModel`.

    Args:
        model: an ``nn.Sequential`` of binarynet layers and standard modules (see module doc;
            :data:`SUPPORTED_MODULES`). It is evaluated in eval mode (restored afterwards).
        example_input: a batch shaped like the model's input (N, C, H, W) or (N, K): float
            (normalised), or uint8 when ``input_scale``/``input_offset`` are given. It fixes the
            input shape and is used for a final engine-vs-torch check.
        input_scale, input_offset: the training normalisation x_f = x_u8 * scale + offset (a
            number or one per channel), e.g. 2/255 and -1; lets the engine take uint8 images.
        first_layer: "bitplane" (paper §1.6: 8 popcount bit planes) or "int" (integer product)
            for the first layer's uint8 path. Both give the same integers.

    Returns:
        the packed model; ``packed.export_report`` records per layer how many thresholds the
        verification adjusted, constant and flipped channels, and the final check's result.

    Raises:
        ExportError: unsupported module or layout, non-binary weights, non-monotone decisions,
            output affine mismatch.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"export: model must be a torch.nn.Module, got {type(model).__name__}")
    if first_layer not in ("bitplane", "int"):
        raise ValueError(f"export: first_layer must be 'bitplane' or 'int', got {first_layer!r}")
    tensors = list(model.parameters()) + list(model.buffers())
    floats = {t.dtype for t in tensors if t.is_floating_point()}
    if floats - {torch.float32}:
        raise ExportError(f"export reproduces float32 models; this one has "
                          f"{sorted(str(d) for d in floats)} parameters (call model.float())")
    if any(t.device.type != "cpu" for t in tensors):
        model = copy.deepcopy(model).cpu()  # decisions are evaluated on the CPU
    leaves = _flatten_modules(model)
    x = _example(example_input, input_scale)
    scale, offset = _normalisation(input_scale, input_offset, tuple(x.shape[1:]))
    x_torch, x_u8 = x, None
    if x.dtype == torch.uint8:
        x_torch, x_u8 = _to_float(x, scale, offset), x
    states = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            builder = _Builder(tuple(x_torch.shape[1:]), scale, offset, first_layer)
            builder.walk(leaves)
            expected = model(x_torch)
            packed = PackedModel(builder.graph(), builder.tensors)
            packed.export_report = builder.report
            _final_check(packed, expected, x_torch, x_u8)
    finally:
        for module, training in states.items():
            module.training = training
    return packed


# -- inputs ------------------------------------------------------------------------------------
def _example(example_input, input_scale):
    x = torch.as_tensor(np.asarray(example_input)) if isinstance(example_input, np.ndarray) \
        else example_input
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"export: example_input must be a torch.Tensor or numpy array, got "
                        f"{type(example_input).__name__}")
    if x.dim() not in (2, 4) or x.shape[0] < 1:
        raise ValueError(f"export: example_input must be a batch (N, C, H, W) or (N, K) with N >= 1, "
                         f"got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        if input_scale is None:
            raise ValueError("export: a uint8 example_input needs input_scale and input_offset")
        return x.cpu()
    if not x.is_floating_point():
        raise TypeError(f"export: example_input must be float or uint8, got {x.dtype}")
    return x.float().cpu()


def _normalisation(input_scale, input_offset, shape):
    if (input_scale is None) != (input_offset is None):
        raise ValueError("export: give both input_scale and input_offset, or neither")
    if input_scale is None:
        return None, None
    channels = shape[0] if len(shape) == 3 else 1
    out = []
    for name, value in (("input_scale", input_scale), ("input_offset", input_offset)):
        values = np.atleast_1d(np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor)
                                          else value, dtype=np.float64)).ravel()
        if values.size == 1:
            values = np.repeat(values, channels)
        if values.size != channels or not np.all(np.isfinite(values)):
            raise ValueError(f"export: {name} must be a finite number or {channels} of them (one "
                             f"per input channel), got {value!r}")
        out.append([float(v) for v in values])
    if min(out[0]) <= 0:
        raise ValueError(f"export: input_scale must be positive, got {out[0]}")
    return out[0], out[1]


def _to_float(x_u8: torch.Tensor, scale, offset) -> torch.Tensor:
    """x_u8 * scale[c] + offset[c] in float64, rounded to float32 (as binarynet.data.to_float)."""
    view = (1, -1, 1, 1) if x_u8.dim() == 4 else (1, -1)
    scale_t = torch.tensor(scale, dtype=torch.float64).view(view)
    offset_t = torch.tensor(offset, dtype=torch.float64).view(view)
    return (x_u8.double() * scale_t + offset_t).float()


def _flatten_modules(model: nn.Module, prefix: str = "") -> list:
    if not isinstance(model, nn.Sequential):
        if prefix == "":
            raise ExportError(
                f"export walks nn.Sequential models; got {type(model).__name__}, whose forward "
                "cannot be inspected. Build the model as an nn.Sequential of supported modules "
                f"({', '.join(SUPPORTED_MODULES)})")
        return [(prefix, model)]
    leaves = []
    for name, child in model.named_children():
        path = f"{prefix}.{name}" if prefix else name
        leaves.extend(_flatten_modules(child, path) if isinstance(child, nn.Sequential)
                      else [(path, child)])
    return leaves


# -- module checks -----------------------------------------------------------------------------
_PROBE = torch.tensor([-1e30, -2.0, -1.0, -0.5, -1e-30, -0.0, 0.0, 1e-30, 0.5, 1.0, 2.0, 1e30])


def _check_sign_like(fn, what: str) -> None:
    """The binarization used at evaluation must be sign(x) = +1 if x >= 0 else -1."""
    try:
        out = fn(_PROBE.clone())
    except Exception as err:  # a user callable: report whatever it raised
        raise ExportError(f"{what} cannot be evaluated on a probe tensor: {err}") from None
    expected = torch.where(_PROBE >= 0, 1.0, -1.0)
    if not isinstance(out, torch.Tensor) or out.shape != _PROBE.shape or not torch.equal(
            out.float(), expected):
        raise ExportError(f"{what} does not binarize as sign(x) = +1 if x >= 0 else -1 in eval "
                          "mode (stochastic or custom quantizers cannot be exported)")


def _binary_weight(path: str, layer) -> torch.Tensor:
    w = layer.quantized_weight().detach().float()
    if not torch.all((w == 1) | (w == -1)):
        raise ExportError(f"{_describe(path, layer)}: weight_quantizer "
                          f"{layer.weight_quantizer_name!r} does not give +-1 weights in eval mode")
    return w


def _conv_geometry(path, layer):
    if getattr(layer, "padding_mode", "zeros") != "zeros":
        raise ExportError(f"{_describe(path, layer)}: padding_mode {layer.padding_mode!r} is not "
                          "supported (use padding with pad_value 0, +1 or -1)")
    kernel = tuple(layer.kernel_size)
    dilation = tuple(layer.dilation)
    padding = layer.padding
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        if any(t % 2 for t in total):
            raise ExportError(f"{_describe(path, layer)}: padding='same' with an even kernel pads "
                              "asymmetrically, which the engine does not support")
        padding = tuple(t // 2 for t in total)
    return kernel, tuple(layer.stride), tuple(padding), dilation


def _pool_geometry(path, pool):
    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)
    kernel = pair(pool.kernel_size)
    stride = pair(pool.stride if pool.stride is not None else pool.kernel_size)
    if pair(pool.padding) != (0, 0) or pair(pool.dilation) != (1, 1) or pool.ceil_mode \
            or pool.return_indices:
        raise ExportError(f"{_describe(path, pool)}: only MaxPool2d without padding, dilation, "
                          "ceil_mode or return_indices is supported")
    return kernel, stride


def _check_bn(path, bn, block) -> None:
    if isinstance(bn, nn.modules.batchnorm._BatchNorm) and (
            not bn.track_running_stats or bn.running_mean is None):
        raise ExportError(f"{_describe(path, bn)}: track_running_stats=False uses batch statistics "
                          "at evaluation, which cannot be folded into thresholds")
    want_1d = not block.is_conv
    if isinstance(bn, _BN_1D) != want_1d:
        raise ExportError(f"{_describe(path, bn)}: follows {type(block.layer).__name__} "
                          f"{block.path!r}; expected a {'1d' if want_1d else '2d'} batch norm")
    out = block.layer.out_features if not block.is_conv else block.layer.out_channels
    if bn.num_features != out:
        raise ExportError(f"{_describe(path, bn)}: {bn.num_features} features, but layer "
                          f"{block.path!r} has {out} outputs")


def _bn_affine(bn, channels: int):
    """(a, c) float64 per channel with BN(x) = a * x + c in eval mode (identity without BN)."""
    if bn is None:
        return np.ones(channels), np.zeros(channels)
    if isinstance(bn, (bnn.ShiftBatchNorm1d, bnn.ShiftBatchNorm2d)):
        a, c = bn.eval_affine()
        return a.double().numpy().copy(), c.double().numpy().copy()
    inv = 1.0 / torch.sqrt(bn.running_var.double() + bn.eps)
    a = inv * (bn.weight.double() if bn.weight is not None else 1.0)
    c = -bn.running_mean.double() * a + (bn.bias.double() if bn.bias is not None else 0.0)
    return a.numpy().copy(), c.numpy().copy()


# -- decisions ---------------------------------------------------------------------------------
def _decide(block: _Block, v: torch.Tensor) -> torch.Tensor:
    """Float decisions (bool, +1 = True) of the block's BN + binarization at pre-BN values v (S, O)."""
    y = v
    if block.bn is not None:
        y = block.bn[1](v[:, :, None, None]).reshape(v.shape) if block.is_conv else block.bn[1](v)
    b = block.binarize(y)
    if not torch.all((b == 1) | (b == -1)):
        raise ExportError(f"module {block.binarize_path!r} produced values other than +-1")
    return b > 0


def _hidden_decisions(block: _Block, s_values: np.ndarray, bias: Optional[torch.Tensor],
                      out: int) -> np.ndarray:
    """Decisions (S, O) on every reachable integer sum s: sign(BN(float32(s) + bias))."""
    rows = max(1, _CHUNK // out)
    parts = []
    for start in range(0, len(s_values), rows):
        s = torch.from_numpy(s_values[start:start + rows].astype(np.float32))[:, None]
        v = s.expand(-1, out) + bias if bias is not None else s.expand(-1, out).clone()
        parts.append(_decide(block, v).numpy())
    return np.concatenate(parts)


def _thresholds_from_decisions(block, decisions: np.ndarray, s_values: np.ndarray):
    """Integer threshold and flip per channel reproducing ``decisions`` (S, O) exactly."""
    changes = (decisions[1:] != decisions[:-1]).sum(axis=0)
    bad = np.nonzero(changes > 1)[0]
    if bad.size:
        raise ExportError(f"layer {block.path!r}: the float model's sign decision is not monotone "
                          f"in the integer sum for channel {int(bad[0])} ({len(bad)} channel(s)); "
                          "it cannot be a threshold")
    first = decisions[0]
    thresh = np.where(first, INT32_MIN, INT32_MAX).astype(np.int64)  # constant channels
    flip = np.zeros(decisions.shape[1], dtype=bool)
    rising = (changes == 1) & ~first
    falling = (changes == 1) & first
    thresh[rising] = s_values[np.argmax(decisions[:, rising], axis=0)]
    thresh[falling] = s_values[np.argmax(~decisions[:, falling], axis=0) - 1]
    flip[falling] = True
    return thresh.astype(np.int32), flip


def _formula_adjustments(decisions, s_values, a, c, bias) -> int:
    """Channels where tau = mean - b - beta/a (spec §5.3, in float64) disagrees with the float model."""
    y = a[None, :] * (s_values[:, None].astype(np.float64) + bias[None, :]) + c[None, :]
    predicted = y >= 0
    return int(np.any(predicted != decisions, axis=0).sum())


def _float_key(v: np.ndarray) -> np.ndarray:
    """Order-preserving int64 key of float32 values."""
    bits = np.asarray(v, np.float32).view(np.int32).astype(np.int64)
    return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


def _key_float(key: np.ndarray) -> np.ndarray:
    bits = np.where(key < 0, (-key) | 0x80000000, key).astype(np.uint32)
    return bits.view(np.float32)


def _first_boundaries(block: _Block, out: int):
    """Per channel: decision at -inf side, flip, and boundary v* (float32) of the pre-BN value.

    Rising channels: +1 iff v >= v*; falling: +1 iff v <= v*; constant: v* = -inf (always +1)
    or +inf (never).
    """
    def decide(values: np.ndarray) -> np.ndarray:
        return _decide(block, torch.from_numpy(np.ascontiguousarray(values, np.float32))).numpy()

    lo = np.full((1, out), -_V_LIMIT, np.float32)
    hi = np.full((1, out), _V_LIMIT, np.float32)
    d_lo, d_hi = decide(lo)[0], decide(hi)[0]
    lo_key, hi_key = _float_key(lo[0]), _float_key(hi[0])
    moving = d_lo != d_hi
    # invariant on moving channels: decide(lo_key) == d_lo, decide(hi_key) != d_lo
    while np.any(hi_key - lo_key > 1):
        mid = (lo_key + hi_key) // 2
        d_mid = decide(_key_float(mid)[None, :])[0]
        same = d_mid == d_lo
        lo_key = np.where(moving & same, mid, lo_key)
        hi_key = np.where(moving & ~same, mid, hi_key)
        lo_key = np.where(moving, lo_key, hi_key - 1)  # settle constant channels
    rising = moving & ~d_lo
    falling = moving & d_lo
    v = np.where(d_lo, np.float32(-np.inf), np.float32(np.inf)).astype(np.float32)  # constants
    v[rising] = _key_float(hi_key)[rising]
    v[falling] = _key_float(lo_key)[falling]
    _spot_check(block, decide, v, rising, falling, d_lo)
    return v, falling


def _spot_check(block, decide, v, rising, falling, constant_value) -> None:
    """Monotonicity of the first layer's decision: check it on a wide grid and around v*."""
    grid = np.concatenate([-np.logspace(-6, 29, 200), [0.0], np.logspace(-6, 29, 200),
                           np.linspace(-1000, 1000, 401)]).astype(np.float32)
    values = np.repeat(grid[:, None], len(v), axis=1)
    finite = np.isfinite(v)
    near = np.stack([np.nextafter(v, -np.inf), v, np.nextafter(v, np.inf)]).astype(np.float32)
    near[:, ~finite] = 0.0
    values = np.concatenate([values, near])
    got = decide(values)
    want = np.where(rising, values >= v, np.where(falling, values <= v, constant_value))
    bad = np.nonzero(np.any(got != want, axis=0))[0]
    if bad.size:
        raise ExportError(f"layer {block.path!r}: the float model's sign decision is not monotone "
                          f"in the pre-activation for channel {int(bad[0])}; it cannot be a threshold")


# -- the walk ----------------------------------------------------------------------------------
class _Builder:
    """Turns the flat module list into graph ops and tensors."""

    def __init__(self, in_shape, scale, offset, first_layer):
        self.in_shape = in_shape
        self.scale, self.offset = scale, offset
        self.mode = first_layer
        self.ops: list = []
        self.tensors: dict = {}
        self.report: dict = {"layers": {}}
        self.num_classes = None

    def graph(self) -> dict:
        return {"input": {"shape": list(self.in_shape), "scale": self.scale, "offset": self.offset},
                "num_classes": self.num_classes, "ops": self.ops}

    def add(self, name, array) -> str:
        self.tensors[name] = np.ascontiguousarray(array)
        return name

    # state machine over the modules ----------------------------------------------------------
    def walk(self, leaves) -> None:
        shape = self.in_shape  # per-sample shape of the current activation
        state = "input"  # input (real) | block (integer sums pending) | bits
        input_binarized, block, flat_source = False, None, None
        for path, m in leaves:
            if isinstance(m, _IDENTITY):
                continue
            if state == "input":
                if isinstance(m, nn.Flatten):
                    shape = self._flatten(path, m, shape)
                elif isinstance(m, bnn.Sign):
                    _check_sign_like(m, _describe(path, m))
                    input_binarized = True
                elif isinstance(m, bnn.BinaryLayer):
                    binary = input_binarized or m.input_quantizer is not None
                    if binary:
                        if m.input_quantizer is not None:
                            _check_sign_like(m.quantized_input, f"{_describe(path, m)} input_quantizer")
                        shape, flat_source = self._binarize_input(path, shape)
                    block = self._open(path, m, shape, first=not binary, binary_input=binary,
                                       flat_source=flat_source)
                    state = "block"
                else:
                    self._unsupported(path, m, "before the first binary layer")
            elif state == "block":
                if isinstance(m, nn.MaxPool2d):
                    if block.pool is not None or block.bn is not None or not block.is_conv:
                        self._unsupported(path, m, "here (one max-pool, after a conv, before BN)")
                    block.pool = (path, m)
                elif isinstance(m, _BATCHNORMS):
                    if block.bn is not None:
                        self._unsupported(path, m, "after another batch norm")
                    _check_bn(path, m, block)
                    block.bn = (path, m)
                elif isinstance(m, bnn.Sign):
                    _check_sign_like(m, _describe(path, m))
                    block.binarize, block.binarize_path = m, path
                    shape = self._close_hidden(block)
                    state, flat_source = "bits", None
                elif isinstance(m, bnn.BinaryLayer):
                    if m.input_quantizer is None:
                        raise ExportError(
                            f"{_describe(path, m)} receives the real-valued output of "
                            f"{block.path!r} (no Sign or input_quantizer in between); only the "
                            "first binary layer may take real-valued input")
                    _check_sign_like(m.quantized_input, f"{_describe(path, m)} input_quantizer")
                    block.binarize, block.binarize_path = m.quantized_input, path
                    shape = self._close_hidden(block)
                    block = self._open(path, m, shape, first=False, binary_input=True,
                                       flat_source=None)
                else:
                    self._unsupported(path, m, f"after binary layer {block.path!r}")
            else:  # bits
                if isinstance(m, nn.Flatten):
                    new_shape = self._flatten(path, m, shape)
                    if len(shape) == 3:
                        self.ops.append({"op": "flatten", "name": path, "tensors": {}})
                        flat_source = shape
                    shape = new_shape
                elif isinstance(m, nn.MaxPool2d):
                    shape = self._bit_pool(path, m, shape)
                elif isinstance(m, bnn.Sign):
                    _check_sign_like(m, _describe(path, m))  # sign of +-1 is itself
                elif isinstance(m, bnn.BinaryLayer):
                    if m.input_quantizer is not None:
                        _check_sign_like(m.quantized_input, f"{_describe(path, m)} input_quantizer")
                    block = self._open(path, m, shape, first=False, binary_input=True,
                                       flat_source=flat_source)
                    state = "block"
                else:
                    self._unsupported(path, m, "after a binary activation")
        if state == "input":
            raise ExportError("the model has no BinaryLinear or BinaryConv2d layer to export")
        if state == "bits":
            raise ExportError("the model ends with binary activations; its last layer must be a "
                              "BinaryLinear (optionally followed by BatchNorm1d) giving the logits")
        self._close_output(block)

    def _unsupported(self, path, m, where):
        raise ExportError(f"{_describe(path, m)} is not supported {where}. Supported: "
                          f"{', '.join(SUPPORTED_MODULES)} in the order Binary layer -> "
                          "[MaxPool2d] -> [BatchNorm] -> Sign, ending with BinaryLinear -> "
                          "[BatchNorm1d]")

    @staticmethod
    def _flatten(path, m, shape):
        if m.start_dim != 1 or m.end_dim != -1:
            raise ExportError(f"{_describe(path, m)}: only Flatten(start_dim=1, end_dim=-1) is "
                              "supported")
        return (int(np.prod(shape)),)

    def _open(self, path, m, shape, first, binary_input, flat_source) -> _Block:
        if isinstance(m, bnn.BinaryConv2d):
            if len(shape) != 3 or shape[0] != m.in_channels:
                raise ExportError(f"{_describe(path, m)}: expects (N, {m.in_channels}, H, W) "
                                  f"input, gets per-sample shape {shape}")
        elif isinstance(m, bnn.BinaryLinear):
            if len(shape) != 1 or shape[0] != m.in_features:
                raise ExportError(f"{_describe(path, m)}: expects {m.in_features} input features, "
                                  f"gets per-sample shape {shape} (add an nn.Flatten before it)")
        else:
            self._unsupported(path, m, "(unknown binary layer type)")
        return _Block(path, m, shape, first, binary_input, flat_source)

    def _binarize_input(self, path, shape):
        """Op that binarizes the model's input (the first binary layer takes +-1 input)."""
        op = {"op": "binarize_input", "name": f"{path}.input", "tensors": {}}
        if self.scale is not None:
            # bit = x_f >= 0 with x_f computed as the training pipeline does (_to_float).
            u8 = torch.arange(256, dtype=torch.uint8)[None, :].expand(len(self.scale), -1)
            table = _to_float(u8.T.contiguous(), self.scale, self.offset).T.numpy()
            t = []
            for xf in table:
                ok = np.nonzero(xf >= 0)[0]
                t.append(int(ok[0]) if ok.size else 256)
            op["tensors"]["u8_threshold"] = self.add(f"{path}.input.u8_threshold",
                                                     np.array(t, dtype=np.int16))
        self.ops.append(op)
        if len(self.in_shape) == 3 and len(shape) == 1:
            # the model flattened its input before binarizing it: flatten the NHWC bits
            self.ops.append({"op": "flatten", "name": f"{path}.input.flatten", "tensors": {}})
            return shape, self.in_shape
        return shape, None

    def _bit_pool(self, path, m, shape):
        if len(shape) != 3:
            self._unsupported(path, m, "on flat activations")
        kernel, stride = _pool_geometry(path, m)
        c, h, w = shape
        if kernel[0] > h or kernel[1] > w:
            raise ExportError(f"{_describe(path, m)}: kernel {kernel} larger than the {h}x{w} map")
        name = self.add(f"{path}.flip", np.zeros(c, dtype=bool))  # max of +-1 = OR of bits
        self.ops.append({"op": "maxpool", "name": path, "kernel": list(kernel),
                         "stride": list(stride), "tensors": {"flip": name}})
        return (c, (h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1)

    # layers ----------------------------------------------------------------------------------
    def _dense_weight(self, block) -> np.ndarray:
        w = _binary_weight(block.path, block.layer)
        if block.flat_source is not None:  # torch flattens NCHW, the engine holds NHWC bits
            c, h, wd = block.flat_source
            w = w.reshape(w.shape[0], c, h, wd).permute(0, 2, 3, 1).reshape(w.shape[0], -1)
        return w.numpy()

    def _bias(self, layer, out) -> torch.Tensor:
        return (layer.bias.detach().float().clone() if layer.bias is not None
                else torch.zeros(out))

    def _close_hidden(self, block: _Block):
        layer, path = block.layer, block.path
        if block.first:
            return self._first_layer(block, output="bits")
        if block.is_conv:
            kernel, stride, padding, dilation = _conv_geometry(path, layer)
            groups, out = layer.groups, layer.out_channels
            cg = layer.in_channels // groups
            k = cg * kernel[0] * kernel[1]
            w = _binary_weight(path, layer).permute(0, 2, 3, 1).numpy()  # (O, KH, KW, Cg)
            pad_mode = {0.0: "zero", 1.0: "one", -1.0: "minus_one"}[float(layer.pad_value)]
            if padding == (0, 0):
                pad_mode = "zero"
            _, h, wd = block.in_shape
            ho = conv_output_size(h, kernel[0], stride[0], padding[0], dilation[0])
            wo = conv_output_size(wd, kernel[1], stride[1], padding[1], dilation[1])
            if ho < 1 or wo < 1:
                raise ExportError(f"{_describe(path, layer)}: kernel does not fit the {h}x{wd} input")
            # zero padding: border positions sum fewer taps, so every integer in [-k, k] can occur
            step = 1 if pad_mode == "zero" and padding != (0, 0) else 2
        else:
            out = layer.out_features
            k = layer.in_features
            w = self._dense_weight(block)
            step = 2
        s_values = np.arange(-k, k + 1, step, dtype=np.int64)
        bias = self._bias(layer, out)
        decisions = _hidden_decisions(block, s_values, bias, out)
        thresh, flip = _thresholds_from_decisions(block, decisions, s_values)
        a, c = _bn_affine(block.bn[1] if block.bn else None, out)
        self.report["layers"][path] = {
            "kind": "conv" if block.is_conv else "dense", "fan_in": k,
            "thresholds_adjusted": _formula_adjustments(decisions, s_values, a, c,
                                                        bias.double().numpy()),
            "constant_channels": int(np.sum((thresh == INT32_MIN) | (thresh == INT32_MAX))),
            "flipped_channels": int(flip.sum()),
        }
        tensors = {"weight": self.add(f"{path}.weight", _pack(w)),
                   "thresh": self.add(f"{path}.thresh", thresh),
                   "flip": self.add(f"{path}.flip", flip)}
        if block.is_conv:
            self.ops.append({"op": "conv", "name": path, "in_channels": layer.in_channels,
                             "out_channels": out, "kernel": list(kernel), "stride": list(stride),
                             "padding": list(padding), "dilation": list(dilation),
                             "groups": groups, "pad_mode": pad_mode, "tensors": tensors})
            return self._after_pool(block, (out, ho, wo))
        self.ops.append({"op": "dense", "name": path, "in_features": k, "out_features": out,
                         "tensors": tensors})
        return (out,)

    def _after_pool(self, block, shape):
        if block.pool is None:
            return shape
        path, pool = block.pool
        kernel, stride = _pool_geometry(path, pool)
        c, h, w = shape
        if kernel[0] > h or kernel[1] > w:
            raise ExportError(f"{_describe(path, pool)}: kernel {kernel} larger than the {h}x{w} map")
        self.ops.append({"op": "maxpool", "name": path, "kernel": list(kernel),
                         "stride": list(stride), "tensors": {"flip": f"{block.path}.flip"}})
        return (c, (h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1)

    def _close_output(self, block: _Block) -> None:
        layer, path = block.layer, block.path
        if block.is_conv:
            raise ExportError(f"{_describe(path, layer)} is the last binary layer; the output layer "
                              "must be a BinaryLinear (optionally followed by BatchNorm1d)")
        out = layer.out_features
        self.num_classes = out
        if block.first:
            self._first_layer(block, output="logits")
            return
        k = layer.in_features
        bias = self._bias(layer, out)
        a, c = _bn_affine(block.bn[1] if block.bn else None, out)
        scale, shift = a, a * bias.double().numpy() + c
        # Check the affine map against the BN module itself over every reachable s.
        s_values = np.arange(-k, k + 1, 2, dtype=np.int64)
        worst = 0.0
        rows = max(1, _CHUNK // out)
        for start in range(0, len(s_values), rows):
            s = s_values[start:start + rows]
            v = torch.from_numpy(s.astype(np.float32))[:, None] + bias
            torch_out = (block.bn[1](v) if block.bn else v).double().numpy()
            ours = s[:, None] * scale + shift
            size = np.abs(a) * (k + np.abs(bias.double().numpy()) + np.abs(c / np.where(
                a == 0, 1, a))) + np.abs(c) + 1e-30
            worst = max(worst, float(np.max(np.abs(ours - torch_out) / size)))
        if worst > 1e-5:
            raise ExportError(f"layer {path!r}: logits = scale * s + shift disagree with the batch "
                              f"norm {block.bn[0] if block.bn else ''!r} (relative error {worst:.2e})")
        self.report["layers"][path] = {"kind": "dense_logits", "fan_in": k,
                                       "logit_relative_error": worst}
        self.ops.append({"op": "dense_logits", "name": path, "in_features": k, "out_features": out,
                         "tensors": {"weight": self.add(f"{path}.weight",
                                                        _pack(self._dense_weight(block))),
                                     "scale": self.add(f"{path}.scale", scale),
                                     "shift": self.add(f"{path}.shift", shift)}})

    # first layer -----------------------------------------------------------------------------
    def _first_layer(self, block: _Block, output: str):
        layer, path = block.layer, block.path
        w = _binary_weight(path, layer)
        out = layer.out_channels if block.is_conv else layer.out_features
        bias = self._bias(layer, out)
        op = {"name": path, "mode": self.mode, "output": output}
        tensors = {"bias": self.add(f"{path}.bias", bias.numpy())}
        integer = self.scale is not None and len(set(self.scale)) == 1
        if block.is_conv:
            kernel, stride, padding, dilation = _conv_geometry(path, layer)
            c, groups = layer.in_channels, layer.groups
            h, wd = block.in_shape[1], block.in_shape[2]
            ho = conv_output_size(h, kernel[0], stride[0], padding[0], dilation[0])
            wo = conv_output_size(wd, kernel[1], stride[1], padding[1], dilation[1])
            if ho < 1 or wo < 1:
                raise ExportError(f"{_describe(path, layer)}: kernel does not fit the {h}x{wd} input")
            pad_value = float(layer.pad_value) if padding != (0, 0) else 0.0
            op.update({"op": "first_conv", "in_channels": c, "out_channels": out,
                       "kernel": list(kernel), "stride": list(stride), "padding": list(padding),
                       "dilation": list(dilation), "groups": groups, "pad_value": pad_value})
            packed_w = w.permute(0, 2, 3, 1).reshape(out, -1).numpy()  # (kh, kw, c) patch order
        else:
            op.update({"op": "first_dense", "in_features": layer.in_features, "out_features": out})
            packed_w = w.numpy()
        tensors["weight"] = self.add(f"{path}.weight", _pack(packed_w))
        if output == "logits":
            a, c_ = _bn_affine(block.bn[1] if block.bn else None, out)
            tensors["scale"] = self.add(f"{path}.scale", a)
            tensors["shift"] = self.add(f"{path}.shift", c_)
            op["tensors"] = tensors
            self.ops.append(op)
            self.report["layers"][path] = {"kind": op["op"] + "_logits"}
            return None
        v, flip = _first_boundaries(block, out)
        tensors["vthresh"] = self.add(f"{path}.vthresh", v)
        tensors["flip"] = self.add(f"{path}.flip", flip)
        if integer:
            if block.is_conv:
                thresh, rows, cols = self._first_conv_thresholds(
                    w, bias, v, flip, kernel, stride, padding, dilation, groups, (h, wd), pad_value)
                tensors["row_class"] = self.add(f"{path}.row_class", rows)
                tensors["col_class"] = self.add(f"{path}.col_class", cols)
            else:
                hw = layer.in_features // len(self.offset)
                wsum = w.reshape(out, len(self.offset), hw).sum(-1).long().numpy()  # (O, C)
                thresh = self._integer_thresholds(wsum[None], np.zeros((1, out), np.int64),
                                                  0.0, bias, v, flip)[0]
            tensors["thresh"] = self.add(f"{path}.thresh", thresh)
        op["tensors"] = tensors
        self.ops.append(op)
        self.report["layers"][path] = {
            "kind": op["op"], "constant_channels": int(np.sum(~np.isfinite(v))),
            "flipped_channels": int(flip.sum()), "integer_thresholds": integer}
        if block.is_conv:
            return self._after_pool(block, (out, ho, wo))
        return (out,)

    def _integer_thresholds(self, wsum, wpad, pad_value, bias, v, flip) -> np.ndarray:
        """Exact integer thresholds on s = x_u8 . w for position classes.

        wsum (P, O, C): sum of the +-1 weights over the valid taps of each input channel;
        wpad (P, O): sum over the padded taps (which see ``pad_value``). The real pre-activation
        is scale*s + sum_c offset[c]*wsum[c] + pad_value*wpad + bias; +1 iff it is >= v*
        (<= v* where flipped).
        """
        scale = Fraction(self.scale[0])
        offsets = [Fraction(o) for o in self.offset]
        pad = Fraction(pad_value)
        n_pos, out = wpad.shape
        thresh = np.empty((n_pos, out), dtype=np.int64)
        for o in range(out):
            if not math.isfinite(float(v[o])):
                thresh[:, o] = INT32_MIN if v[o] < 0 else INT32_MAX
                continue
            target = Fraction(float(v[o])) - Fraction(float(bias[o]))
            for p in range(n_pos):
                const = pad * int(wpad[p, o]) + sum(
                    (off * int(ws) for off, ws in zip(offsets, wsum[p, o])), Fraction(0))
                bound = (target - const) / scale
                t = math.floor(bound) if flip[o] else math.ceil(bound)
                thresh[p, o] = min(max(t, INT32_MIN), INT32_MAX)
        return thresh.astype(np.int32)

    def _first_conv_thresholds(self, w, bias, v, flip, kernel, stride, padding, dilation, groups,
                               size, pad_value):
        """Thresholds per (row class, column class, channel) of a zero/value-padded first conv."""
        def classes(length, k, s, p, d):
            n_out = conv_output_size(length, k, s, p, d)
            masks = [tuple(0 <= y * s - p + i * d < length for i in range(k)) for y in range(n_out)]
            unique = sorted(set(masks))
            return [unique.index(m) for m in masks], unique

        rows, row_masks = classes(size[0], kernel[0], stride[0], padding[0], dilation[0])
        cols, col_masks = classes(size[1], kernel[1], stride[1], padding[1], dilation[1])
        out, cg = w.shape[0], w.shape[1]
        wl = w.long()
        wsum = np.zeros((len(row_masks), len(col_masks), out, len(self.offset)), np.int64)
        wpad = np.zeros((len(row_masks), len(col_masks), out), np.int64)
        for r, rm in enumerate(row_masks):
            for q, cm in enumerate(col_masks):
                valid = torch.tensor([[a and b for b in cm] for a in rm])
                inside = (wl * valid).sum(dim=(2, 3))  # (O, Cg)
                wpad[r, q] = (wl * ~valid).sum(dim=(1, 2, 3)).numpy()
                # channel of input tap: group g of output o reads channels g*cg .. g*cg + cg - 1
                full = torch.zeros(out, cg * groups, dtype=torch.long)
                og = out // groups
                for g in range(groups):
                    full[g * og:(g + 1) * og, g * cg:(g + 1) * cg] = inside[g * og:(g + 1) * og]
                if len(self.offset) == 1:
                    wsum[r, q, :, 0] = full.sum(1).numpy()
                else:
                    wsum[r, q] = full.numpy()
        n_r, n_q = len(row_masks), len(col_masks)
        thresh = self._integer_thresholds(wsum.reshape(n_r * n_q, out, -1),
                                          wpad.reshape(n_r * n_q, out), pad_value, bias, v, flip)
        return (thresh.reshape(n_r, n_q, out), np.array(rows, np.int32), np.array(cols, np.int32))


def _final_check(packed: PackedModel, expected: torch.Tensor, x_float: torch.Tensor, x_u8) -> None:
    """Run the engine on the example input and compare with the torch model (warn on mismatch)."""
    expected = expected.double().numpy()
    if expected.shape != (x_float.shape[0], packed.num_classes):
        raise ExportError(f"the torch model outputs shape {tuple(expected.shape)}, the export "
                          f"expected (N, {packed.num_classes}); the model has modules export "
                          "does not see")
    inputs = [("float", x_float.numpy())]
    if x_u8 is not None:
        inputs.append(("uint8", x_u8.numpy()))
    results = {}
    for kind, x in inputs:
        got = packed.predict(x).astype(np.float64)
        size = np.abs(expected).max(axis=1, keepdims=True) + 1e-12
        rel = float(np.max(np.abs(got - expected) / size))
        argmax_diff = int(np.sum(got.argmax(1) != expected.argmax(1)))
        results[kind] = {"max_relative_error": rel, "argmax_mismatches": argmax_diff}
        if rel > 1e-4 or argmax_diff:
            warnings.warn(
                f"export: on the example input ({kind} path) the engine's logits differ from the "
                f"torch model's (max relative error {rel:.2e}, {argmax_diff} different argmax of "
                f"{len(x)}); first-layer near-ties round differently in float32 (see "
                "binarynet.export docs), anything larger is a bug", UserWarning, stacklevel=3)
    packed.export_report["example_check"] = results


# -- back to torch -----------------------------------------------------------------------------
def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array))  # a writable copy (loaded tensors are read-only)


def _unpack(packed: PackedModel, op, role, k) -> torch.Tensor:
    words = np.ascontiguousarray(packed.tensors[op["tensors"][role]])
    return torch.from_numpy(kernels.unpack(words, k).astype(np.float32))


def _unit_bn(features: int) -> nn.BatchNorm1d:
    """An eval BatchNorm1d whose normalisation is exactly 1/sqrt(var + eps) = 1.

    Some torch releases (2.11) reject eps = 0, so var = 1 - 2^-24 and eps = 2^-24: both exact in float32,
    and their sum is exactly 1 in float32 and float64, so y = (x - mean) * weight + bias.
    """
    bn_ = nn.BatchNorm1d(features, eps=2.0 ** -24)
    with torch.no_grad():
        bn_.running_var.fill_(1.0 - 2.0 ** -24)
    return bn_


def _threshold_bn(thresh, flip, offset: float) -> nn.Module:
    """BatchNorm (eval) whose sign is +1 iff x >= t (x <= t where flip): exact on integer x.

    y = (x - mean) * gamma with mean = t -+ offset, gamma = +-1 and unit scale (see _unit_bn).
    """
    thresh = torch.from_numpy(np.array(thresh, np.float64))
    flip = torch.from_numpy(np.array(flip))
    bn_ = _unit_bn(len(thresh))
    with torch.no_grad():
        bn_.running_mean.copy_(torch.where(flip, thresh + offset, thresh - offset))
        bn_.weight.copy_(torch.where(flip, -1.0, 1.0))
        bn_.bias.zero_()
    return bn_


def _as_2d(bn1d: nn.BatchNorm1d) -> nn.BatchNorm2d:
    bn2d = nn.BatchNorm2d(bn1d.num_features, eps=bn1d.eps)
    bn2d.load_state_dict(bn1d.state_dict())
    return bn2d


def to_torch(packed: PackedModel) -> nn.Sequential:
    """The packed model as a plain float torch network (eval mode): Linear/Conv2d with the +-1
    weights as float32, BatchNorm and Sign (or MaxPool2d before the BatchNorm, paper order).

    Each BatchNorm is built from a threshold (mean = t -+ 1/2, gamma = +-1, unit scale),
    so hidden decisions equal the engine's; the first layer's float decisions compare its
    float32 pre-activation with v*, as the engine's float path does; logits = scale * s + shift
    in float32. The network takes normalised float input (N, *input_shape). Used as the float
    baseline of speed comparisons (same network, float arithmetic) and as a cross-check.
    """
    layers: list = []
    for i, op in enumerate(packed.ops):
        kind = op["op"]
        if kind == "binarize_input":
            layers.append(bnn.Sign())
        elif kind in ("first_dense", "dense", "dense_logits"):
            if kind == "first_dense":
                layers.append(nn.Flatten())
            k, out = op["in_features"], op["out_features"]
            linear = nn.Linear(k, out, bias=kind == "first_dense")
            with torch.no_grad():
                w = _unpack(packed, op, "weight", k)
                if kind != "first_dense" and i and packed.ops[i - 1]["op"] == "flatten":
                    h, wd, c = packed.activations[i - 2][1]  # engine columns are NHWC
                    w = w.reshape(out, h, wd, c).permute(0, 3, 1, 2).reshape(out, k)
                linear.weight.copy_(w)
                if kind == "first_dense":
                    linear.bias.copy_(_tensor(packed.tensors[op["tensors"]["bias"]]))
            layers.append(linear)
            if kind == "first_dense" and op["output"] == "bits":
                layers += [_threshold_bn(packed.tensors[op["tensors"]["vthresh"]],
                                         packed.tensors[op["tensors"]["flip"]], 0.0), bnn.Sign()]
            elif kind == "dense":
                layers += [_threshold_bn(packed.tensors[op["tensors"]["thresh"]],
                                         packed.tensors[op["tensors"]["flip"]], 0.5), bnn.Sign()]
            else:  # logits = scale * s + shift
                out_bn = _unit_bn(out)
                with torch.no_grad():
                    out_bn.running_mean.zero_()
                    out_bn.weight.copy_(_tensor(packed.tensors[op["tensors"]["scale"]]))
                    out_bn.bias.copy_(_tensor(packed.tensors[op["tensors"]["shift"]]))
                layers.append(out_bn)
        elif kind in ("first_conv", "conv"):
            c, out, groups = op["in_channels"], op["out_channels"], op["groups"]
            kh, kw = op["kernel"]
            cg = c // groups
            if kind == "first_conv":
                w = _unpack(packed, op, "weight", kh * kw * cg).reshape(out, kh, kw, cg)
                pad_value = op["pad_value"]
            else:
                w = _unpack(packed, op, "weight", cg).reshape(out, kh, kw, cg)
                pad_value = {"zero": 0.0, "one": 1.0, "minus_one": -1.0}[op["pad_mode"]]
            padding = tuple(op["padding"])
            if pad_value != 0.0 and any(padding):
                layers.append(nn.ConstantPad2d((padding[1], padding[1], padding[0], padding[0]),
                                               pad_value))
                padding = (0, 0)
            conv = nn.Conv2d(c, out, (kh, kw), stride=tuple(op["stride"]), padding=padding,
                             dilation=tuple(op["dilation"]), groups=groups,
                             bias=kind == "first_conv")
            with torch.no_grad():
                conv.weight.copy_(w.permute(0, 3, 1, 2))
                if kind == "first_conv":
                    conv.bias.copy_(_tensor(packed.tensors[op["tensors"]["bias"]]))
            layers.append(conv)
            nxt = packed.ops[i + 1] if i + 1 < len(packed.ops) else None
            if nxt is not None and nxt["op"] == "maxpool":
                layers.append(nn.MaxPool2d(tuple(nxt["kernel"]), tuple(nxt["stride"])))
            if kind == "first_conv":
                bn_ = _threshold_bn(packed.tensors[op["tensors"]["vthresh"]],
                                    packed.tensors[op["tensors"]["flip"]], 0.0)
            else:
                bn_ = _threshold_bn(packed.tensors[op["tensors"]["thresh"]],
                                    packed.tensors[op["tensors"]["flip"]], 0.5)
            layers += [_as_2d(bn_), bnn.Sign()]
        elif kind == "maxpool":
            if packed.ops[i - 1]["op"] not in ("first_conv", "conv"):  # pooling +-1 maps
                layers.append(nn.MaxPool2d(tuple(op["kernel"]), tuple(op["stride"])))
        elif kind == "flatten":
            layers.append(nn.Flatten())
    return nn.Sequential(*layers).eval()


make_module_callable(__name__, export)
