"""PackedModel: a 1-bit model in memory, and the graph runner that predicts with it.

Hidden layers go packed bits -> fused XNOR-popcount + threshold kernel -> packed bits; no int32
or float activations are materialised between them. Only the first layer (real-valued input)
and the output layer (logits) compute integer or float values. NCHW images are transposed to
NHWC once, at the first conv.

One graph runner, two backends: on "cpu" (the default) numpy arrays and the compiled kernels of
:mod:`binarynet.engine.kernels`, never importing torch; after :meth:`PackedModel.to` ``("cuda")``
torch CUDA tensors and the same ops of :mod:`binarynet.gpu.backend` (torch and triton are imported
then, and only then). The few array operations the runner does itself go through ``_NumpyArrays``
/ ``_TorchArrays``, so both backends run the same op code.
"""
from __future__ import annotations

import copy
import os
import time
from typing import Optional

import numpy as np

from . import format as _format
from . import graph as _graph
from ..errors import BinarynetError, ModelFileError

__all__ = ["PackedModel", "load"]

# Bound on the first layer's temporaries (input patches and integer sums) per internal batch;
# a GPU has far more memory, and fewer, larger batches keep it busy.
_FIRST_LAYER_BYTES = {"cpu": 64 * 1024 * 1024, "cuda": 1024 * 1024 * 1024}


def _kernel_ops(reference: bool):
    if reference:
        from . import reference as ops
    else:
        from . import kernels as ops
    return ops


class _NumpyArrays:
    """The runner's own array operations (besides the kernels) on numpy arrays, device "cpu"."""

    device = "cpu"

    def upload(self, a: np.ndarray) -> np.ndarray:
        return a

    def to_numpy(self, a) -> np.ndarray:
        return a

    def is_uint8(self, a) -> bool:
        return a.dtype == np.uint8

    def cast(self, a, dtype) -> np.ndarray:
        return a.astype(dtype)

    def contiguous(self, a) -> np.ndarray:
        return np.ascontiguousarray(a)

    def permute(self, a, axes) -> np.ndarray:
        return a.transpose(axes)

    def where(self, cond, a, b) -> np.ndarray:
        return np.where(cond, a, b)

    def concat(self, parts, axis: int) -> np.ndarray:
        return np.concatenate(parts, axis=axis)

    def stack(self, parts, axis: int) -> np.ndarray:
        return np.stack(parts, axis=axis)

    def full(self, shape, value, like) -> np.ndarray:
        return np.full(shape, value, dtype=like.dtype)

    def empty(self, shape, dtype) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    def words(self, packed) -> np.ndarray:
        """The int64 view of packed uint64 words (for indexed stores)."""
        return packed.view(np.int64)


class _TorchArrays:
    """The same operations on torch tensors of one device (the CUDA backend).

    Model tensors are uploaded once; uint64 travels as its int64 bit pattern (torch's uint64
    has no conversions from numpy of its own)."""

    def __init__(self, torch, device):
        self.torch = torch
        self.device = device
        self._dtypes = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32,
                        np.dtype(np.int16): torch.int16, np.dtype(np.int8): torch.int8,
                        np.dtype(np.int32): torch.int32}

    def upload(self, a: np.ndarray):
        a = np.array(a, copy=True, order="C")  # writable and contiguous, as from_numpy wants
        if a.dtype == np.uint64:
            return self.torch.from_numpy(a.view(np.int64)).to(self.device).view(self.torch.uint64)
        return self.torch.from_numpy(a).to(self.device)

    def to_numpy(self, t) -> np.ndarray:
        if t.dtype == self.torch.uint64:
            return t.view(self.torch.int64).cpu().numpy().view(np.uint64)
        return t.cpu().numpy()

    def is_uint8(self, t) -> bool:
        return t.dtype == self.torch.uint8

    def cast(self, t, dtype):
        return t.to(self._dtypes[np.dtype(dtype)])

    def contiguous(self, t):
        return t.contiguous()

    def permute(self, t, axes):
        return t.permute(*axes)

    def where(self, cond, a, b):
        return self.torch.where(cond, a, b)

    def concat(self, parts, axis: int):
        return self.torch.cat(parts, dim=axis)

    def stack(self, parts, axis: int):
        return self.torch.stack(parts, dim=axis)

    def full(self, shape, value, like):
        return self.torch.full(shape, value, dtype=like.dtype, device=like.device)

    def empty(self, shape, dtype):
        return self.torch.empty(shape, dtype=self._dtypes[np.dtype(dtype)], device=self.device)

    def words(self, packed):
        # torch's uint64 has few kernels (no indexed stores): work on the int64 bit pattern
        return packed.view(self.torch.int64)


def _cuda_backend():
    """(torch, binarynet.gpu.backend), imported on first use of the CUDA path; a clear error
    when torch or triton is missing."""
    try:
        import torch

        from ..gpu import backend
    except ImportError as err:
        raise BinarynetError(f"PackedModel.to('cuda') needs torch and triton ({err}); install "
                             "them (pip install torch triton) or use device 'cpu'") from None
    return torch, backend


class PackedModel:
    """A packed binary network: graph (JSON) + named numpy tensors (see :mod:`binarynet.engine.graph`).

    Build one with :func:`binarynet.export` (from a torch model) or :func:`load` (from a file);
    it runs on the CPU. :meth:`to` ``("cuda")`` gives the same model on an NVIDIA GPU.
    ``reference=True`` runs every op with the plain-numpy reference instead of the compiled
    kernels (slow; for tests).
    """

    def __init__(self, graph: dict, tensors: dict, *, reference: bool = False):
        self.graph = graph
        self.tensors = {name: np.asarray(t) for name, t in tensors.items()}
        self.activations = _graph.validate(graph, self.tensors)
        self.reference = bool(reference)
        self._ops = _kernel_ops(self.reference)
        self._xp = _NumpyArrays()
        self._arrays = self.tensors  # the tensors as the backend takes them
        self._cache: dict = {}

    # -- device ------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        """Where the model runs: "cpu" (numpy, compiled kernels) or "cuda:<index>"."""
        return str(self._xp.device)

    def to(self, device) -> "PackedModel":
        """This model on ``device``: "cpu", "cuda" (the current GPU) or "cuda:<index>" (a str or a
        torch.device). Returns ``self`` when it is already there, else a new PackedModel sharing
        the graph and host tensors.

        On a GPU the packed tensors are uploaded once, as torch tensors, and :meth:`predict` runs
        the same graph with the ops of :mod:`binarynet.gpu.backend` (Triton, and the 1-bit tensor
        cores for dense layers where the GPU has them), with the same results as on the CPU.
        torch and triton are imported here, not before: the CPU engine stays torch-free.
        Raises :class:`~binarynet.errors.BinarynetError` when torch/triton are missing or no
        CUDA GPU is available, ValueError for an unknown device.
        """
        name = str(device)
        if name == "cpu":
            if self.device == "cpu":
                return self
            moved = copy.copy(self)
            moved._ops, moved._xp, moved._arrays = _kernel_ops(False), _NumpyArrays(), self.tensors
            moved._cache = {}
            return moved
        if name != "cuda" and not name.startswith("cuda:"):
            raise ValueError(f"PackedModel.to: device must be 'cpu', 'cuda' or 'cuda:<index>', "
                             f"got {device!r}")
        if self.reference:
            raise ValueError("PackedModel.to: a reference=True model runs the numpy reference "
                             "and stays on 'cpu'")
        torch, _ = _cuda_backend()
        if not torch.cuda.is_available():
            raise BinarynetError(f"PackedModel.to({name!r}): no CUDA GPU is available "
                                 "(torch.cuda.is_available() is False); use device 'cpu'")
        try:
            target = torch.device(name)
        except RuntimeError:
            raise ValueError(f"PackedModel.to: invalid device {device!r}") from None
        index = torch.cuda.current_device() if target.index is None else target.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"PackedModel.to: {name!r}, but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
        return self._on_torch_device(torch.device("cuda", index))

    def _on_torch_device(self, device) -> "PackedModel":
        """A copy running on torch tensors of ``device`` with binarynet.gpu.backend. Besides CUDA
        devices, the tests use the CPU under TRITON_INTERPRET=1 (Triton's interpreter)."""
        torch, backend = _cuda_backend()
        if isinstance(self._xp, _TorchArrays) and self._xp.device == device:
            return self
        moved = copy.copy(self)
        moved._ops = backend
        moved._xp = _TorchArrays(torch, device)
        moved._arrays = {name: moved._xp.upload(t) for name, t in self.tensors.items()}
        moved._cache = {}
        return moved

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
    def predict(self, x, batch_size: Optional[int] = None):
        """Logits, float32 (N, num_classes), of input images ``x`` shaped (N, *input_shape).

        ``x`` is float (already normalised as in training; the first layer sums in float64 and
        rounds to float32 like the torch layer) or uint8 (raw pixels; needs the normalisation
        given at export, which is folded into the first layer's integer thresholds). Large
        batches are processed ``batch_size`` samples at a time (default: bounded first-layer
        temporaries).

        On "cpu", ``x`` is array-like and the logits a numpy array. On a GPU (:meth:`to`), ``x``
        is a numpy array (logits come back as numpy) or a torch tensor on any device (logits
        come back as a torch tensor on the model's device, without a copy to the host).
        """
        x, as_torch = self._check_input(x, "predict")
        n = x.shape[0]
        if batch_size is None:
            batch_size = self._default_batch_size()
        elif isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"PackedModel.predict: batch_size must be a positive int, got "
                             f"{batch_size!r}")
        out = self._xp.empty((n, self.num_classes), np.float32)
        for start in range(0, n, batch_size):
            out[start:start + batch_size] = self._run(x[start:start + batch_size])
        return out if as_torch else self._xp.to_numpy(out)

    def _check_input(self, x, method: str):
        """(x as the backend takes it, whether x was a torch tensor); checks dtype and shape."""
        as_torch = False
        if isinstance(self._xp, _TorchArrays):
            torch = self._xp.torch
            as_torch = isinstance(x, torch.Tensor)
            if as_torch:
                if x.dtype != torch.uint8 and not x.is_floating_point():
                    raise TypeError(f"PackedModel.{method}: x must be uint8 images or floats, "
                                    f"got dtype {x.dtype}")
                self._check_values(x, method, x.dtype == torch.uint8)
                return x.to(self._xp.device), True
        x = np.asarray(x)
        if x.dtype != np.uint8 and x.dtype.kind != "f":
            raise TypeError(f"PackedModel.{method}: x must be uint8 images or floats, got dtype "
                            f"{x.dtype}")
        self._check_values(x, method, x.dtype == np.uint8)
        return self._xp.upload(x), as_torch

    def _check_values(self, x, method: str, is_uint8: bool) -> None:
        if is_uint8:
            if self.input_scale is None:
                raise ValueError(
                    f"PackedModel.{method}: uint8 input needs the input normalisation, and this model "
                    "was exported without input_scale/input_offset; pass normalised float input")
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"PackedModel.{method}: expected input of shape (N, "
                             f"{', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}")

    def trace(self, x) -> list:
        """Run the ops one by one (no fusion) and return each op's output, for debugging.

        Returns ``[(op name, op kind, array)]``: binary activations unpacked to int8 +-1 in the
        torch model's layout (N, C, H, W) or (N, K) (flat bits in torch's NCHW flatten order),
        logits as float32. Compare them with the torch model's Sign outputs layer by layer.
        Numpy arrays on every device.
        """
        x, _ = self._check_input(x, "trace")
        out = []
        for i, op in enumerate(self.ops):
            x = getattr(self, "_" + op["op"])(i, op, x)
            kind, shape = self.activations[i]
            if kind == "logits":
                out.append((op["name"], op["op"], self._xp.to_numpy(x)))
                continue
            values = self._xp.to_numpy(
                self._ops.unpack(x, shape[-1] if len(shape) == 3 else shape[0]))
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
        return max(1, _FIRST_LAYER_BYTES[self.device.split(":")[0]] // per_sample)

    def profile(self, x, repeats: int = 5) -> list:
        """Seconds per op (median of ``repeats`` runs of the whole graph on ``x``), as predict runs
        them: ``[(op name, op kind, seconds)]``; a conv fused with its max-pool is one entry.
        On a GPU each op is timed up to its end (a synchronisation after each)."""
        x, _ = self._check_input(x, "profile")
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
                if isinstance(self._xp, _TorchArrays) and self._xp.device.type == "cuda":
                    self._xp.torch.cuda.synchronize(self._xp.device)  # kernels run async
                kind = op["op"] + ("+maxpool" if skip else "")
                timings.append((op["name"], kind, time.perf_counter() - start))
        return x

    # -- helpers -----------------------------------------------------------------------------
    def _t(self, op, role):
        """An op's tensor, as the backend takes it (numpy, or torch on the model's device)."""
        return self._arrays[op["tensors"][role]]

    def _pack_bool(self, cond):
        # pack() sets bit = (value >= 0): True -> 0, False -> -1.
        return self._ops.pack(self._xp.cast(cond, np.int8) - 1)

    def _threshold(self, s, thresh, flip):
        """Bits of int32 sums s (..., O): s >= thresh (s <= thresh where flip), packed."""
        return self._ops.threshold_pack(self._xp.contiguous(s), thresh, flip)

    def _threshold_by_class(self, op, s: np.ndarray) -> np.ndarray:
        """First-conv bits with one threshold vector per border class of output positions.

        All positions are thresholded with the most frequent class's thresholds (the interior),
        then the positions of every other class (borders: a few rows and columns) again with
        their own.
        """
        thresh, flip = self._t(op, "thresh"), self._t(op, "flip")
        # the classes are host metadata: the positions to re-threshold are chosen on the host
        rows = self.tensors[op["tensors"]["row_class"]]
        cols = self.tensors[op["tensors"]["col_class"]]
        main_r, main_c = int(np.bincount(rows).argmax()), int(np.bincount(cols).argmax())
        bits = self._threshold(s, thresh[main_r, main_c], flip)
        for r in range(thresh.shape[0]):
            for c in range(thresh.shape[1]):
                if (r, c) == (main_r, main_c):
                    continue
                ys, xs = np.nonzero(rows == r)[0], np.nonzero(cols == c)[0]
                if ys.size and xs.size:
                    ys, xs = self._xp.upload(ys), self._xp.upload(xs)
                    part = s[:, ys[:, None], xs[None, :]]
                    self._xp.words(bits)[:, ys[:, None], xs[None, :]] = self._xp.words(
                        self._threshold(part, thresh[r, c], flip))
        return bits

    def _cached(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _weights_pm1(self, op, k):
        """The first layer's +-1 weights as float64 (O, k), for the float path (cached)."""
        return self._cached((op["name"], "w64"), lambda: self._xp.cast(self._ops.unpack(
            self._xp.contiguous(self._t(op, "weight")), k), np.float64))

    def _normalised(self, x, channel_axis: int):
        """float64 images: uint8 input normalised with the export's scale/offset, floats as given."""
        if not self._xp.is_uint8(x):
            return self._xp.cast(x, np.float64)
        shape = [1] * x.ndim
        shape[channel_axis] = -1
        scale = self._xp.upload(np.asarray(self.input_scale, np.float64).reshape(shape))
        offset = self._xp.upload(np.asarray(self.input_offset, np.float64).reshape(shape))
        return x * scale + offset

    def _integer_path(self, x) -> bool:
        return self._xp.is_uint8(x) and _graph.integer_first_layer(self.graph)

    def _first_gemm(self, op, x_u8, w, k):
        gemm = self._ops.bitplane_gemm if op["mode"] == "bitplane" else self._ops.int_gemm
        return gemm(self._xp.contiguous(x_u8), self._xp.contiguous(w), k)

    # -- ops ---------------------------------------------------------------------------------
    def _binarize_input(self, i, op, x):
        channel_axis = 1 if x.ndim == 4 else None
        if self._xp.is_uint8(x):
            t = self._t(op, "u8_threshold")
            if channel_axis is not None:
                t = t.reshape(1, -1, 1, 1)
            cond = self._xp.cast(x, np.int16) >= t
        else:
            cond = x >= 0
        if x.ndim == 4:
            cond = self._xp.permute(cond, (0, 2, 3, 1))
        return self._pack_bool(self._xp.contiguous(cond))

    def _first_dense(self, i, op, x):
        n, k = x.shape[0], op["in_features"]
        if self._integer_path(x):
            s = self._first_gemm(op, x.reshape(n, k), self._t(op, "weight"), k)
            if op["output"] == "bits":
                return self._threshold(s, self._t(op, "thresh"), self._t(op, "flip"))
            z = float(self.input_scale[0]) * self._xp.cast(s, np.float64) \
                + self._u8_dense_constant(op)
        else:
            z = self._float_preactivation(op, self._normalised(x, 1).reshape(n, k) @
                                          self._weights_pm1(op, k).T)
        return self._first_output(op, z)

    def _float_preactivation(self, op, sums):
        """float32(sum) + float32 bias, rounded as the float32 torch layer rounds them."""
        return self._xp.cast(sums, np.float32) + self._t(op, "bias")

    def _u8_dense_constant(self, op):
        """offset . w + bias per output unit (float64), for logits from uint8 input."""
        def make():
            k = op["in_features"]
            channels = len(self.input_offset)
            w = self._weights_pm1(op, k).reshape(op["out_features"], channels, -1).sum(-1)
            offset = self._xp.upload(np.asarray(self.input_offset, np.float64))
            return w @ offset + self._t(op, "bias")
        return self._cached((op["name"], "u8_const"), make)

    def _first_output(self, op, z):
        if op["output"] == "logits":
            return self._xp.cast(z * self._t(op, "scale") + self._t(op, "shift"), np.float32)
        v = self._t(op, "vthresh")
        return self._pack_bool(self._xp.where(self._t(op, "flip"), z <= v, z >= v))

    def _first_conv(self, i, op, x):
        n = x.shape[0]
        c, o, groups = op["in_channels"], op["out_channels"], op["groups"]
        kh, kw = op["kernel"]
        ho, wo, _ = self.activations[i][1]
        cg, og = c // groups, o // groups
        k = kh * kw * cg
        integer = self._integer_path(x)
        if integer:
            nhwc, pad = self._xp.permute(x, (0, 2, 3, 1)), 0
        else:
            nhwc, pad = self._xp.permute(self._normalised(x, 1), (0, 2, 3, 1)), op["pad_value"]
        weight = self._t(op, "weight")
        parts = []
        for g in range(groups):
            patches = _im2col(self._xp, nhwc[..., g * cg:(g + 1) * cg], (kh, kw), op["stride"],
                              op["padding"], op["dilation"], pad)
            w = weight[g * og:(g + 1) * og]
            if integer:
                parts.append(self._first_gemm(op, patches, w, k))
            else:
                parts.append(patches @ self._weights_pm1(op, k)[g * og:(g + 1) * og].T)
        out = self._xp.concat(parts, 1) if groups > 1 else parts[0]
        out = out.reshape(n, ho, wo, o)
        if integer:
            return self._threshold_by_class(op, out)
        return self._first_output(op, self._float_preactivation(op, out))

    def _dense(self, i, op, x):
        return self._ops.bgemm_threshold(x, self._t(op, "weight"), op["in_features"],
                                         self._t(op, "thresh"), self._t(op, "flip"))

    def _dense_logits(self, i, op, x):
        s = self._ops.bgemm(x, self._t(op, "weight"), op["in_features"])
        # int32 * float64 scale: float64 on both backends (numpy and torch promote alike)
        return self._xp.cast(s * self._t(op, "scale") + self._t(op, "shift"), np.float32)

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
                xg = self._xp.contiguous(x[..., g * cg // 64:(g + 1) * cg // 64])
            else:
                xg = self._ops.pack(values[..., g * cg:(g + 1) * cg])
            wg = self._xp.contiguous(weight[g * og:(g + 1) * og])
            parts.append(self._ops.bconv2d(xg, wg, cg, **geometry))
        return self._threshold(self._xp.concat(parts, -1), thresh, flip)

    def _maxpool(self, i, op, x):
        return self._ops.bmaxpool2d(x, tuple(op["kernel"]), tuple(op["stride"]),
                                    self._t(op, "flip"), self.activations[i][1][2])

    def _flatten(self, i, op, x):
        n, h, w, words = x.shape
        c = self.activations[i - 1][1][2]
        if c % 64 == 0:  # no pad bits: the NHWC words are already the flat bit vector
            return x.reshape(n, h * w * words)
        return self._ops.pack(self._ops.unpack(x, c).reshape(n, h * w * c))


def _im2col(xp, x, kernel, stride, padding, dilation, pad_value):
    """NHWC (N, H, W, C) -> patches (N*Ho*Wo, KH*KW*C), taps in (kh, kw, c) order (xp: the
    backend's array operations)."""
    n, h, w, c = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    if ph or pw:
        padded = xp.full((n, h + 2 * ph, w + 2 * pw, c), pad_value, x)
        padded[:, ph:ph + h, pw:pw + w] = x
    else:
        padded = x
    ho = _graph.conv_output_size(h, kh, sh, ph, dh)
    wo = _graph.conv_output_size(w, kw, sw, pw, dw)
    taps = [padded[:, i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]
    return xp.stack(taps, 3).reshape(n * ho * wo, kh * kw * c)


def load(path, *, reference: bool = False) -> PackedModel:
    """Read, validate and return the packed model stored at ``path`` (see :class:`PackedModel`).

    Raises :class:`~binarynet.errors.ModelFileError` for a missing, truncated, altered,
    wrong-version or inconsistent file. The model runs on the CPU; ``load(path).to("cuda")``
    runs it on a GPU (:meth:`PackedModel.to`).
    """
    graph, tensors, _ = _format.read_file(path)
    try:
        return PackedModel(graph, tensors, reference=reference)
    except ModelFileError as err:
        raise ModelFileError(f"{os.fspath(path)}: {err}") from None
