"""The graph runner's float-input first layers on their compiled kernels, mixed into
:class:`binarynet.engine.runner.Runner` (which keeps the generic paths: float64 sums of the
input, or of its patches, for grouped convs and for kernels without these): a first conv on
``conv2d_float``'s tiles, a first dense layer with bits out on ``first_dense_float_sign``."""
from __future__ import annotations

import numpy as np

__all__ = ["FloatFirstLayer"]


class FloatFirstLayer:
    """Needs of the host class: ``kernels``, ``xp``, ``_cached(key, make)``, ``_t(op, role)``,
    ``_kernel_call(key, make)`` and ``_normalised(x, channel_axis)``."""

    def _first_conv_float(self, op, x):
        """A one-group first conv of float input: float64 sums from 0 in conv2d_float's fixed
        order (the generic path's sums, except where their float32 rounding depends on the
        order), the bias, threshold and packing done on the sums in registers; the NCHW image
        read as it is (uint8 with per-channel scales: normalised to float64 first)."""
        if x.dtype not in (np.float32, np.float64):
            x = self._normalised(x, 1)
        weight, panels = self._cached((op["name"], "conv2d_float_sign"),
                                      lambda: self._first_conv_panels(op))
        return self.kernels.conv2d_float_sign(
            self.xp.contiguous(x), weight, self._t(op, "bias"), self._t(op, "vthresh"),
            self._t(op, "flip"), tuple(op["stride"]), tuple(op["padding"]),
            tuple(op["dilation"]), pad_value=op["pad_value"], nchw=True, panels=panels)

    def _first_conv_panels(self, op):
        """The first conv's +-1 weights as float32 (O, KH, KW, C) and as conv2d_float_sign panels."""
        (kh, kw), c = op["kernel"], op["in_channels"]
        pm1 = self.kernels.unpack(self.xp.contiguous(self._t(op, "weight")), kh * kw * c)
        weight = np.ascontiguousarray(pm1.reshape(-1, kh, kw, c), dtype=np.float32)
        return weight, self.kernels.conv2d_float_sign_panels(weight)

    def _first_dense_float_bits(self, op, x, k):
        """Bits of a first dense layer of float32 input, equal to those from its float64 sums
        (``kernels.first_dense_float_sign``: float32 sums with an error bound, float64 for the
        near-ties) and made in the kernel, without the float sums, the bias and comparisons in
        numpy (results/cpu_benchmarks.log: the MNIST MLP's float32 input went from 1.71x to
        1.04-1.06x its uint8 time at batch 256 on 2 Zen 4 cores)."""
        call = self._kernel_call((op["name"], "first_dense_float_sign"), lambda: (
            "first_dense_float_sign", (self._t(op, "weight"), k, self._t(op, "bias"),
                                       self._t(op, "vthresh"), self._t(op, "flip")), {}))
        return call(self.xp.contiguous(x))
