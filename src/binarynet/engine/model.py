"""PackedModel: a 1-bit model in memory, and the graph runner that predicts with it.

Hidden layers go packed bits -> fused XNOR-popcount + threshold kernel -> packed bits; no int32
or float activations are materialised between them. Only the first layer (real-valued input)
and the output layer (logits) compute integer or float values. NCHW images are transposed to
NHWC once, at the first conv. Never imports torch.
"""
from __future__ import annotations

import os
import time
from typing import Optional

import numpy as np

from . import format as _format
from . import graph as _graph
from ..errors import ModelFileError

__all__ = ["PackedModel", "load"]

# Bound on the first layer's temporaries (input patches and integer sums) per internal batch.
_FIRST_LAYER_BYTES = 64 * 1024 * 1024


def _kernel_ops(reference: bool):
    if reference:
        from . import reference as ops
    else:
        from . import kernels as ops
    return ops


class PackedModel:
    """A packed binary network: graph (JSON) + named numpy tensors (see :mod:`binarynet.engine.graph`).

    Build one with :func:`binarynet.export` (from a torch model) or :func:`load` (from a file).
    ``reference=True`` runs every op with the plain-numpy reference instead of the compiled
    kernels (slow; for tests).
    """

    def __init__(self, graph: dict, tensors: dict, *, reference: bool = False):
        self.graph = graph
        self.tensors = {name: np.asarray(t) for name, t in tensors.items()}
        self.activations = _graph.validate(graph, self.tensors)
        self.reference = bool(reference)
        self._ops = _kernel_ops(self.reference)
        self._cache: dict = {}

    # -- description -------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple:
        """Shape of one input sample, as the torch model takes it: (C, H, W) or (K,)."""
        return tuple(self.graph["input"]["shape"])

    @property
    def num_classes(self) -> int:
        """Number of logits per sample."""
        return self.graph["num_classes"]

    @property
    def input_scale(self) -> Optional[list]:
        """Per-channel scale of the training normalisation x_f = x_u8 * scale + offset, or None."""
        return self.graph["input"]["scale"]

    @property
    def input_offset(self) -> Optional[list]:
        """Per-channel offset of the training normalisation, or None."""
        return self.graph["input"]["offset"]

    @property
    def ops(self) -> list:
        """The graph's ops, in execution order."""
        return self.graph["ops"]

    @property
    def nbytes(self) -> int:
        """Bytes of all tensors (binary weights, thresholds, output affine)."""
        return sum(t.nbytes for t in self.tensors.values())

    def to_bytes(self) -> bytes:
        """The model file's content (see :mod:`binarynet.engine.format`)."""
        return _format.encode(self.graph, self.tensors)

    def save(self, path) -> int:
        """Write the model to ``path`` (atomically); returns the file size in bytes."""
        return _format.write_file(path, self.graph, self.tensors)

    def summary(self) -> str:
        """A text table: each op, its output shape and the bytes of its tensors; then the file size.

        Tensor bytes + header bytes equal the size of the file :meth:`save` writes.
        """
        rows, seen = [], set()
        for op, (kind, shape) in zip(self.ops, self.activations):
            names = [n for n in op["tensors"].values() if n not in seen]
            seen.update(names)
            size = sum(self.tensors[n].nbytes for n in names)
            detail = ", ".join(f"{role} {self.tensors[n].dtype.name}{list(self.tensors[n].shape)}"
                               for role, n in sorted(op["tensors"].items()))
            rows.append((op["op"], op["name"], f"{kind} {list(shape)}", size, detail))
        header = _format.header_size(self.to_bytes())
        width = max(len(r[0]) + len(r[1]) + 3 for r in rows)
        lines = [f"{'op (layer)':<{width}} {'output':<22} {'bytes':>10}  tensors"]
        for op, name, out, size, detail in rows:
            lines.append(f"{op + ' (' + name + ')':<{width}} {out:<22} {size:>10}  {detail}")
        lines.append(f"tensors {self.nbytes} bytes + header {header} bytes = file "
                     f"{self.nbytes + header} bytes")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"PackedModel(input={list(self.input_shape)}, classes={self.num_classes}, "
                f"ops={[op['op'] for op in self.ops]}, {self.nbytes} tensor bytes)")

    # -- inference ---------------------------------------------------------------------------
    def predict(self, x, batch_size: Optional[int] = None) -> np.ndarray:
        """Logits, float32 (N, num_classes), of input images ``x`` shaped (N, *input_shape).

        ``x`` is float (already normalised as in training; the first layer sums in float64 and
        rounds to float32 like the torch layer) or uint8 (raw pixels; needs the normalisation
        given at export, which is folded into the first layer's integer thresholds). Large batches are processed ``batch_size`` samples at
        a time (default: bounded first-layer temporaries).
        """
        x = self._check_input(x, "predict")
        n = x.shape[0]
        if batch_size is None:
            batch_size = self._default_batch_size()
        elif isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"PackedModel.predict: batch_size must be a positive int, got "
                             f"{batch_size!r}")
        out = np.empty((n, self.num_classes), dtype=np.float32)
        for start in range(0, n, batch_size):
            out[start:start + batch_size] = self._run(x[start:start + batch_size])
        return out

    def _check_input(self, x, method: str) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype == np.uint8:
            if self.input_scale is None:
                raise ValueError(
                    f"PackedModel.{method}: uint8 input needs the input normalisation, and this model "
                    "was exported without input_scale/input_offset; pass normalised float input")
        elif x.dtype.kind != "f":
            raise TypeError(f"PackedModel.{method}: x must be uint8 images or floats, got dtype "
                            f"{x.dtype}")
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"PackedModel.{method}: expected input of shape (N, "
                             f"{', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}")
        return x

    def trace(self, x) -> list:
        """Run the ops one by one (no fusion) and return each op's output, for debugging.

        Returns ``[(op name, op kind, array)]``: binary activations unpacked to int8 +-1 in the
        torch model's layout (N, C, H, W) or (N, K) (flat bits in torch's NCHW flatten order),
        logits as float32. Compare them with the torch model's Sign outputs layer by layer.
        """
        x = self._check_input(x, "trace")
        out = []
        for i, op in enumerate(self.ops):
            x = getattr(self, "_" + op["op"])(i, op, x)
            kind, shape = self.activations[i]
            if kind == "logits":
                out.append((op["name"], op["op"], x))
                continue
            values = self._ops.unpack(x, shape[-1] if len(shape) == 3 else shape[0])
            if len(shape) == 3:
                values = values.transpose(0, 3, 1, 2)
            elif op["op"] == "flatten":
                h, w, c = self.activations[i - 1][1]
                values = values.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(len(x), -1)
            out.append((op["name"], op["op"], np.ascontiguousarray(values)))
        return out

    def _default_batch_size(self) -> int:
        op = self.ops[0]
        act = self.activations[0][1]
        if op["op"] == "first_conv":
            kh, kw = op["kernel"]
            positions = act[0] * act[1]
            per_sample = positions * (8 * kh * kw * op["in_channels"] + 8 * op["out_channels"])
        else:
            per_sample = 8 * int(np.prod(self.input_shape)) + 8 * int(np.prod(act))
        return max(1, _FIRST_LAYER_BYTES // per_sample)

    def profile(self, x, repeats: int = 5) -> list:
        """Seconds per op (median of ``repeats`` runs of the whole graph on ``x``), as predict runs
        them: ``[(op name, op kind, seconds)]``; a conv fused with its max-pool is one entry."""
        x = self._check_input(x, "profile")
        runs = []
        for _ in range(repeats):
            timings: list = []
            self._run(x, timings)
            runs.append(timings)
        return [(name, kind, float(np.median([run[j][2] for run in runs])))
                for j, (name, kind, _) in enumerate(runs[0])]

    def _run(self, x: np.ndarray, timings: Optional[list] = None) -> np.ndarray:
        ops = self.ops
        skip = False
        for i, op in enumerate(ops):
            if skip:
                skip = False
                continue
            start = time.perf_counter() if timings is not None else 0.0
            nxt = ops[i + 1] if i + 1 < len(ops) else None
            if op["op"] == "conv" and nxt is not None and self._fusable_pool(op, nxt):
                x = self._conv(i, op, x, pool=nxt)
                skip = True
            else:
                x = getattr(self, "_" + op["op"])(i, op, x)
            if timings is not None:
                kind = op["op"] + ("+maxpool" if skip else "")
                timings.append((op["name"], kind, time.perf_counter() - start))
        return x

    # -- helpers -----------------------------------------------------------------------------
    def _t(self, op, role) -> np.ndarray:
        return self.tensors[op["tensors"][role]]

    def _pack_bool(self, cond: np.ndarray) -> np.ndarray:
        # pack() sets bit = (value >= 0): True -> 0, False -> -1.
        return self._ops.pack(cond.view(np.int8) - np.int8(1))

    def _threshold(self, s: np.ndarray, thresh: np.ndarray, flip: np.ndarray) -> np.ndarray:
        """Bits of int32 sums s (..., O): s >= thresh (s <= thresh where flip), packed."""
        return self._ops.threshold_pack(np.ascontiguousarray(s), thresh, flip)

    def _threshold_by_class(self, op, s: np.ndarray) -> np.ndarray:
        """First-conv bits with one threshold vector per border class of output positions.

        All positions are thresholded with the most frequent class's thresholds (the interior),
        then the positions of every other class (borders: a few rows and columns) again with
        their own.
        """
        thresh, flip = self._t(op, "thresh"), self._t(op, "flip")
        rows, cols = self._t(op, "row_class"), self._t(op, "col_class")
        main_r, main_c = np.bincount(rows).argmax(), np.bincount(cols).argmax()
        bits = self._threshold(s, thresh[main_r, main_c], flip)
        for r in range(thresh.shape[0]):
            for c in range(thresh.shape[1]):
                if (r, c) == (main_r, main_c):
                    continue
                ys, xs = np.nonzero(rows == r)[0], np.nonzero(cols == c)[0]
                if ys.size and xs.size:
                    part = s[:, ys[:, None], xs[None, :]]
                    bits[:, ys[:, None], xs[None, :]] = self._threshold(part, thresh[r, c], flip)
        return bits

    def _cached(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _weights_pm1(self, op, k) -> np.ndarray:
        """The first layer's +-1 weights as float64 (O, k), for the float path (cached)."""
        return self._cached((op["name"], "w64"), lambda: self._ops.unpack(
            np.ascontiguousarray(self._t(op, "weight")), k).astype(np.float64))

    def _normalised(self, x: np.ndarray, channel_axis: int) -> np.ndarray:
        """float64 images: uint8 input normalised with the export's scale/offset, floats as given."""
        if x.dtype != np.uint8:
            return x.astype(np.float64)
        shape = [1] * x.ndim
        shape[channel_axis] = -1
        scale = np.asarray(self.input_scale, np.float64).reshape(shape)
        offset = np.asarray(self.input_offset, np.float64).reshape(shape)
        return x * scale + offset

    def _integer_path(self, x: np.ndarray) -> bool:
        return x.dtype == np.uint8 and _graph.integer_first_layer(self.graph)

    def _first_gemm(self, op, x_u8, w, k) -> np.ndarray:
        gemm = self._ops.bitplane_gemm if op["mode"] == "bitplane" else self._ops.int_gemm
        return gemm(np.ascontiguousarray(x_u8), np.ascontiguousarray(w), k)

    # -- ops ---------------------------------------------------------------------------------
    def _binarize_input(self, i, op, x):
        channel_axis = 1 if x.ndim == 4 else None
        if x.dtype == np.uint8:
            t = self._t(op, "u8_threshold").astype(np.int16)
            if channel_axis is not None:
                t = t.reshape(1, -1, 1, 1)
            cond = x.astype(np.int16) >= t
        else:
            cond = x >= 0
        if x.ndim == 4:
            cond = cond.transpose(0, 2, 3, 1)
        return self._pack_bool(np.ascontiguousarray(cond))

    def _first_dense(self, i, op, x):
        n, k = x.shape[0], op["in_features"]
        if self._integer_path(x):
            s = self._first_gemm(op, x.reshape(n, k), self._t(op, "weight"), k)
            if op["output"] == "bits":
                return self._threshold(s, self._t(op, "thresh"), self._t(op, "flip"))
            z = float(self.input_scale[0]) * s + self._u8_dense_constant(op)
        else:
            z = self._float_preactivation(op, self._normalised(x, 1).reshape(n, k) @
                                          self._weights_pm1(op, k).T)
        return self._first_output(op, z)

    def _float_preactivation(self, op, sums: np.ndarray) -> np.ndarray:
        """float32(sum) + float32 bias, rounded as the float32 torch layer rounds them."""
        return sums.astype(np.float32) + self._t(op, "bias")

    def _u8_dense_constant(self, op) -> np.ndarray:
        """offset . w + bias per output unit (float64), for logits from uint8 input."""
        def make():
            k = op["in_features"]
            channels = len(self.input_offset)
            w = self._weights_pm1(op, k).reshape(op["out_features"], channels, -1).sum(-1)
            return w @ np.asarray(self.input_offset, np.float64) + self._t(op, "bias")
        return self._cached((op["name"], "u8_const"), make)

    def _first_output(self, op, z: np.ndarray) -> np.ndarray:
        if op["output"] == "logits":
            return (z * self._t(op, "scale") + self._t(op, "shift")).astype(np.float32)
        v = self._t(op, "vthresh")
        return self._pack_bool(np.where(self._t(op, "flip"), z <= v, z >= v))

    def _first_conv(self, i, op, x):
        n = x.shape[0]
        c, o, groups = op["in_channels"], op["out_channels"], op["groups"]
        kh, kw = op["kernel"]
        ho, wo, _ = self.activations[i][1]
        cg, og = c // groups, o // groups
        k = kh * kw * cg
        integer = self._integer_path(x)
        if integer:
            nhwc, pad = x.transpose(0, 2, 3, 1), 0
        else:
            nhwc, pad = self._normalised(x, 1).transpose(0, 2, 3, 1), op["pad_value"]
        weight = self._t(op, "weight")
        parts = []
        for g in range(groups):
            patches = _im2col(nhwc[..., g * cg:(g + 1) * cg], (kh, kw), op["stride"],
                              op["padding"], op["dilation"], pad)
            w = weight[g * og:(g + 1) * og]
            if integer:
                parts.append(self._first_gemm(op, patches, w, k))
            else:
                parts.append(patches @ self._weights_pm1(op, k)[g * og:(g + 1) * og].T)
        out = np.concatenate(parts, axis=1) if groups > 1 else parts[0]
        out = out.reshape(n, ho, wo, o)
        if integer:
            return self._threshold_by_class(op, out)
        return self._first_output(op, self._float_preactivation(op, out))

    def _dense(self, i, op, x):
        return self._ops.bgemm_threshold(x, self._t(op, "weight"), op["in_features"],
                                         self._t(op, "thresh"), self._t(op, "flip"))

    def _dense_logits(self, i, op, x):
        s = self._ops.bgemm(x, self._t(op, "weight"), op["in_features"])
        return (s * self._t(op, "scale") + self._t(op, "shift")).astype(np.float32)

    def _fusable_pool(self, conv, pool) -> bool:
        return (pool["op"] == "maxpool" and conv["groups"] == 1
                and pool["tensors"]["flip"] == conv["tensors"]["flip"]
                and hasattr(self._ops, "bconv2d_threshold_maxpool"))

    def _conv(self, i, op, x, pool=None):
        geometry = dict(stride=tuple(op["stride"]), padding=tuple(op["padding"]),
                        dilation=tuple(op["dilation"]), pad_mode=op["pad_mode"])
        weight, thresh, flip = self._t(op, "weight"), self._t(op, "thresh"), self._t(op, "flip")
        c, groups = op["in_channels"], op["groups"]
        if groups == 1:
            if pool is not None:
                return self._ops.bconv2d_threshold_maxpool(
                    x, weight, c, thresh, flip, tuple(pool["kernel"]), tuple(pool["stride"]),
                    **geometry)
            return self._ops.bconv2d_threshold(x, weight, c, thresh, flip, **geometry)
        # Grouped conv: one integer conv per channel group, then threshold (int32 materialised).
        cg, og = c // groups, op["out_channels"] // groups
        values = self._ops.unpack(x, c) if cg % 64 else None
        parts = []
        for g in range(groups):
            if values is None:
                xg = np.ascontiguousarray(x[..., g * cg // 64:(g + 1) * cg // 64])
            else:
                xg = self._ops.pack(values[..., g * cg:(g + 1) * cg])
            wg = np.ascontiguousarray(weight[g * og:(g + 1) * og])
            parts.append(self._ops.bconv2d(xg, wg, cg, **geometry))
        return self._threshold(np.concatenate(parts, axis=-1), thresh, flip)

    def _maxpool(self, i, op, x):
        return self._ops.bmaxpool2d(x, tuple(op["kernel"]), tuple(op["stride"]),
                                    self._t(op, "flip"), self.activations[i][1][2])

    def _flatten(self, i, op, x):
        n, h, w, words = x.shape
        c = self.activations[i - 1][1][2]
        if c % 64 == 0:  # no pad bits: the NHWC words are already the flat bit vector
            return x.reshape(n, h * w * words)
        return self._ops.pack(self._ops.unpack(x, c).reshape(n, h * w * c))


def _im2col(x: np.ndarray, kernel, stride, padding, dilation, pad_value) -> np.ndarray:
    """NHWC (N, H, W, C) -> patches (N*Ho*Wo, KH*KW*C), taps in (kh, kw, c) order."""
    n, h, w, c = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    if ph or pw:
        padded = np.full((n, h + 2 * ph, w + 2 * pw, c), pad_value, dtype=x.dtype)
        padded[:, ph:ph + h, pw:pw + w] = x
    else:
        padded = x
    ho = _graph.conv_output_size(h, kh, sh, ph, dh)
    wo = _graph.conv_output_size(w, kw, sw, pw, dw)
    taps = [padded[:, i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]
    return np.stack(taps, axis=3).reshape(n * ho * wo, kh * kw * c)


def load(path, *, reference: bool = False) -> PackedModel:
    """Read, validate and return the packed model stored at ``path`` (see :class:`PackedModel`).

    Raises :class:`~binarynet.errors.ModelFileError` for a missing, truncated, altered,
    wrong-version or inconsistent file.
    """
    graph, tensors, _ = _format.read_file(path)
    try:
        return PackedModel(graph, tensors, reference=reference)
    except ModelFileError as err:
        raise ModelFileError(f"{os.fspath(path)}: {err}") from None
