"""PackedModel: a 1-bit model in memory: its graph and tensors, where it runs, and its file.

Build one with :func:`binarynet.export.export` (from a trained model) or :func:`load` (from a file).
Running it is the job of :class:`binarynet.engine.runner.Runner` on a backend of
:mod:`binarynet.engine.backends`: "cpu" (numpy and the compiled kernels, the default) or one that
registers itself, such as "cuda" (:mod:`binarynet.gpu`), chosen with :meth:`PackedModel.to`.
"""
from __future__ import annotations

import copy
import os
from typing import Optional

import numpy as np

from . import backends as _backends
from . import format as _format
from . import graph as _graph
from . import memory as _memory
from ..errors import ModelFileError
from .runner import Runner

__all__ = ["PackedModel", "load"]


class PackedModel:
    """A packed binary network: graph (JSON) + named numpy tensors (see :mod:`binarynet.engine.graph`).

    Build one with :func:`binarynet.export.export` (from a trained model) or :func:`load` (from a file);
    it runs on the CPU. :meth:`to` ``("cuda")`` gives the same model on an NVIDIA GPU.
    ``reference=True`` runs every op with the plain-numpy reference instead of the compiled
    kernels (slow; for tests). ``max_bytes`` bounds the working memory one sample may need in
    any op (default 1 GiB or $BINARYNET_MAX_BYTES; :mod:`binarynet.engine.memory`).
    """

    def __init__(self, graph: dict, tensors: dict, *, reference: bool = False,
                 max_bytes: Optional[int] = None):
        self.graph = graph
        self.tensors = {name: np.asarray(t) for name, t in tensors.items()}
        self.activations = _graph.validate(graph, self.tensors, max_bytes)
        self.reference = bool(reference)
        self._sample_bytes = None  # working memory of one sample, the most any op needs
        self._runner = Runner(graph, self.tensors, self.activations,
                              _backends.CpuBackend(self.reference))

    # -- device ------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        """Where the model runs: "cpu" (numpy, compiled kernels) or e.g. "cuda:<index>"."""
        return str(self._runner.xp.device)

    def to(self, device) -> "PackedModel":
        """This model on ``device``: "cpu", "cuda" (the current GPU) or "cuda:<index>" (a str, or
        any object whose str() is one, such as a PyTorch device). Returns ``self`` when it is
        already there, else a new PackedModel sharing the graph and host tensors.

        Devices other than "cpu" are backends that register themselves
        (:func:`binarynet.engine.backends.register_backend`); "cuda" is :mod:`binarynet.gpu`,
        imported here and not before (the CPU engine imports no GPU framework): the tensors
        are uploaded once and :meth:`predict` runs the same graph with its Triton / 1-bit
        tensor-core ops, with the same results as on the CPU (the real-valued stream of a
        format-3 graph: its real convolutions, dense layers and global means may sum in
        another order, within float32 rounding).
        Raises :class:`~binarynet.errors.BinarynetError` when the backend's packages are
        missing, no such device is available or the backend cannot run one of the graph's ops,
        ValueError for an unknown device.
        """
        name = str(device)
        if name == self.device:
            return self
        if name != "cpu" and self.reference:
            raise ValueError("PackedModel.to: a reference=True model runs the numpy reference "
                             "and stays on 'cpu'")
        return self._on_backend(_backends.create(name))

    def _on_backend(self, backend) -> "PackedModel":
        """A copy of this model running on ``backend`` (self when it is already on that device).
        Backends use it to offer devices ``to`` does not name (the GPU tests run the CUDA
        backend on CPU tensors in Triton's interpreter)."""
        current = self._runner.xp
        if type(backend) is type(current) and str(backend.device) == self.device:
            return self
        moved = copy.copy(self)
        moved._runner = Runner(self.graph, self.tensors, self.activations, backend)
        return moved

    # -- description -------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple:
        """Shape of one input sample, as the training model takes it: (C, H, W) or (K,)."""
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
        rounds to float32 like the training layer) or uint8 (raw pixels; needs the normalisation
        given at export, which is folded into the first layer's integer thresholds). Large
        batches are processed ``batch_size`` samples at a time (default: bounded by the
        working memory per sample, :mod:`binarynet.engine.memory`).

        On "cpu", ``x`` is array-like and the logits a numpy array. On another backend (:meth:`to`),
        ``x`` is a numpy array (logits come back as numpy) or the backend's own tensor type on
        any device (e.g. a PyTorch tensor for "cuda": logits come back as such a tensor on the
        model's device, without a copy to the host).
        """
        x, as_native = self._check_input(x, "predict")
        n = x.shape[0]
        if batch_size is None:
            batch_size = self._default_batch_size()
        elif isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"PackedModel.predict: batch_size must be a positive int, got "
                             f"{batch_size!r}")
        out = self._runner.xp.empty((n, self.num_classes), np.float32)
        for start in range(0, n, batch_size):
            out[start:start + batch_size] = self._runner.run(x[start:start + batch_size])
        return out if as_native else self._runner.xp.to_numpy(out)

    def _check_input(self, x, method: str):
        """(x as the backend takes it, whether x was the backend's own tensor type)."""
        xp = self._runner.xp
        if xp.is_native(x):
            if not (xp.is_uint8(x) or xp.is_float(x)):
                raise TypeError(f"PackedModel.{method}: x must be uint8 images or floats, "
                                f"got dtype {x.dtype}")
            self._check_values(x, method, xp.is_uint8(x))
            return xp.move(x), True
        x = np.asarray(x)
        if x.dtype != np.uint8 and x.dtype.kind != "f":
            raise TypeError(f"PackedModel.{method}: x must be uint8 images or floats, got dtype "
                            f"{x.dtype}")
        self._check_values(x, method, x.dtype == np.uint8)
        return xp.upload(x), False

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

        Returns ``[(op name, op kind, array)]``, one per op in graph order: binary activations
        unpacked to int8 +-1 and float values (the real-valued stream of a format-3 graph) as
        float32, both in the training model's layout (N, C, H, W) or (N, K) (flattened in the
        NCHW order), logits as float32. Compare them with the training model's Sign outputs and
        intermediate tensors layer by layer. Numpy arrays on every device.
        """
        x, _ = self._check_input(x, "trace")
        return self._runner.trace(x)

    def _default_batch_size(self) -> int:
        """Samples per internal batch: the backend's batch_bytes over the most one sample needs
        in any op (its temporaries and the values alive then)."""
        if self._sample_bytes is None:  # a walk over the graph: once per model, not per call
            image = ("image", self.input_shape)
            self._sample_bytes = max(_memory.op_needs(self.ops, self._runner.reads,
                                                      self.activations, image))
        return max(1, self._runner.xp.batch_bytes // self._sample_bytes)

    def profile(self, x, repeats: int = 5) -> list:
        """Seconds per op (median of ``repeats`` runs of the whole graph on ``x``), as predict runs
        them: ``[(op name, op kind, seconds)]``; a conv fused with its max-pool is one entry.
        On a GPU each op is timed up to its end (the backend synchronises after each)."""
        x, _ = self._check_input(x, "profile")
        runs = []
        for _ in range(repeats):
            timings: list = []
            self._runner.run(x, timings)
            runs.append(timings)
        return [(name, kind, float(np.median([run[j][2] for run in runs])))
                for j, (name, kind, _) in enumerate(runs[0])]


def load(path, *, reference: bool = False, max_bytes: Optional[int] = None) -> PackedModel:
    """Read, validate and return the packed model stored at ``path`` (see :class:`PackedModel`).

    Raises :class:`~binarynet.errors.ModelFileError` for a missing, truncated, altered,
    wrong-version or inconsistent file, or one whose ops would need more than ``max_bytes`` of
    working memory per sample (default 1 GiB, or the environment variable
    ``BINARYNET_MAX_BYTES``: raise it for a genuinely larger model). The model runs on the CPU;
    ``load(path).to("cuda")`` runs it on a GPU (:meth:`PackedModel.to`).
    """
    graph, tensors, _ = _format.read_file(path)
    try:
        return PackedModel(graph, tensors, reference=reference, max_bytes=max_bytes)
    except ModelFileError as err:
        raise ModelFileError(f"{os.fspath(path)}: {err}") from None
