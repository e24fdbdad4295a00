"""The values flowing through a traced export (:mod:`.dag`): what each torch tensor is in the
engine graph, and the per-channel affine maps kept pending so that batch norms fold.

A :class:`Value` is the model input (``image``), +-1 activations (``bits``) or a real-valued
tensor (``real``). A real value may carry a pending affine map y = a * x + c per channel over
an engine value (``name``) or over an op not yet written (``emit``, a binary or real conv /
dense whose only reader is a batch norm): a batch norm composes into it, a sign folds it into
its threshold, and anything else writes it out (:meth:`DagBuilder.materialize`).

Folding rounds once, to float32, from float64 (docs/design.md: the engine computes in float32);
thresholds round in the direction that keeps the real-number decision (:func:`sign_threshold`).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np


@dataclasses.dataclass
class Value:
    """One tensor of the traced model as the engine holds it (per-sample ``shape`` in torch's
    order, (C, H, W) or (K,)); ``node`` is the fx node this value is the output of, ``source``
    the one whose torch output the engine value ``name`` stands for (the exactness check
    compares the two)."""

    kind: str  # "image", "bits" or "real"
    shape: tuple
    name: Optional[str] = None
    emit: Optional[Callable] = None  # emit(a, c) -> name: writes the deferred producer
    a: Optional[np.ndarray] = None  # pending affine (float64, engine channel order)
    c: Optional[np.ndarray] = None
    perm: Optional[np.ndarray] = None  # flat values: engine position -> torch feature index
    node: Optional[str] = None
    source: Optional[str] = None
    label: str = ""  # name for the op that writes the pending affine out
    binary: bool = False  # ``emit`` writes a bconv / bdense (the engine fuses adds into them)

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def pending(self) -> bool:
        return self.emit is not None or self.a is not None

    def affine(self):
        """The pending (a, c), identity when none."""
        if self.a is None:
            return np.ones(self.channels), np.zeros(self.channels)
        return self.a, self.c

    def then(self, a, c, label: str, node: str) -> "Value":
        """This value followed by y = a * x + c per channel (a, c in torch channel order)."""
        if self.perm is not None:
            a, c = a[self.perm], c[self.perm]
        a0, c0 = self.affine()
        return dataclasses.replace(self, a=a * a0, c=a * c0 + c, label=label, node=node)

    def engine_shape(self) -> tuple:
        return (self.shape[1], self.shape[2], self.shape[0]) if len(self.shape) == 3 \
            else self.shape


def _round_up(t: np.ndarray) -> np.ndarray:
    """The smallest float32 >= t (float64), elementwise (beyond float32's range: +-inf or the
    largest finite float32, which decide the same)."""
    with np.errstate(over="ignore"):
        t32 = t.astype(np.float32)
    low = t32.astype(np.float64) < t
    t32[low] = np.nextafter(t32[low], np.float32(np.inf))
    return t32


def _round_down(t: np.ndarray) -> np.ndarray:
    """The largest float32 <= t (float64), elementwise."""
    with np.errstate(over="ignore"):
        t32 = t.astype(np.float32)
    high = t32.astype(np.float64) > t
    t32[high] = np.nextafter(t32[high], np.float32(-np.inf))
    return t32


def sign_threshold(a: np.ndarray, c: np.ndarray):
    """``(thresh float32, flip bool)`` with bit = x >= thresh (x <= thresh where flip) equal to
    a * x + c >= 0 for every float32 x, the map taken in real numbers (float64 a, c).

    a > 0: x >= -c/a, the threshold rounded up to float32 (no float32 lies between it and the
    real one, so no decision changes); a < 0: x <= -c/a, rounded down, flipped; a == 0: a
    constant channel, thresh -inf (always +1) when c >= 0, else +inf (never).
    """
    a = np.asarray(a, np.float64)
    c = np.asarray(c, np.float64)
    t = np.where(a != 0, -c / np.where(a != 0, a, 1.0), 0.0)
    thresh = np.where(a > 0, _round_up(t), _round_down(t)).astype(np.float32)
    const = a == 0
    thresh[const] = np.where(c[const] >= 0, -np.inf, np.inf).astype(np.float32)
    return thresh, a < 0


def flat_perm(c: int, h: int, w: int) -> Optional[np.ndarray]:
    """Torch feature index of each NHWC-flattened engine position (None when the orders agree,
    a 1x1 map)."""
    if h * w == 1:
        return None
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
