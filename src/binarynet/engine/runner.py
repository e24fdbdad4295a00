"""The graph runner: executes a validated packed graph on one backend.

The graph is a DAG (format 3): each value is kept until the last op reading it has run.
Format-2 layers go packed bits -> fused XNOR-popcount + threshold kernel -> packed bits; no int32
or float activations are materialised between them, and only the first layer (real-valued
input) and the output layer (logits) compute integer or float values. NCHW images are
transposed to NHWC once, at the first conv. The real-valued stream of modern BNNs (float32
values) runs with the backend's ``float_ops`` (:mod:`binarynet.engine.float_ops`), except where
its kernels fuse a binary conv/dense with the elementwise ops and sign after it (the plan,
:mod:`binarynet.engine.plan`). Every device-specific step goes through the backend
(:mod:`binarynet.engine.backends`): its ``kernels`` and its array operations, so all backends
run the same op code.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from ..errors import BinarynetError
from . import float_checks, float_ops
from . import graph as _graph
from . import plan as _plan
from .runner_first_float import FloatFirstLayer
from .runner_float import FloatStreamOps, geometry

__all__ = ["Runner"]


class Runner(FloatStreamOps, FloatFirstLayer):
    """One model's graph and tensors on one backend (tensors uploaded once, derived ones and
    the execution plan made once)."""

    def __init__(self, graph: dict, tensors: dict, activations: list, backend):
        self.graph = graph
        self.tensors = tensors  # host (numpy) tensors: metadata the runner reads on the host
        self.activations = activations
        self.xp = backend
        self.kernels = backend.kernels
        self.floats = getattr(backend, "float_ops", None)
        if self.floats is None:
            _refuse_float_ops(graph, activations, backend)
        self.reads = _graph.sources(graph)
        self.plan = _plan.build(graph, self.reads, self.kernels)
        self.arrays = {name: backend.upload(t) for name, t in tensors.items()}
        self.cache: dict = {}

    def value(self, j) -> tuple:
        """(kind, shape) of value ``j`` per sample (-1: the model input)."""
        return ("image", tuple(self.graph["input"]["shape"])) if j < 0 else self.activations[j]

    def trace(self, x) -> list:
        """Each op run alone (no fusion): ``[(op name, op kind, output as numpy)]``, binary
        activations unpacked to int8 +-1 and float values in the training layout (N, C, H, W)
        or (N, K) (flattened in NCHW order)."""
        out = []
        ops = self.graph["ops"]

        def record(step, values):
            i = step.ops[0]
            out.append((ops[i]["name"], ops[i]["op"], self._as_training(i, values[i])))
        self._execute(_plan.single_ops(self.graph, self.reads), x, record)
        return out

    def run(self, x, timings: Optional[list] = None):
        """Logits of the batch ``x`` (on the backend), with the fused steps of the plan;
        with ``timings``, appends (op name, kind, seconds) per step (fused ops joined by +)."""
        if timings is None:
            return self._execute(self.plan, x, None)
        ops = self.graph["ops"]
        # the steps' labels made once: the hook's own time is counted in the next step's
        labels = iter(self._cached("step labels", lambda: [
            (ops[step.ops[0]]["name"], "+".join(ops[i]["op"] for i in step.ops))
            for step in self.plan]))
        start = [time.perf_counter()]

        def on_step(step, values):
            self.xp.synchronize()  # a GPU runs its kernels asynchronously
            now = time.perf_counter()
            timings.append(next(labels) + (now - start[0],))
            start[0] = now
        return self._execute(self.plan, x, on_step)

    def _execute(self, plan, x, on_step):
        ops, values = self.graph["ops"], {-1: x}
        for step in plan:
            kind = step.kind
            if kind == "op":
                i = step.ops[0]
                op = ops[i]
                values[i] = getattr(self, "_" + op["op"])(i, op, *[values[j] for j in step.reads])
            elif kind == "conv_maxpool":
                i, pool = step.ops
                values[pool] = self._conv(i, ops[i], values[step.reads[0]], pool=ops[pool])
            else:
                self._transform(step, values)
            if on_step is not None:
                on_step(step, values)
            for j in step.frees:
                del values[j]
        return values[len(ops) - 1]

    def _as_training(self, i, v):
        """Value ``i`` as numpy in the training model's layout."""
        kind, shape = self.activations[i]
        if kind == "bits":
            v = self.kernels.unpack(v, shape[-1])
        v = self.xp.to_numpy(v)
        if kind == "logits":
            return v
        if len(shape) == 3:
            v = v.transpose(0, 3, 1, 2)
        elif self.graph["ops"][i]["op"] == "flatten":
            h, w, c = self.value(self.reads[i][0])[1]
            v = v.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(len(v), -1)
        return np.ascontiguousarray(v)

    # -- helpers -----------------------------------------------------------------------------
    def _t(self, op, role):
        """An op's tensor, as the backend takes it (uploaded once to the model's device)."""
        return self.arrays[op["tensors"][role]]

    def _pack_bool(self, cond):
        # pack() sets bit = (value >= 0): True -> 0, False -> -1.
        return self.kernels.pack(self.xp.cast(cond, np.int8) - 1)

    def _threshold(self, s, thresh, flip):
        """Bits of int32 sums s (..., O): s >= thresh (s <= thresh where flip), packed."""
        return self.kernels.threshold_pack(self.xp.contiguous(s), thresh, flip)

    def _threshold_by_class(self, op, s: np.ndarray) -> np.ndarray:
        """First-conv bits with one threshold vector per border class of output positions."""
        # the classes are host metadata: the positions to re-threshold are chosen on the host
        return _threshold_by_class(self, s, self._t(op, "thresh"), self._t(op, "flip"),
                                   self.tensors[op["tensors"]["row_class"]],
                                   self.tensors[op["tensors"]["col_class"]])

    def _cached(self, key, make):
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def _kernel_call(self, key, make):
        """A kernel with an op's constant operands bound, made on the op's first run and kept:
        ``make()`` gives (kernel name, operands after x, options), the result is called as
        ``call(x)`` or ``call(x, residual)``. With the kernels' ``prepare`` (the compiled ones)
        the constants are checked and laid out once, and each run checks only its input."""
        return self._cached(key, lambda: _bind(self.kernels, *make()))

    def _weights_pm1(self, op, k):
        """The first layer's +-1 weights as float64 (O, k), for the float path (cached)."""
        return self._cached((op["name"], "w64"), lambda: self.xp.cast(self.kernels.unpack(
            self.xp.contiguous(self._t(op, "weight")), k), np.float64))

    def _normalised(self, x, channel_axis: int):
        """float64 images: uint8 input normalised with the export's scale/offset, floats as given."""
        if not self.xp.is_uint8(x):
            return self.xp.cast(x, np.float64)
        shape = [1] * x.ndim
        shape[channel_axis] = -1
        scale = self.xp.upload(np.asarray(self.graph["input"]["scale"], np.float64).reshape(shape))
        offset = self.xp.upload(np.asarray(self.graph["input"]["offset"], np.float64).reshape(shape))
        return x * scale + offset

    def _integer_path(self, x) -> bool:
        return self.xp.is_uint8(x) and _graph.integer_first_layer(self.graph)

    def _first_gemm(self, op, x_u8, w, k, whole=False):
        """int32 sums of uint8 x_u8 with weight rows w (``whole``: all the op's weights)."""
        if whole and (s := _prepared_sums(self, op, x_u8, k)) is not None:
            return s
        gemm = self.kernels.bitplane_gemm if op["mode"] == "bitplane" else self.kernels.int_gemm
        return gemm(self.xp.contiguous(x_u8), self.xp.contiguous(w), k)

    # -- ops ---------------------------------------------------------------------------------
    def _binarize_input(self, i, op, x):
        channel_axis = 1 if x.ndim == 4 else None
        if self.xp.is_uint8(x):
            t = self._t(op, "u8_threshold")
            if channel_axis is not None:
                t = t.reshape(1, -1, 1, 1)
            cond = self.xp.cast(x, np.int16) >= t
        else:
            cond = x >= 0
        if x.ndim == 4:
            cond = self.xp.permute(cond, (0, 2, 3, 1))
        return self._pack_bool(self.xp.contiguous(cond))

    def _first_dense(self, i, op, x):
        n, k = x.shape[0], op["in_features"]
        if self._integer_path(x):
            s = self._first_gemm(op, x.reshape(n, k), self._t(op, "weight"), k, whole=True)
            if op["output"] == "bits":
                return self._threshold(s, self._t(op, "thresh"), self._t(op, "flip"))
            z = float(self.graph["input"]["scale"][0]) * self.xp.cast(s, np.float64) \
                + self._u8_dense_constant(op)
        else:
            flat = x.reshape(n, k)
            if flat.dtype not in (np.float32, np.float64):  # uint8 without one input scale
                flat = self._normalised(x, 1).reshape(n, k)
            if op["output"] == "bits" and flat.dtype == np.float32 and \
                    hasattr(self.kernels, "first_dense_float_sign"):
                return self._first_dense_float_bits(op, flat, k)
            z = self._float_preactivation(op, self._first_float_sums(op, flat, k))
        return self._first_output(op, z)

    def _first_float_sums(self, op, x, k, rows=slice(None)):
        """float64 sums x . w of a first layer's float input x (M, k) with its +-1 weight rows
        ``rows``: the kernels' first_dense_float where they have it (not BLAS, whose threads
        spin after each call and slow the ops that follow), else a float64 matmul."""
        if rows == slice(None) and (s := _prepared_sums(self, op, x, k)) is not None:
            return s  # all the weights, prepared once
        fast = getattr(self.kernels, "first_dense_float", None)
        if fast is not None:
            return fast(self.xp.contiguous(x), self.xp.contiguous(self._t(op, "weight")[rows]), k)
        return self.xp.cast(x, np.float64) @ self._weights_pm1(op, k)[rows].T

    def _float_preactivation(self, op, sums):
        """float32(sum) + float32 bias, rounded as the float32 training layer rounds them."""
        return self.xp.cast(sums, np.float32) + self._t(op, "bias")

    def _u8_dense_constant(self, op):
        """offset . w + bias per output unit (float64), for logits from uint8 input."""
        def make():
            k = op["in_features"]
            channels = len(self.graph["input"]["offset"])
            w = self._weights_pm1(op, k).reshape(op["out_features"], channels, -1).sum(-1)
            offset = self.xp.upload(np.asarray(self.graph["input"]["offset"], np.float64))
            return w @ offset + self._t(op, "bias")
        return self._cached((op["name"], "u8_const"), make)

    def _first_output(self, op, z):
        if op["output"] == "logits":
            return self.xp.cast(z * self._t(op, "scale") + self._t(op, "shift"), np.float32)
        v = self._t(op, "vthresh")
        return self._pack_bool(self.xp.where(self._t(op, "flip"), z <= v, z >= v))

    def _first_conv(self, i, op, x):
        n = x.shape[0]
        c, o, groups = op["in_channels"], op["out_channels"], op["groups"]
        kh, kw = op["kernel"]
        ho, wo, _ = self.activations[i][1]
        cg, og = c // groups, o // groups
        k = kh * kw * cg
        integer = self._integer_path(x)
        if integer and groups == 1 and hasattr(self.kernels, "int_conv_threshold"):
            return _int_first_conv(self, op, x)
        if not integer and groups == 1 and hasattr(self.kernels, "conv2d_float_sign"):
            return self._first_conv_float(op, x)
        if integer:
            nhwc, pad = self.xp.permute(x, (0, 2, 3, 1)), 0
        else:
            nhwc, pad = self.xp.permute(self._normalised(x, 1), (0, 2, 3, 1)), op["pad_value"]
        weight = self._t(op, "weight")
        parts = []
        for g in range(groups):
            patches = _im2col(self.xp, nhwc[..., g * cg:(g + 1) * cg], (kh, kw), op["stride"],
                              op["padding"], op["dilation"], pad)
            w = weight[g * og:(g + 1) * og]
            if integer:
                parts.append(self._first_gemm(op, patches, w, k))
            else:
                parts.append(self._first_float_sums(op, patches, k, slice(g * og, (g + 1) * og)))
        out = self.xp.concat(parts, 1) if groups > 1 else parts[0]
        out = out.reshape(n, ho, wo, o)
        if integer:
            return self._threshold_by_class(op, out)
        return self._first_output(op, self._float_preactivation(op, out))

    def _dense(self, i, op, x):
        return self._kernel_call((i, "dense"), lambda: ("bgemm_threshold", (
            self._t(op, "weight"), op["in_features"], self._t(op, "thresh"),
            self._t(op, "flip")), {}))(x)

    def _dense_logits(self, i, op, x):
        s = self._kernel_call((i, "dense_logits"), lambda: (
            "bgemm", (self._t(op, "weight"), op["in_features"]), {}))(x)
        # int32 * float64 scale: float64 on both backends (both promote alike)
        return self.xp.cast(s * self._t(op, "scale") + self._t(op, "shift"), np.float32)

    def _conv_sums(self, op, x, args):
        """int32 sums (N, Ho, Wo, O) of a binary conv; grouped: one conv per channel group."""
        weight, c, groups = self._t(op, "weight"), op["in_channels"], op["groups"]
        if groups == 1:
            return self.kernels.bconv2d(x, weight, c, **args)
        cg, og = c // groups, op["out_channels"] // groups
        values = self.kernels.unpack(x, c) if cg % 64 else None
        parts = []
        for g in range(groups):
            if values is None:
                xg = self.xp.contiguous(x[..., g * cg // 64:(g + 1) * cg // 64])
            else:
                xg = self.kernels.pack(values[..., g * cg:(g + 1) * cg])
            wg = self.xp.contiguous(weight[g * og:(g + 1) * og])
            parts.append(self.kernels.bconv2d(xg, wg, cg, **args))
        return self.xp.concat(parts, -1)

    def _conv(self, i, op, x, pool=None):
        if op["groups"] > 1:  # grouped: int32 sums materialised, then thresholded
            return self._threshold(self._conv_sums(op, x, geometry(op)), self._t(op, "thresh"),
                                   self._t(op, "flip"))

        def make():
            operands = (self._t(op, "weight"), op["in_channels"], self._t(op, "thresh"),
                        self._t(op, "flip"))
            if pool is None:
                return "bconv2d_threshold", operands, geometry(op)
            return ("bconv2d_threshold_maxpool",
                    operands + (tuple(pool["kernel"]), tuple(pool["stride"])), geometry(op))
        return self._kernel_call((i, "conv" if pool is None else "conv_maxpool"), make)(x)

    def _maxpool(self, i, op, x):
        return self._kernel_call((i, "maxpool"), lambda: ("bmaxpool2d", (
            tuple(op["kernel"]), tuple(op["stride"]), self._t(op, "flip"),
            self.activations[i][1][2]), {}))(x)

    def _flatten(self, i, op, x):
        n, h, w, last = x.shape
        if self.activations[i][0] == "float":
            return self.floats.flatten(x)
        c = self.value(self.reads[i][0])[1][2]
        if c % 64 == 0:  # no pad bits: the NHWC words are already the flat bit vector
            return x.reshape(n, h * w * last)
        return self.kernels.pack(self.kernels.unpack(x, c).reshape(n, h * w * c))


def _bind(kernels, name: str, operands: tuple, options: dict):
    """``kernels``' op ``name`` with every operand after x bound: ``call(x)``, or
    ``call(x, residual)`` for a fused transform; prepared (:func:`binarynet.engine.kernels.prepare`:
    constants checked once) where the kernels can, else their function called with them."""
    prepare = getattr(kernels, "prepare", None)
    if prepare is not None:
        return prepare(name, *operands, **options)
    kernel = getattr(kernels, name)

    def call(x, residual=None):
        extra = {} if residual is None else {"residual": residual}
        return kernel(x, *operands, **options, **extra)
    return call


def _threshold_by_class(runner, s, thresh, flip, rows, cols):
    """Bits of the first conv's int32 sums s with thresholds ``thresh[row class, column class]``:
    all positions are thresholded with the most frequent class's thresholds (the interior),
    then the positions of every other class (borders: a few rows and columns) again with
    their own."""
    xp = runner.xp
    main_r, main_c = int(np.bincount(rows).argmax()), int(np.bincount(cols).argmax())
    bits = runner._threshold(s, thresh[main_r, main_c], flip)
    for r in range(thresh.shape[0]):
        for c in range(thresh.shape[1]):
            if (r, c) == (main_r, main_c):
                continue
            ys, xs = np.nonzero(rows == r)[0], np.nonzero(cols == c)[0]
            if ys.size and xs.size:
                ys, xs = xp.upload(ys), xp.upload(xs)
                part = s[:, ys[:, None], xs[None, :]]
                xp.words(bits)[:, ys[:, None], xs[None, :]] = xp.words(
                    runner._threshold(part, thresh[r, c], flip))
    return bits


def _int_first_conv(runner, op, x):
    """A uint8 first conv's bits: patches, integer product and border-class thresholds in
    cache (no int32 sums), prepared (the operands checked once, not on every call)."""
    t = runner.tensors
    call = runner._kernel_call((op["name"], "int_conv_threshold"), lambda: (
        "int_conv_threshold", (
            runner._t(op, "weight"), tuple(op["kernel"]), runner._t(op, "thresh"),
            runner._t(op, "flip"), t[op["tensors"]["row_class"]], t[op["tensors"]["col_class"]],
            tuple(op["stride"]), tuple(op["padding"]), tuple(op["dilation"])), {}))
    return call(runner.xp.contiguous(x))


def _prepared_sums(runner, op, x, k):
    """A first layer's sums of x (uint8: int32, float: float64) with all of its weights, their
    weight-only work (bit-plane popcounts and panels, int8 re-layout) done once per model
    (``prepare("first_layer", ...)``); None where the backend's kernels cannot prepare."""
    if getattr(runner.kernels, "prepare", None) is None:
        return None
    call = runner._kernel_call((op["name"], "first_layer"), lambda: (
        "first_layer", (runner.xp.contiguous(runner._t(op, "weight")), k), {"mode": op["mode"]}))
    return call(runner.xp.contiguous(x))


def _refuse_float_ops(graph, activations, backend) -> None:
    """A backend without ``float_ops`` runs format-2 ops only: name the first op it cannot."""
    for i, op in enumerate(graph["ops"]):
        if op["op"] in float_checks.OPS or activations[i][0] == "float":
            raise BinarynetError(
                f"PackedModel on {backend.device}: this backend does not run op {i} "
                f"({op['op']}, layer {op['name']!r}) of the real-valued stream yet; run this "
                "model on 'cpu'")


def _im2col(xp, x, kernel, stride, padding, dilation, pad_value):
    """NHWC (N, H, W, C) -> patches (N*Ho*Wo, KH*KW*C), taps in (kh, kw, c) order (xp: the
    backend's array operations)."""
    n, h, w, c = x.shape
    (kh, kw), (ph, pw) = kernel, padding
    if ph or pw:
        padded = xp.full((n, h + 2 * ph, w + 2 * pw, c), pad_value, x)
        padded[:, ph:ph + h, pw:pw + w] = x
    else:
        padded = x
    ho = _graph.conv_output_size(h, kh, stride[0], ph, dilation[0])
    wo = _graph.conv_output_size(w, kw, stride[1], pw, dilation[1])
    views = float_ops.taps(padded, kernel, stride, dilation, (ho, wo))
    return xp.stack(views, 3).reshape(n * ho * wo, kh * kw * c)
