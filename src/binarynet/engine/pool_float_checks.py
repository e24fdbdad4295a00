"""Argument checks of the compiled float pools (kernels.maxpool2d_float, avgpool2d_float,
global_avgpool_float; csrc/pool_float.c): the rules of PyTorch's MaxPool2d / AvgPool2d that the
graph validation applies to maxpool_real / avgpool ops, with one-line errors naming the op."""
from __future__ import annotations

import numpy as np

from .checker import pool_output_size, pool_window_error
from .graph import as_pair
from .reference import _check_array  # the kernels' one array rule

__all__ = ["check_pool2d_float"]


def _check_flag(op: str, name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a bool, got {type(value).__name__}")
    return bool(value)


def check_pool2d_float(op: str, x, kernel, stride, padding, ceil_mode, count_include_pad=False):
    """Checked (x, kernel, stride, padding, ceil_mode, count_include_pad, (Ho, Wo)) of a pool
    over float32 NHWC ``x``."""
    x = _check_array(op, "x", x, np.float32, 4)
    kernel = as_pair(op, "kernel", kernel, 1)
    stride = as_pair(op, "stride", stride, 1)
    padding = as_pair(op, "padding", padding, 0)
    ceil_mode = _check_flag(op, "ceil_mode", ceil_mode)
    count_include_pad = _check_flag(op, "count_include_pad", count_include_pad)
    _, h, w, _ = x.shape
    problem = pool_window_error(op, h, w, kernel, padding)
    if problem:
        raise ValueError(problem)
    out = tuple(pool_output_size(n, k, s, p, ceil_mode)
                for n, k, s, p in zip((h, w), kernel, stride, padding))
    return x, kernel, stride, padding, ceil_mode, count_include_pad, out
