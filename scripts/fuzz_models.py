"""Fuzz the packed model reader: mutated model files must load unchanged or raise ModelFileError.

    python scripts/fuzz_models.py --files 20000 [--seed 0] [--batch 500] [--timeout 300]

Base models are small networks exported with binarynet.export (dense, conv with the integer
first-layer path, grouped conv with the float path), one built by hand, and two random format-3
residual DAGs using every op of the real-valued stream (uint8 and float input). Graph edits
reach the DAG's edges too (``inputs`` pointed elsewhere, lengthened, dropped; names duplicated). Case ``i`` of seed
``s`` mutates one of them with ``np.random.default_rng([s, i])`` (reproducible alone:
``--case i``), in one of two modes:

- *plain*: bit flips, byte writes, truncations, appended bytes, or header JSON edits (offsets
  swapped, shapes/dtypes/offsets/geometry changed, tensors renamed, metadata changed, huge
  numbers, deep nesting, a wrong length prefix) with the hashes left as they were. Verdict:
  ``ModelFileError``, or the file loads with the same graph and tensors and predicts the same
  logits ("loaded unchanged": the edit was not semantic, e.g. the writer's version string).
- *rehashed*: an attacker's edit, with all three SHA-256 sums recomputed: graph attributes and
  structure, tensor table, or tensor bytes (pad bits, BOOL bytes, NaN floats). Verdict:
  ``ModelFileError``, or the model loads and its compiled kernels predict exactly what the numpy
  reference predicts ("loaded valid").

Anything else is an error, counted by type: another exception, a changed file accepted silently,
kernels and reference disagreeing, and (here, not in the test suite) a crash by signal or a hang.
Cases run in batches in subprocesses with a timeout; after a crash or hang the batch resumes past
the case that caused it. tests/test_engine_fuzz.py runs the same generator for a few thousand
cases in the suite.
"""
from __future__ import annotations

import argparse
import collections
import copy
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import binarynet
from binarynet import engine
from binarynet.engine import format as fmt
from binarynet.engine import reference
from binarynet.errors import ModelFileError

# Loads in the fuzzer allow this much working memory per sample: a rehashed geometry edit can
# ask for at most this, so no case is slow or large (the base models need far less).
MAX_BYTES = 16 << 20
# Values a mutated field takes: edges of every check, wrong types, overflowing sizes.
NASTY = [0, 1, 2, 3, 63, 64, 65, 1000, -1, 2**31, 2**62, 2**63, 10**30, 1.5, "2", None, True,
         [], [1], [1, 2, 3], {}]
VERDICTS_OK = ("refused", "loaded unchanged", "loaded valid")  # "refused (<kind>)" counts as refused
# "crash:5,hang:7": the worker kills itself / sleeps at those cases (tests of this script)
SELFTEST_ENV = "BINARYNET_FUZZ_SELFTEST"


# ---------------------------------------------------------------------------------------------
# base models
# ---------------------------------------------------------------------------------------------
def base_models() -> list:
    """[(name, file bytes, input batch)]: small exported models (needs torch) and a hand-made one."""
    import torch

    import binarynet as bn
    from binarynet.export import export

    def spread(model):
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                    m.running_mean.uniform_(-4, 4)
                    m.weight.uniform_(-1, 1)
        return model.eval()

    torch.manual_seed(0)
    bases = []
    mlp = spread(bn.models.get("mnist_mlp", hidden=70, depth=2, in_shape=(1, 5, 5), num_classes=7))
    x = torch.randint(0, 256, (4, 1, 5, 5), dtype=torch.uint8)
    bases.append(("mlp_u8", export(mlp, x, input_scale=1 / 64, input_offset=-2.0), x.numpy()))
    cnn = spread(bn.models.get("cifar10_vgg", widths=(5, 70), fc=(33,), image_size=4))
    x = torch.randint(0, 256, (3, 3, 4, 4), dtype=torch.uint8)
    bases.append(("cnn_u8", export(cnn, x, input_scale=2 / 255, input_offset=-1.0), x.numpy()))
    nn = torch.nn
    grouped = spread(nn.Sequential(
        bn.nn.BinaryConv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), bn.nn.Sign(),
        bn.nn.BinaryConv2d(6, 9, 3, padding=1, groups=3, pad_value=-1.0), nn.MaxPool2d(2),
        nn.BatchNorm2d(9), bn.nn.Sign(), nn.Flatten(), bn.nn.BinaryLinear(9 * 9, 5)))
    x = torch.randint(0, 256, (3, 2, 6, 6)).float() / 64 - 2
    bases.append(("grouped_float", export(grouped, x), x.numpy()))
    bases.append(("tiny_dense", _tiny_dense(), np.linspace(-1, 1, 10, dtype=np.float32).reshape(2, 5)))
    rng = np.random.default_rng(0)
    for name, seed, uint8 in (("dag_u8", 1, True), ("dag_float", 2, False)):
        model = engine.PackedModel(*random_dag(seed, uint8))
        x = (rng.integers(0, 256, (2, *model.input_shape), dtype=np.uint8) if uint8
             else rng.uniform(-2, 2, (2, *model.input_shape)).astype(np.float32))
        bases.append((name, model, x))
    return [(name, packed.to_bytes(), x) for name, packed, x in bases]


def _tiny_dense():
    graph = {"input": {"shape": [5], "scale": None, "offset": None}, "num_classes": 3,
             "ops": [{"op": "binarize_input", "name": "in", "tensors": {}},
                     {"op": "dense_logits", "name": "fc", "in_features": 5, "out_features": 3,
                      "tensors": {"weight": "fc.weight", "scale": "fc.scale", "shift": "fc.shift"}}]}
    tensors = {"fc.weight": np.array([[0b11111], [0b01010], [0b00011]], dtype=np.uint64),
               "fc.scale": np.array([1.0, 0.5, -2.0]), "fc.shift": np.array([0.0, 1.0, 0.25])}
    return engine.PackedModel(graph, tensors)


def random_dag(seed: int, uint8: bool):
    """(graph, tensors) of a random format-3 residual network using every op of the
    real-valued stream: stem, two binary blocks with shortcuts (one downsampling through an
    average pool), a depthwise conv, a max-pooled branch concatenated, a global pool and a
    binary dense head. Channel counts are drawn across a word boundary (odd, or over 64)."""
    rng = np.random.default_rng(seed)
    c_in, size = int(rng.integers(1, 4)), int(rng.integers(5, 9))
    c, c2, hidden = (int(rng.choice([5, 7, 66])), int(rng.integers(3, 9)),
                     int(rng.choice([9, 65])))
    norm = [float(v) for v in rng.uniform(0.005, 0.02, c_in)] if uint8 else None
    graph = {"input": {"shape": [c_in, size, size], "scale": norm,
                       "offset": [-1.0] * c_in if uint8 else None},
             "num_classes": int(rng.integers(2, 6)), "ops": []}
    tensors = {}

    def f32(*shape, low=-1.0, high=1.0):
        return rng.uniform(low, high, shape).astype(np.float32)

    def packed_pm1(*shape):
        return reference.pack(rng.integers(0, 2, shape).astype(np.int8) * 2 - 1)

    def op(kind, name, inputs=None, tensor=None, **attrs):
        graph["ops"].append({"op": kind, "name": name, **attrs, "tensors": {
            role: f"{name}.{role}" for role in (tensor or {})}})
        if inputs is not None:
            graph["ops"][-1]["inputs"] = inputs
        tensors.update({f"{name}.{role}": value for role, value in (tensor or {}).items()})

    def conv(k, cin, cout, stride=1, padding=0, groups=1):
        return dict(in_channels=cin, out_channels=cout, kernel=[k, k], stride=[stride] * 2,
                    padding=[padding] * 2, dilation=[1, 1], groups=groups)

    def per_channel(n, *roles):
        return {role: f32(n, low=-2, high=2) for role in roles}

    def sign(name, n, inputs=None):
        op("sign", name, inputs, {"thresh": f32(n, low=-0.5, high=0.5),
                                  "flip": rng.random(n) < 0.3})

    op("input_float", "in")
    op("conv_real", "stem", None, {"weight": f32(c, 3, 3, c_in), "bias": f32(c)},
       **conv(3, c_in, c, padding=1))
    op("scale_shift", "bn0", None, per_channel(c, "scale", "shift"))
    op("prelu", "act0", None, per_channel(c, "shift_in", "slope", "shift_out"))
    sign("s1", c)
    op("bconv", "b1", None, {"weight": packed_pm1(c, 3, 3, c), **per_channel(c, "scale", "shift")},
       pad_mode=str(rng.choice(["zero", "one", "minus_one"])), **conv(3, c, c, padding=1))
    op("scale_shift", "bn1", None, per_channel(c, "scale", "shift"))
    op("add", "add1", ["bn1", "act0"])
    op("relu", "act1")
    op("conv_real", "dw", None, {"weight": f32(c, 3, 3, 1), "bias": f32(c)},
       **conv(3, c, c, padding=1, groups=c))
    sign("s2", c)
    op("bconv", "b2", None, {"weight": packed_pm1(c, 3, 3, c), **per_channel(c, "scale", "shift")},
       pad_mode="zero", **conv(3, c, c, stride=2, padding=1))
    op("avgpool", "pool2", ["act1"], kernel=[2, 2], stride=[2, 2], padding=[0, 0],
       ceil_mode=True, count_include_pad=bool(rng.random() < 0.5))
    op("add", "add2", ["pool2", "b2"])
    op("prelu", "act2", None, per_channel(c, "shift_in", "slope", "shift_out"))
    op("maxpool_real", "mp", ["dw"], kernel=[3, 3], stride=[2, 2], padding=[1, 1], ceil_mode=False)
    op("concat", "cat", ["act2", "mp"])
    op("conv_real", "proj", None, {"weight": f32(c2, 1, 1, 2 * c), "bias": f32(c2)},
       **conv(1, 2 * c, c2))
    op("global_avgpool", "gap")
    op("flatten", "flat")
    sign("s3", c2)
    op("bdense", "bd", None, {"weight": packed_pm1(hidden, c2), **per_channel(hidden, "scale", "shift")},
       in_features=c2, out_features=hidden)
    op("relu", "act3")
    op("dense_real", "fc", None, {"weight": f32(graph["num_classes"], hidden),
                                  "bias": f32(graph["num_classes"])},
       in_features=hidden, out_features=graph["num_classes"])
    return graph, tensors


# ---------------------------------------------------------------------------------------------
# file parts
# ---------------------------------------------------------------------------------------------
def split(blob: bytes):
    n = struct.unpack_from("<Q", blob, 0)[0]
    return json.loads(blob[8:8 + n]), bytearray(blob[8 + n:])


def join(header: dict, data: bytes, raw_values: dict | None = None, prefix_delta: int = 0) -> bytes:
    """The file of ``header`` and ``data``; ``raw_values`` replaces placeholder strings by raw
    JSON text (values json.dumps cannot write: 5000-digit numbers, 100k-deep nesting)."""
    text = json.dumps(header, separators=(",", ":"))
    for placeholder, raw in (raw_values or {}).items():
        text = text.replace(json.dumps(placeholder), raw)
    body = text.encode("utf-8")
    body += b" " * (-len(body) % 8)
    return struct.pack("<Q", max(0, len(body) + prefix_delta)) + body + bytes(data)


def rehash(header: dict, data: bytes) -> None:
    """Recompute the three SHA-256 sums, as an attacker who edits a file would."""
    meta = header["__metadata__"]
    meta["tensors_sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    meta["table_sha256"] = fmt._table_sha256(header)
    meta["graph_sha256"] = hashlib.sha256(meta["graph"].encode("utf-8")).hexdigest()


def graph_text(graph) -> str:
    return json.dumps(graph, sort_keys=True, separators=(",", ":"))


def _tensor_names(header):
    return sorted(name for name in header if name != "__metadata__")


# ---------------------------------------------------------------------------------------------
# mutations
# ---------------------------------------------------------------------------------------------
def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


def mutate_bytes(rng, blob: bytes) -> bytes:
    """Bit flips, byte writes, a truncation or appended bytes, anywhere in the file."""
    out = bytearray(blob)
    kind = _pick(rng, ["flip", "flip", "write", "truncate", "append"])
    if kind == "truncate":
        return bytes(out[:int(rng.integers(len(out)))])
    if kind == "append":
        return bytes(out) + rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    for _ in range(int(rng.integers(1, 9))):
        at = int(rng.integers(len(out)))
        out[at] = (out[at] ^ (1 << int(rng.integers(8)))) if kind == "flip" else int(rng.integers(256))
    return bytes(out)


def edit_table(rng, header: dict) -> None:
    """Swap offsets, rename a tensor, or change a shape, dtype or offset in the tensor table."""
    names = _tensor_names(header)
    name = _pick(rng, names)
    entry = header[name]
    kind = _pick(rng, ["swap", "swap", "rename", "shape", "dtype", "offsets", "extra"])
    if kind == "swap":
        size = entry["data_offsets"][1] - entry["data_offsets"][0]
        same = [n for n in names if n != name
                and header[n]["data_offsets"][1] - header[n]["data_offsets"][0] == size]
        other = _pick(rng, same or [n for n in names if n != name] or [name])
        entry["data_offsets"], header[other]["data_offsets"] = (
            header[other]["data_offsets"], entry["data_offsets"])
    elif kind == "rename":
        header[name + _pick(rng, ["x", ".", "\u00e9"])] = header.pop(name)
    elif kind == "shape":
        shape = entry["shape"]
        if shape and rng.random() < 0.8:
            shape[int(rng.integers(len(shape)))] = _pick(rng, NASTY)
        else:
            entry["shape"] = _pick(rng, [shape[::-1], shape + [1], [0, 2**62], "shape", 7])
    elif kind == "dtype":
        entry["dtype"] = _pick(rng, list(fmt.DTYPES) + ["F16", ["U64"], 8, None])
    elif kind == "offsets":
        entry["data_offsets"][int(rng.integers(2))] += _pick(rng, [-8, -1, 1, 8, 2**64, -2**40])
    else:
        entry[_pick(rng, ["extra", "dtype"])] = _pick(rng, NASTY)


def edit_metadata(rng, header: dict) -> None:
    meta = header["__metadata__"]
    key = _pick(rng, sorted(meta) + ["extra"])
    meta[key] = _pick(rng, ["1", "2", "3", "\u00b2", "", "binarynet-packed", "x" * 64, 2, None,
                            meta.get(key, "")[::-1] if isinstance(meta.get(key), str) else "0"])
    if rng.random() < 0.2:
        meta.pop(_pick(rng, sorted(meta)))


def edit_graph(rng, graph: dict) -> None:
    """Change one op attribute, the op list, the input description or the class count."""
    ops = graph["ops"]
    kind = _pick(rng, ["attr", "attr", "attr", "pair", "ops", "input", "classes", "roles", "edges"])
    op = _pick(rng, ops)
    if kind == "edges":
        edit_edges(rng, ops, op)
        return
    if kind in ("attr", "pair"):
        keys = [k for k in op if k not in ("tensors",)]
        key = _pick(rng, keys)
        value = op[key]
        if isinstance(value, list) and value and kind == "pair":
            value[int(rng.integers(len(value)))] = _pick(rng, NASTY)
        elif isinstance(value, int) and not isinstance(value, bool) and rng.random() < 0.5:
            op[key] = value + _pick(rng, [-1, 1, 64, -value, value])
        else:
            op[key] = _pick(rng, NASTY + [False, "zero", "one", "minus_one", "bits", "logits",
                                          "int", "bitplane", "conv", "dense", "float", "input"])
    elif kind == "ops":
        i, j = int(rng.integers(len(ops))), int(rng.integers(len(ops)))
        _pick(rng, [lambda: ops.pop(i), lambda: ops.insert(i, copy.deepcopy(ops[j])),
                    lambda: ops.__setitem__(i, ops[j]) if i != j else ops.reverse()])()
    elif kind == "input":
        inp = graph["input"]
        key = _pick(rng, ["shape", "scale", "offset"])
        value = inp[key]
        if isinstance(value, list) and value:
            value[int(rng.integers(len(value)))] = _pick(rng, NASTY + [1e308, -1e-300, 0.5])
        else:
            inp[key] = _pick(rng, NASTY + [[0.5], [1, 5, 5]])
    elif kind == "classes":
        graph["num_classes"] = _pick(rng, NASTY)
    else:
        roles = op["tensors"]
        if roles:
            role = _pick(rng, sorted(roles))
            roles[role + _pick(rng, ["", "_"])] = _pick(rng, sorted(set(roles.values())) + [7])


def edit_edges(rng, ops: list, op: dict) -> None:
    """The DAG's edges: an op's ``inputs`` pointed at another value (earlier, later, itself,
    "input", nothing), lengthened, shortened or removed, or its name made another's."""
    names = [o.get("name") for o in ops if isinstance(o, dict)] + ["input", "nope", ""]
    current = op.get("inputs")
    kind = _pick(rng, ["point", "point", "append", "drop", "remove", "rename"])
    if kind == "rename":
        op["name"] = _pick(rng, names)
    elif kind == "remove":
        op.pop("inputs", None)
    elif kind == "point" and isinstance(current, list) and current:
        current[int(rng.integers(len(current)))] = _pick(rng, names)
    elif kind == "append" and isinstance(current, list):
        current.append(_pick(rng, names))
    elif kind == "drop" and isinstance(current, list) and current:
        current.pop(int(rng.integers(len(current))))
    else:
        op["inputs"] = [_pick(rng, names)]


def edit_data(rng, header: dict, data: bytearray) -> None:
    """Tensor bytes an attacker would aim at: pad bits, BOOL bytes, NaN/inf floats, any bits."""
    name = _pick(rng, _tensor_names(header))
    entry = header[name]
    begin, end = entry["data_offsets"]
    if begin == end:
        return
    at = begin + int(rng.integers(end - begin))
    if entry["dtype"] == "BOOL":
        data[at] = _pick(rng, [0, 1, 2, 255])
    elif entry["dtype"] in ("F32", "F64") and rng.random() < 0.7:
        size = 4 if entry["dtype"] == "F32" else 8
        at = begin + (at - begin) // size * size
        value = _pick(rng, [np.nan, np.inf, -np.inf, 1e38, -0.0])
        data[at:at + size] = np.array([value], "<f4" if size == 4 else "<f8").tobytes()
    elif entry["dtype"] == "U64" and rng.random() < 0.7:
        word = begin + (end - begin - 8) // 8 * 8 if rng.random() < 0.5 else begin
        data[word + 7] |= 0x80  # the top bit: a pad bit unless the row fills its last word
    else:
        data[at] ^= 1 << int(rng.integers(8))


def mutate_header(rng, blob: bytes, rehashed: bool) -> bytes:
    """A JSON-level edit of the header, the graph or the data, hashes recomputed or not."""
    header, data = split(blob)
    meta = header["__metadata__"]
    graph = json.loads(meta["graph"])
    raw = {}
    kinds = ["table", "graph", "graph", "data"] if rehashed else \
        ["table", "table", "graph", "metadata", "huge", "nest", "prefix"]
    kind = _pick(rng, kinds)
    prefix_delta = 0
    if kind == "table":
        edit_table(rng, header)
    elif kind == "graph":
        edit_graph(rng, graph)
        meta["graph"] = graph_text(graph)
    elif kind == "data":
        edit_data(rng, header, data)
    elif kind == "metadata":
        edit_metadata(rng, header)
    elif kind == "huge":
        target = _pick(rng, [header[_pick(rng, _tensor_names(header))], meta])
        target[_pick(rng, sorted(target))] = "@@HUGE@@"
        raw["@@HUGE@@"] = _pick(rng, ["9" * 5000, "-" + "1" * 4000, "1e999999", "0." + "1" * 5000])
    elif kind == "nest":
        depth = int(_pick(rng, [33, 1000, 100_000]))
        header[_pick(rng, _tensor_names(header))]["shape"] = "@@NEST@@"
        raw["@@NEST@@"] = "[" * depth + "]" * depth
    else:
        prefix_delta = _pick(rng, [-8, -1, 1, 8, 2**20, -2**20])
    if rehashed:
        rehash(header, data)
    return join(header, data, raw, prefix_delta)


def mutate(base_blob: bytes, seed: int, case: int):
    """(mode, mutated bytes) of case ``case``: mode "plain" or "rehashed"."""
    rng = np.random.default_rng([seed, case])
    r = rng.random()
    if r < 0.35:
        return "plain", mutate_bytes(rng, base_blob)
    if r < 0.65:
        return "plain", mutate_header(rng, base_blob, rehashed=False)
    return "rehashed", mutate_header(rng, base_blob, rehashed=True)


# ---------------------------------------------------------------------------------------------
# verdicts
# ---------------------------------------------------------------------------------------------
def _same_model(model, original) -> bool:
    if model.graph != original.graph or set(model.tensors) != set(original.tensors):
        return False
    return all(a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
               for a, b in ((model.tensors[n], original.tensors[n]) for n in model.tensors))


def _sample_input(model, seed: int, case: int):
    rng = np.random.default_rng([seed, case, 1])
    shape = (2, *model.input_shape)
    if model.input_scale is not None:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.uniform(-2, 2, shape).astype(np.float32)


def _logits(model, x):
    # a valid but huge scale may overflow float32 to inf (and inf - inf make NaN)
    with np.errstate(over="ignore", invalid="ignore"):
        return model.predict(x)


def judge(mode: str, blob: bytes, original, x, seed: int, case: int, folder: Path) -> str:
    """The verdict on one mutated file: one of VERDICTS_OK, or an error description."""
    path = folder / f"case{case}.bnn"
    path.write_bytes(blob)
    try:
        try:
            model = engine.load(path, max_bytes=MAX_BYTES)
        except ModelFileError as err:
            return f"refused ({refusal_kind(str(err))})"
        if mode == "plain":
            if not _same_model(model, original):
                return "error: changed file accepted silently"
            if not np.array_equal(_logits(model, x), _logits(original, x), equal_nan=True):
                return "error: same model, different predictions"
            return "loaded unchanged"
        x = _sample_input(model, seed, case)
        reference = engine.load(path, reference=True, max_bytes=MAX_BYTES)
        if not np.array_equal(_logits(model, x), _logits(reference, x), equal_nan=True):
            return "error: kernels and reference disagree"
        return "loaded valid"
    except Exception as err:  # noqa: BLE001 - the fuzzer's job is to count these
        return f"error: {type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"
    finally:
        path.unlink(missing_ok=True)


# what a ModelFileError is about, from its message: the first matching phrase names the check
REFUSAL_KINDS = (
    ("SHA-256 of the graph", "graph checksum"), ("SHA-256 of the tensor bytes", "data checksum"),
    ("SHA-256 of the tensor names", "table checksum"), ("truncated", "truncated"),
    ("unexpected bytes", "trailing bytes"), ("not valid UTF-8 JSON", "header JSON"),
    ("nests deeper", "header nesting"), ("format version", "format version"),
    ("working memory", "memory bound"), ("invalid graph", "graph validation"),
    ("tensor '", "tensor table entry"), ("metadata", "metadata"),
)


def refusal_kind(message: str) -> str:
    return next((kind for phrase, kind in REFUSAL_KINDS if phrase in message), "other header check")


def prepared(bases) -> list:
    """[(file bytes, PackedModel, input)] of the base models, for :func:`run_case`."""
    return [(blob, engine.PackedModel(*fmt.decode(blob)[:2]), x) for _, blob, x in bases]


def run_case(originals, seed: int, case: int, folder: Path) -> str:
    """"<mode>: <verdict>" of case ``case`` (it mutates base ``case % len(originals)``)."""
    blob, original, x = originals[case % len(originals)]
    mode, mutated = mutate(blob, seed, case)
    return f"{mode}: {judge(mode, mutated, original, x, seed, case, folder)}"


def run_cases(bases, seed: int, cases, folder: Path) -> collections.Counter:
    """Verdict counts of ``cases``, in this process."""
    originals = prepared(bases)
    return collections.Counter(run_case(originals, seed, case, folder) for case in cases)


# ---------------------------------------------------------------------------------------------
# command line: batches in subprocesses, crashes and hangs caught
# ---------------------------------------------------------------------------------------------
def _worker(bases_file: Path, seed: int, start: int, stop: int) -> int:
    """Print "start <case>" before and "done <case> <verdict>" after each case, so the parent
    keeps every finished verdict and knows which case a crash or hang happened in."""
    with np.load(bases_file, allow_pickle=False) as saved:
        names = [str(n) for n in saved["names"]]
        bases = [(n, saved[f"{n}.bnn"].tobytes(), saved[f"{n}.x"]) for n in names]
    originals = prepared(bases)
    planted = dict(item.split(":")[::-1] for item in os.environ.get(SELFTEST_ENV, "").split(",")
                   if item)
    with tempfile.TemporaryDirectory() as folder:
        for case in range(start, stop):
            print(f"start {case}", flush=True)
            if planted.get(str(case)) == "crash":
                os.kill(os.getpid(), signal.SIGSEGV)
            if planted.get(str(case)) == "hang":
                time.sleep(3600)
            print(f"done {case} {run_case(originals, seed, case, Path(folder))}", flush=True)
    return 0


def _run_batch(bases_file, seed, start, stop, timeout, totals, failures) -> int:
    """Run cases [start, stop) in a subprocess, adding verdicts to ``totals``; returns the next
    case to run (past the culprit after a crash or hang)."""
    cmd = [sys.executable, __file__, "--worker", str(bases_file), "--seed", str(seed),
           "--start", str(start), "--stop", str(stop)]
    env = dict(os.environ)  # the worker imports this binarynet, installed or not
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(binarynet.__file__).parents[1]),
                                                      env.get("PYTHONPATH")]))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        stdout, code, stderr = done.stdout, done.returncode, done.stderr
    except subprocess.TimeoutExpired as err:
        out = err.stdout or b""
        stdout, code, stderr = (out.decode() if isinstance(out, bytes) else out), None, ""
    started = start
    for line in stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word == "start":
            started = int(rest)
        elif word == "done":
            totals[rest.partition(" ")[2]] += 1
            started = int(rest.partition(" ")[0]) + 1
    if code == 0:
        return stop
    if code is None:
        kind = f"hang (over {timeout:g} s)"
    elif code < 0:
        kind = f"crash (signal {-code})"
    else:
        kind = f"worker failed (exit {code}): {stderr.strip().splitlines()[-1:] or ''}"
    failures.append(f"case {started} (--case {started} --seed {seed}): {kind}")
    totals[f"?: error: {kind.split(':')[0]}"] += 1
    return started + 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000, help="mutated files to try")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=500, help="cases per subprocess")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per batch")
    parser.add_argument("--case", type=int, help="run one case in this process and print it")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stop", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        return _worker(args.worker, args.seed, args.start, args.stop)
    bases = base_models()
    if args.case is not None:
        with tempfile.TemporaryDirectory() as folder:
            print(run_case(prepared(bases), args.seed, args.case, Path(folder)))
        return 0
    totals, failures = collections.Counter(), []
    with tempfile.TemporaryDirectory() as folder:
        bases_file = Path(folder) / "bases.npz"
        arrays = {"names": np.array([n for n, _, _ in bases])}
        for name, blob, x in bases:
            arrays[f"{name}.bnn"], arrays[f"{name}.x"] = np.frombuffer(blob, np.uint8), x
        np.savez(bases_file, **arrays)
        start = 0
        while start < args.files:
            stop = min(args.files, start + args.batch)
            start = _run_batch(bases_file, args.seed, start, stop, args.timeout, totals, failures)
    return report(totals, failures, args.files, args.seed)


def report(totals, failures, files: int, seed: int) -> int:
    print(f"fuzzed {files} files (seed {seed}, bases: mlp_u8, cnn_u8, grouped_float, tiny_dense, "
          "dag_u8, dag_float)")
    outcomes = collections.Counter()
    for key, count in totals.items():
        outcomes[key.partition(" (")[0]] += count
    for key, count in sorted(outcomes.items()):
        print(f"{count:8d}  {key}")
    print("refusals by the check that made them:")
    for key, count in sorted(totals.items(), key=lambda item: -item[1]):
        if "refused (" in key:
            print(f"{count:8d}  {key}")
    errors = sum(count for key, count in totals.items() if ": error" in key)
    for line in failures:
        print("  " + line)
    print(f"errors: {errors}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
