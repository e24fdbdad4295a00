"""The working memory one sample needs in each op, and the bound a loaded model must respect.

A model file is small, but its geometry says how large the activations and temporaries of a
predict will be: a 5 KB file with a huge padding or image size could otherwise ask for gigabytes.
:func:`binarynet.engine.graph.validate` refuses any op whose estimate (:func:`sample_bytes`, an
upper bound over the compiled kernels, the numpy reference and the GPU backend, plus
:func:`value_bytes` of every value a DAG keeps alive for later ops, such as a residual's
shortcut) exceeds the
limit: :data:`DEFAULT_MAX_BYTES` (1 GiB per sample, far above the paper's models, which need a
few MB), or the environment variable :data:`ENV_MAX_BYTES`, or ``load(path, max_bytes=...)``
(``PackedModel(..., max_bytes=...)``) for a genuinely larger model.
"""
from __future__ import annotations

import math
import os

from ..errors import BinarynetError

__all__ = ["DEFAULT_MAX_BYTES", "ENV_MAX_BYTES", "limit", "value_bytes", "sample_bytes", "op_needs",
           "too_much"]

DEFAULT_MAX_BYTES = 1 << 30
ENV_MAX_BYTES = "BINARYNET_MAX_BYTES"


def limit(max_bytes=None) -> int:
    """The bound in bytes: ``max_bytes`` if given, else $BINARYNET_MAX_BYTES, else the default."""
    where = "max_bytes"
    if max_bytes is None:
        text = os.environ.get(ENV_MAX_BYTES)
        if not text:
            return DEFAULT_MAX_BYTES
        where = f"${ENV_MAX_BYTES}"
        try:
            max_bytes = int(text)
        except ValueError:
            max_bytes = None
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise BinarynetError(f"{where} must be a positive integer (bytes), got "
                             f"{max_bytes if max_bytes is not None else text!r}")
    return max_bytes


def _words(bits: int) -> int:
    return -(-bits // 64)


def value_bytes(act) -> int:
    """A value of one sample as the runner may hold it: a float64 image, packed bits plus their
    unpacked int8 form (flatten, grouped convs), float32 values, or float64 logits."""
    kind, shape = act
    if kind == "bits":
        positions = math.prod(shape[:-1])
        return positions * (8 * _words(shape[-1]) + shape[-1])
    return (4 if kind == "float" else 8) * math.prod(shape)


def _conv_temporaries(op, act_in, act_out) -> int:
    """Padded input, im2col patches and sums of a convolution, one sample."""
    (ph, pw), (kh, kw) = op["padding"], op["kernel"]
    c, o, groups = op["in_channels"], op["out_channels"], op["groups"]
    ho, wo = act_out[1][0], act_out[1][1]
    if act_in[0] == "image":  # float64 values: padded image, patches, sums
        _, h, w = act_in[1]
        return 8 * ((h + 2 * ph) * (w + 2 * pw) * c + ho * wo * (kh * kw * (c // groups) + o))
    h, w, _ = act_in[1]
    padded = (h + 2 * ph) * (w + 2 * pw)
    if act_in[0] == "float":  # float32: padded input, then patches (depthwise: taps summed)
        if groups == c:
            return 4 * (padded * o + 2 * ho * wo * o)
        return 4 * (padded * c + ho * wo * (kh * kw * (c // groups) + o))
    per_word = 8 * _words(c // groups) * groups
    return padded * per_word + ho * wo * (kh * kw * per_word + 4 * o)


def _pool_temporaries(op, act_in) -> int:
    """A float pool's padded input (ceil_mode may add a stride's worth of rows and columns)."""
    h, w, c = act_in[1]
    (ph, pw), (sh, sw) = op["padding"], op["stride"]
    return 4 * (h + 2 * ph + sh) * (w + 2 * pw + sw) * c


def sample_bytes(op: dict, acts_in: list, act_out) -> int:
    """Upper estimate of the bytes one sample needs while ``op`` runs (its inputs, output and
    temporaries; the DAG's other live values are the caller's to add). ``op`` has been
    validated; ``acts_in`` / ``act_out`` are ``(kind, shape)``."""
    total = sum(value_bytes(act) for act in acts_in) + value_bytes(act_out)
    kind = op["op"]
    if kind in ("first_conv", "conv", "bconv", "conv_real"):
        total += _conv_temporaries(op, acts_in[0], act_out)
    elif kind in ("first_dense", "dense", "dense_logits", "bdense", "dense_real"):
        total += 8 * (op["in_features"] + op["out_features"])
    elif kind in ("avgpool", "maxpool_real"):
        total += _pool_temporaries(op, acts_in[0])
    elif kind in ("sign", "input_float"):  # a bool/int8 mask, a float32 copy
        total += 4 * math.prod(act_out[1])
    return total


def op_needs(ops: list, reads: list, acts: list, image) -> list:
    """Bytes one sample needs while each op runs: :func:`sample_bytes` plus every other value
    the DAG keeps alive at that moment (computed, and read by a later op: a residual's shortcut
    while its branch runs). ``reads``: the value indices each op reads (-1: the model input
    ``image``); ``acts``: each op's value."""
    last = {}
    for i, sources in enumerate(reads):
        for j in sources:
            last[j] = i
    alive = {-1: value_bytes(image)}  # value index -> bytes, until its last reader has run
    total = alive[-1]
    needs = []
    for i, op in enumerate(ops):
        operands = dict.fromkeys(reads[i])  # a value read twice is one array
        ins = [image if j < 0 else acts[j] for j in operands]
        own = sum(alive[j] for j in operands)
        needs.append(total - own + sample_bytes(op, ins, acts[i]))
        alive[i] = value_bytes(acts[i])
        total += alive[i]
        for j in operands:
            if last[j] == i:
                total -= alive.pop(j)
    return needs


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def too_much(kind: str, need: int, bound: int) -> str:
    """The error message for an op over the bound."""
    return (f"{kind}: one sample needs about {_human(need)} of working memory, over the limit of "
            f"{_human(bound)}; no model this engine was made for needs that (a corrupt or crafted "
            f"file?). For a genuinely larger model raise the limit with "
            f"load(path, max_bytes=...) or the environment variable {ENV_MAX_BYTES}")
