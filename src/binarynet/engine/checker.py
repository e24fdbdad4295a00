"""What graph validation is built from: the bounds on every field (:data:`LIMITS`), window
geometry, and :class:`Checker`, which reads an op's attributes and tensors and raises a
:class:`~binarynet.errors.ModelFileError` naming the op index, its name and the field.

The op checks live in :mod:`binarynet.engine.graph` (the format-2 ops and the DAG) and
:mod:`binarynet.engine.float_checks` (the real-valued stream of format 3).
"""
from __future__ import annotations

import numpy as np

from ..errors import ModelFileError
from .format import _short

__all__ = ["LIMITS", "PAD_MODES", "Checker", "words", "conv_output_size", "pool_output_size"]

# Upper bounds on graph fields, far above any real BNN (the paper's largest layer has 1024
# channels, 3x3 kernels, 32x32 images) yet low enough that no field alone can make a load or a
# predict allocate or loop without limit.
LIMITS = {
    "kernel": 64,        # conv/pool window side
    "stride": 64,
    "dilation": 64,
    "padding": 64,
    "channels": 1 << 16,  # in/out channels, groups
    "size": 1 << 14,      # image height/width
    "features": 1 << 26,  # dense in/out features, flat input size
    "classes": 1 << 20,
    "inputs": 1024,       # values one op reads (concat)
}

PAD_MODES = ("zero", "one", "minus_one")  # what a binary conv's padding reads as: 0, +1, -1

# Float tensor roles that may hold +-inf (a threshold a channel never or always passes)
_INFINITE_OK = ("vthresh", "thresh")


def words(bits: int) -> int:
    """uint64 words holding ``bits`` packed bits: ceil(bits / 64)."""
    return -(-bits // 64)


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a convolution/pooling window along one axis, as PyTorch's Conv2d."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def pool_output_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """Output length of PyTorch's AvgPool2d / MaxPool2d (dilation 1) along one axis: with
    ceil_mode the last window may hang over the end, but must start inside the input or its
    left padding."""
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def pool_window_error(name: str, h: int, w: int, kernel, padding):
    """Why a PyTorch-style pool window does not fit an h x w input (a one-line message naming
    ``name``), or None: PyTorch refuses padding over half the kernel, and a kernel larger than
    the padded input."""
    if any(2 * p > k for p, k in zip(padding, kernel)):
        return f"{name}: padding {padding} must be at most half the kernel {kernel}"
    if kernel[0] > h + 2 * padding[0] or kernel[1] > w + 2 * padding[1]:
        return f"{name}: kernel {kernel} is larger than the padded {h}x{w} input"
    return None


class Checker:
    """Reads and checks the fields of a graph's ops against ``tensors``; records the tensors used."""

    def __init__(self, graph: dict, tensors: dict):
        self.graph = graph
        self.tensors = tensors
        self.used: set = set()

    def fail(self, op_index, message):
        where = "graph"
        if op_index is not None:
            op = self.graph["ops"][op_index]
            name = op.get("name") if isinstance(op, dict) else None
            where = f"op {op_index}" + (f" (layer {_short(name)})" if isinstance(name, str) else "")
        raise ModelFileError(f"invalid graph: {where}: {message}")

    # attribute readers -----------------------------------------------------------------------
    def int_attr(self, i, op, key, minimum, maximum):
        value = op.get(key)
        if type(value) is not int or not minimum <= value <= maximum:
            self.fail(i, f"{op.get('op')}: attribute {key!r} must be an integer in "
                         f"[{minimum}, {maximum}], got {_short(value)}")
        return value

    def pair_attr(self, i, op, key, minimum, maximum):
        value = op.get(key)
        if (not isinstance(value, list) or len(value) != 2
                or not all(type(v) is int and minimum <= v <= maximum for v in value)):
            self.fail(i, f"{op.get('op')}: attribute {key!r} must be a pair of integers in "
                         f"[{minimum}, {maximum}], got {_short(value)}")
        return value

    def choice_attr(self, i, op, key, choices):
        value = op.get(key)
        if value not in choices:
            self.fail(i, f"{op.get('op')}: attribute {key!r} must be one of {list(choices)}, "
                         f"got {_short(value)}")
        return value

    def bool_attr(self, i, op, key):
        value = op.get(key)
        if type(value) is not bool:  # not `in (True, False)`: 1 == True
            self.fail(i, f"{op.get('op')}: attribute {key!r} must be true or false, got "
                         f"{_short(value)}")
        return value

    def tensor(self, i, op, role, dtype, shape):
        names = op.get("tensors")
        name = names.get(role) if isinstance(names, dict) else None
        if not isinstance(name, str):
            self.fail(i, f"{op.get('op')}: missing tensor role {role!r}")
        array = self.tensors.get(name)
        if array is None:
            self.fail(i, f"{op.get('op')}: tensor {_short(name)} ({role}) is not in the file")
        if array.dtype != np.dtype(dtype):
            self.fail(i, f"{op.get('op')}: tensor {_short(name)} ({role}) has dtype {array.dtype}, "
                         f"expected {np.dtype(dtype)}")
        if tuple(array.shape) != tuple(shape):
            self.fail(i, f"{op.get('op')}: tensor {_short(name)} ({role}) has shape "
                         f"{tuple(array.shape)}, expected {tuple(shape)}")
        if array.dtype.kind == "f":
            # a threshold may be +-inf (a channel whose sign is constant); nothing may be NaN
            infinite_ok = role in _INFINITE_OK
            bad = np.isnan(array) if infinite_ok else ~np.isfinite(array)
            if bad.any():
                self.fail(i, f"{op.get('op')}: tensor {_short(name)} ({role}) holds "
                             f"{'NaN' if infinite_ok else 'NaN or infinite'} values")
        self.used.add(name)
        return array

    def packed_weight(self, i, op, shape, k):
        """A uint64 weight packed along its last axis, rows of ``k`` bits: pad bits must be 0
        (the kernels rely on it: K - 2 popcount(a ^ w) counts every set pad bit)."""
        w = self.tensor(i, op, "weight", np.uint64, shape)
        used = k % 64
        if used and np.any(w[..., -1] >> np.uint64(used)):
            self.fail(i, f"{op.get('op')}: weight has pad bits set beyond its {k} bits per row "
                         "(they must be 0)")
        return w

    def no_extra_roles(self, i, op, roles):
        extra = set(op.get("tensors", {})) - set(roles)
        if extra:
            self.fail(i, f"{op.get('op')}: unexpected tensor roles {_short(sorted(extra))}")

    def expect(self, i, op, act, kinds, ndim=None):
        """The input ``act`` is of one of ``kinds`` (a kind or a tuple) with ``ndim`` axes."""
        kinds = (kinds,) if isinstance(kinds, str) else kinds
        if act[0] not in kinds or (ndim is not None and len(act[1]) != ndim):
            layout = "(H, W, C)" if ndim == 3 else "(K,)" if ndim == 1 else "any"
            self.fail(i, f"{op['op']} takes {' or '.join(kinds)} ({layout}) activations, got "
                         f"{act[0]} of shape {act[1]}")

    def conv_attrs(self, i, op, act):
        """in/out channels, kernel, stride, dilation, padding, groups of a convolution of ``act``
        (an image (C, H, W), or bits/float (H, W, C)): returns (C, O, kernel, groups, Ho, Wo)."""
        c = self.int_attr(i, op, "in_channels", 1, LIMITS["channels"])
        o = self.int_attr(i, op, "out_channels", 1, LIMITS["channels"])
        image = act[0] == "image"
        if c != act[1][0 if image else -1]:
            self.fail(i, f"{op['op']}: in_channels {c} does not match the input {act[1]}")
        kernel = self.pair_attr(i, op, "kernel", 1, LIMITS["kernel"])
        stride = self.pair_attr(i, op, "stride", 1, LIMITS["stride"])
        dilation = self.pair_attr(i, op, "dilation", 1, LIMITS["dilation"])
        padding = self.pair_attr(i, op, "padding", 0, LIMITS["padding"])
        groups = self.int_attr(i, op, "groups", 1, c)
        if c % groups or o % groups:
            self.fail(i, f"{op['op']}: groups {groups} must divide in_channels {c} and "
                         f"out_channels {o}")
        h, w = (act[1][1], act[1][2]) if image else (act[1][0], act[1][1])
        ho = conv_output_size(h, kernel[0], stride[0], padding[0], dilation[0])
        wo = conv_output_size(w, kernel[1], stride[1], padding[1], dilation[1])
        if ho < 1 or wo < 1:
            self.fail(i, f"{op['op']}: kernel {kernel} does not fit the {h}x{w} input")
        return c, o, kernel, groups, ho, wo

    def binary_conv(self, i, op, act):
        """A binary convolution of bits ``act``: its geometry, pad mode and packed weight
        (O, KH, KW, words(C/g)); returns (O, Ho, Wo)."""
        self.expect(i, op, act, "bits", 3)
        c, o, kernel, groups, ho, wo = self.conv_attrs(i, op, act)
        self.choice_attr(i, op, "pad_mode", PAD_MODES)
        self.packed_weight(i, op, (o, kernel[0], kernel[1], words(c // groups)), c // groups)
        return o, ho, wo
