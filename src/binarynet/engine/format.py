"""The packed model file: one safetensors-layout file, written and read with numpy alone.

Layout (the safetensors layout, so the ``safetensors`` package can open our files too):

- 8 bytes: little-endian uint64 ``n``, the length of the JSON header;
- ``n`` bytes: UTF-8 JSON object, padded with spaces to a multiple of 8 bytes. Each tensor has an
  entry ``{"dtype": "U64", "shape": [...], "data_offsets": [begin, end]}`` (offsets relative to
  the data section); ``"__metadata__"`` is a string -> string map;
- the data section: the raw little-endian bytes of the tensors, contiguous, no holes.

Metadata of a binarynet packed model:

==================== =====================================================================
``format``           ``"binarynet-packed"``
``format_version``   an integer (as a string), :data:`FORMAT_VERSION`
``binarynet_version`` the version that wrote the file
``graph``            JSON: ordered ops with attributes and tensor names, input shape and
                     normalisation, class count (schema in :mod:`binarynet.engine.graph`)
``tensors_sha256``   SHA-256 of the data section (all tensor bytes)
``table_sha256``     SHA-256 of the tensor table (each tensor's name, dtype, shape and offsets,
                     as compact sorted-key JSON): swapping the offsets of two same-size tensors,
                     or renaming one, is caught even though the data bytes are unchanged
``graph_sha256``     SHA-256 of the ``graph`` string (UTF-8), so an edited graph is caught too
==================== =====================================================================

Version 2 added ``table_sha256``; version 1 files are refused with a message to re-export.
Version 3 made the graph a DAG with a real-valued stream (ops name their ``inputs``; new float
ops, :mod:`binarynet.engine.graph`); version-2 files are chains, which version 3 keeps valid,
so they still load.

No pickle anywhere: reading a file can only ever produce numpy arrays and JSON values.
Every field is validated on load, before anything is allocated from it (shapes, nesting depth
and number sizes are bounded); a problem raises :class:`~binarynet.errors.ModelFileError` saying
what is wrong and what to do, never another exception.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from typing import Mapping

import numpy as np

from .. import __version__
from .._atomic import atomic_write
from ..errors import ModelFileError

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "READABLE_VERSIONS", "DTYPES", "write_file", "read_file",
    "encode", "decode",
    "header_size",
]

FORMAT_NAME = "binarynet-packed"
FORMAT_VERSION = 3
# Versions this reader takes: every version-2 graph (a chain of ops) is also a version-3 graph.
READABLE_VERSIONS = (2, 3)

# safetensors dtype names <-> little-endian numpy dtypes (only those the engine uses).
DTYPES = {
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "I16": np.dtype("<i2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}

# A header larger than this is not one of ours (safetensors itself refuses > 100 MB).
MAX_HEADER_BYTES = 100 * 1024 * 1024
_REQUIRED_METADATA = ("format", "format_version", "binarynet_version", "graph",
                      "tensors_sha256", "table_sha256", "graph_sha256")
# Bounds far above any real model, so that a hostile header cannot make the reader allocate or
# recurse without limit: JSON nesting (ours is 4 deep), dimensions of a tensor and their size.
MAX_JSON_DEPTH = 32
MAX_TENSOR_DIMS = 8
MAX_DIM = 2**40


def _sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()


def _dtype_name(array: np.ndarray, name: str) -> str:
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    try:
        return _NAMES[np.dtype(dtype)]
    except KeyError:
        raise TypeError(
            f"tensor {name!r}: dtype {array.dtype} cannot be stored; expected one of "
            f"{sorted(str(d) for d in DTYPES.values())}"
        ) from None


def encode(graph: Mapping, tensors: Mapping[str, np.ndarray]) -> bytes:
    """Serialise a graph (JSON-able mapping) and named numpy arrays to the file's bytes.

    Tensors are laid out widest dtype first so that, with the header padded to 8 bytes, every
    tensor starts on a multiple of its item size (aligned zero-copy views on load).
    """
    graph_text = json.dumps(graph, sort_keys=True, separators=(",", ":"))
    order = sorted(tensors, key=lambda n: (-np.asarray(tensors[n]).dtype.itemsize, n))
    entries, chunks, offset = {}, [], 0
    for name in order:
        if name == "__metadata__":
            raise ValueError("'__metadata__' is reserved and cannot name a tensor")
        array = np.asarray(tensors[name])
        dtype_name = _dtype_name(array, name)
        raw = np.ascontiguousarray(array, dtype=DTYPES[dtype_name]).tobytes()
        entries[name] = {"dtype": dtype_name, "shape": list(array.shape),
                         "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    data = b"".join(chunks)
    table_sha256 = _table_sha256(entries)
    entries["__metadata__"] = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "binarynet_version": __version__,
        "graph": graph_text,
        "tensors_sha256": _sha256(data),
        "table_sha256": table_sha256,
        "graph_sha256": _sha256(graph_text.encode("utf-8")),
    }
    header = json.dumps(entries, separators=(",", ":")).encode("utf-8")
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


def _table_sha256(entries: Mapping) -> str:
    """SHA-256 of the tensor table (``__metadata__`` left out), in one canonical JSON form."""
    table = {name: entry for name, entry in entries.items() if name != "__metadata__"}
    return _sha256(json.dumps(table, sort_keys=True, separators=(",", ":")).encode("utf-8"))


def _reject_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: bytes, what: str):
    """JSON from untrusted bytes: ModelFileError (naming ``what``) for anything but plain JSON
    with nesting at most :data:`MAX_JSON_DEPTH` and numbers Python parses (no NaN/Infinity,
    no integers beyond its digit limit), so no RecursionError or ValueError escapes.

    json's parser stops deep nesting itself (RecursionError, at about Python's recursion limit);
    the depth bound is then checked on the parsed value, without recursion.
    """
    too_deep = ModelFileError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels; the file is "
                              "corrupt or not a binarynet packed model")
    try:
        value = json.loads(text.decode("utf-8"), parse_constant=_reject_constant)
    except RecursionError:
        raise too_deep from None
    except (UnicodeDecodeError, ValueError) as err:
        raise ModelFileError(f"{what} is not valid UTF-8 JSON ({err}); the file is corrupt "
                             "or not a binarynet packed model") from None
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise too_deep
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return value


def header_size(blob: bytes) -> int:
    """Bytes taken by the length prefix and the JSON header (the rest is tensor data)."""
    return 8 + struct.unpack_from("<Q", blob, 0)[0]


def write_file(path, graph: Mapping, tensors: Mapping[str, np.ndarray]) -> int:
    """Write a packed model file atomically (temp file + fsync + rename); returns its size."""
    blob = encode(graph, tensors)
    atomic_write(path, lambda f: f.write(blob))
    return len(blob)


def read_file(path):
    """Read and validate a packed model file -> ``(graph, tensors, metadata)``.

    Checks the length prefix, header JSON, metadata fields, format name and version, tensor
    dtypes/shapes/offsets, that the data section is exactly covered, the three SHA-256 sums
    (tensor table, tensor data, graph), and that BOOL tensors hold only 0 and 1.
    The graph's own consistency with the tensors is checked by :func:`binarynet.engine.graph.validate`.
    Raises :class:`ModelFileError` naming the file and the problem.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such packed model file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a directory, expected a packed model file (.bnn)") from None
    except OSError as err:
        raise ModelFileError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        return decode(blob)
    except ModelFileError as err:
        raise ModelFileError(f"{path}: {err}") from None


def decode(blob: bytes):
    """Parse and validate the bytes of a packed model file (see :func:`read_file`)."""
    if len(blob) < 8:
        raise ModelFileError(
            f"truncated: {len(blob)} bytes, too short for the 8-byte header length; "
            "the file is not a complete binarynet packed model (re-export or re-copy it)"
        )
    (n,) = struct.unpack_from("<Q", blob, 0)
    if n > MAX_HEADER_BYTES:
        raise ModelFileError(
            f"header length {n} is implausible (limit {MAX_HEADER_BYTES}); "
            "this is not a binarynet packed model file"
        )
    if 8 + n > len(blob):
        raise ModelFileError(
            f"truncated: the header claims {n} bytes but only {len(blob) - 8} follow the length "
            "field (re-export or re-copy the file)"
        )
    header = parse_json(bytes(blob[8:8 + n]), "header")
    if not isinstance(header, dict):
        raise ModelFileError("header is not a JSON object; not a binarynet packed model")
    metadata = _check_metadata(header.pop("__metadata__", None))
    data = memoryview(blob)[8 + n:]
    tensors = _check_tensors(header, data)
    if _table_sha256(header) != metadata["table_sha256"]:
        raise ModelFileError(
            "tensor table altered or corrupted: SHA-256 of the tensor names, dtypes, shapes and "
            "offsets does not match the one recorded when the file was written (re-export the model)"
        )
    if _sha256(data) != metadata["tensors_sha256"]:
        raise ModelFileError(
            "tensor data altered or corrupted: SHA-256 of the tensor bytes does not match the "
            "one recorded when the file was written (re-export the model)"
        )
    if _sha256(metadata["graph"].encode("utf-8", "surrogatepass")) != metadata["graph_sha256"]:
        raise ModelFileError(
            "graph altered or corrupted: SHA-256 of the graph description does not match the "
            "one recorded when the file was written (re-export the model)"
        )
    graph = parse_json(metadata["graph"].encode("utf-8", "surrogatepass"), "metadata 'graph'")
    if not isinstance(graph, dict):
        raise ModelFileError("metadata 'graph' must be a JSON object")
    _check_bools(tensors)
    return graph, tensors, metadata


def _check_metadata(metadata) -> dict:
    if not isinstance(metadata, dict):
        raise ModelFileError("no '__metadata__' in the header: a safetensors file, but not a "
                             "binarynet packed model (export one with `binarynet export`)")
    if metadata.get("format") != FORMAT_NAME:
        raise ModelFileError(
            f"format is {metadata.get('format')!r}, expected {FORMAT_NAME!r}: not a binarynet "
            "packed model (export one with `binarynet export`)"
        )
    text = metadata.get("format_version")
    # ASCII digits only: str.isdigit() accepts '²', which int() refuses
    if not isinstance(text, str) or not re.fullmatch(r"[0-9]{1,9}", text):
        raise ModelFileError(f"format_version {text!r} is not an integer")
    version = int(text)
    if version not in READABLE_VERSIONS:
        written = metadata.get("binarynet_version")
        advice = ("upgrade binarynet" if version > FORMAT_VERSION else
                  "re-export the model from its checkpoint with this binarynet")
        raise ModelFileError(
            f"written by format version {version} (binarynet {written}), this binarynet "
            f"({__version__}) reads versions {READABLE_VERSIONS[0]} to {FORMAT_VERSION}; {advice}"
        )
    missing = [key for key in _REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ModelFileError(f"metadata lacks {', '.join(missing)}; the file is incomplete or "
                             "was not written by binarynet")
    bad = [key for key in _REQUIRED_METADATA if not isinstance(metadata[key], str)]
    if bad:
        raise ModelFileError(f"metadata {', '.join(bad)} must be strings")
    return metadata


def _check_entry(name: str, entry, data_size: int):
    """(dtype, shape, begin, end) of one tensor table entry, every field checked and bounded."""
    where = f"tensor {name!r}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise ModelFileError(f"{where}: entry must have exactly dtype, shape and data_offsets")
    dtype = DTYPES.get(entry["dtype"]) if isinstance(entry["dtype"], str) else None
    if dtype is None:
        raise ModelFileError(f"{where}: dtype {entry['dtype']!r} is not one binarynet uses "
                             f"({', '.join(DTYPES)})")
    shape = entry["shape"]
    if (not isinstance(shape, list) or len(shape) > MAX_TENSOR_DIMS
            or not all(type(d) is int and 0 <= d <= MAX_DIM for d in shape)):
        raise ModelFileError(f"{where}: shape {_short(shape)} must be a list of at most "
                             f"{MAX_TENSOR_DIMS} integers in [0, 2**40]")
    offsets = entry["data_offsets"]
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
        raise ModelFileError(f"{where}: data_offsets {_short(offsets)} must be [begin, end] with "
                             "0 <= begin <= end")
    begin, end = offsets
    if end > data_size:
        raise ModelFileError(
            f"truncated: {where} ends at byte {end} of the data section, which has only "
            f"{data_size} bytes (re-export or re-copy the file)"
        )
    expected = dtype.itemsize
    for d in shape:  # Python integers: no overflow however large the dimensions
        expected *= d
    if end - begin != expected:
        raise ModelFileError(f"{where}: {end - begin} bytes for shape {shape} of "
                             f"{entry['dtype']} (expected {expected})")
    if expected == 0 and any(d > data_size for d in shape):
        raise ModelFileError(f"{where}: empty tensor of shape {shape} is implausibly large")
    return dtype, shape, begin, end


def _short(value) -> str:
    """repr of a JSON value, cut short (a hostile file can hold 4000-digit numbers)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_tensors(header: dict, data: memoryview) -> dict:
    spans, tensors = [], {}
    for name, entry in header.items():
        dtype, shape, begin, end = _check_entry(name, entry, len(data))
        spans.append((begin, end, name))
        tensors[name] = np.frombuffer(data, dtype=dtype, count=(end - begin) // dtype.itemsize,
                                      offset=begin).reshape(shape)
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise ModelFileError(f"tensor {name!r} starts at byte {begin}, expected {position}: "
                                 "tensor data overlaps or has holes")
        position = end
    if position != len(data):
        raise ModelFileError(f"{len(data) - position} unexpected bytes after the last tensor "
                             "(the file was altered or concatenated)")
    return tensors


def _check_bools(tensors: dict) -> None:
    """BOOL tensors hold bytes 0 or 1 only: numpy reads any other byte as True, but the compiled
    kernels and the reference may not agree on what it means."""
    for name, array in tensors.items():
        if array.dtype == np.bool_ and array.size and array.view(np.uint8).max() > 1:
            raise ModelFileError(f"tensor {name!r}: BOOL bytes must be 0 or 1")
