"""Prepared kernel calls (:func:`binarynet.engine.kernels.prepare`): a kernel with its constant
operands (a model's weights, thresholds, transform tensors) bound, checked and laid out for the
C core on the first call per input shape, so that later calls check only what differs between
calls: the input's (and a residual's) dtype, contiguity, alignment and pad bits. At batch 1 a
kernel runs for tens of microseconds, so re-checking every operand on every call (several
microseconds) was a large share of it (issue 12).

Each op of :mod:`binarynet.engine.kernels` that can be prepared is written as a *layout*: its
public function's checks and argument building, returning ``(x, Checked)``; the public function
is its layout run once (:func:`run_once`), so both paths share one implementation of each check.
Also here, as the C core needs them: :func:`aligned` and :func:`pad_bits_clear`.
"""
from __future__ import annotations

import numpy as np

from binarynet.engine import _core
from binarynet.engine import reference as _ref

__all__ = ["Prepared", "Checked", "aligned", "pad_bits_clear", "checked", "run_once"]


def aligned(arr: np.ndarray) -> np.ndarray:
    """The C core reads whole items and refuses unaligned buffers (ValueError), which numpy
    makes e.g. from np.frombuffer at an odd offset: such an operand is copied (rare)."""
    return arr if arr.flags.aligned else arr.copy()


def pad_bits_clear(arr: np.ndarray, k: int) -> bool:
    """Whether no row of the packed uint64 ``arr`` has a bit set beyond ``k`` (a C scan)."""
    return _core.pad_bits_clear(aligned(arr), arr.size // arr.shape[-1], k)


class Prepared:
    """A kernel with its constant operands bound (:func:`binarynet.engine.kernels.prepare`):
    ``prepared(x)``, or ``prepared(x, residual)`` for a fused transform with an add."""

    _MAX_SHAPES = 8  # input shapes kept (a runner sees one or two batch sizes)

    def __init__(self, name, layout, operands, options):
        self.name = name
        self._layout, self._operands, self._options = layout, operands, options
        self._shapes: dict = {}  # input shape -> Checked

    def __call__(self, x, residual=None):
        checked = self._shapes.get(x.shape) if type(x) is np.ndarray else None
        if checked is None or not checked.takes(x, residual):
            options = self._options if residual is None else dict(self._options,
                                                                  residual=residual)
            x, checked = self._layout(x, *self._operands, **options)  # raises what name raises
            if len(self._shapes) >= self._MAX_SHAPES:
                self._shapes.clear()
            self._shapes[x.shape] = checked
        return checked.run(x, residual)

    def __repr__(self) -> str:
        return f"kernels.prepare({self.name!r}, ...)"


class Checked:
    """What a call whose operands passed every check keeps for later inputs of the same shape:
    the input's dtype, the bit length whose pad bits must stay clear (0: none to scan), the
    residual's shape (None: none) and ``run(x, residual)`` (outputs allocated, C core called)."""

    __slots__ = ("dtype", "pad_k", "residual_shape", "run")

    def __init__(self, dtype, pad_k, residual_shape, run):
        self.dtype, self.pad_k, self.residual_shape, self.run = dtype, pad_k, residual_shape, run

    def takes(self, x, residual) -> bool:
        """Whether x (of the shape checked) and residual pass the checks the first call made."""
        if x.dtype != self.dtype or not (x.flags.c_contiguous and x.flags.aligned):
            return False
        if self.pad_k and not pad_bits_clear(x, self.pad_k):
            return False
        if self.residual_shape is None:
            return residual is None
        return (type(residual) is np.ndarray and residual.dtype == np.float32
                and residual.shape == self.residual_shape and residual.flags.c_contiguous
                and residual.flags.aligned)


def checked(x, k, run, residual_shape=None):
    """(x aligned, the Checked of a call on it); k: x's bits per row where packed, else 0."""
    return aligned(x), Checked(x.dtype, k % _ref.WORD_BITS and k, residual_shape, run)


def run_once(layout, residual=None):
    """A public function's result: its layout run on the x it checked."""
    x, call = layout
    return call.run(x, residual)
