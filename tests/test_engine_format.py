"""The packed model file: round trip, safetensors compatibility, and every corruption rejected clearly."""
import hashlib
import json
import struct

import numpy as np
import pytest

from binarynet import engine
from binarynet.engine import format as fmt
from binarynet.errors import ModelFileError
from engine_fixtures import tiny_dense_model as tiny_model


def write_tiny(path):
    graph, tensors = tiny_model()
    fmt.write_file(path, graph, tensors)
    return path


def read_parts(path):
    blob = path.read_bytes()
    (n,) = struct.unpack_from("<Q", blob, 0)
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def write_parts(path, header, data):
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def rehash(header, data):
    """Recompute both hashes so that a deliberate edit reaches the later checks."""
    meta = header["__metadata__"]
    meta["tensors_sha256"] = hashlib.sha256(data).hexdigest()
    meta["table_sha256"] = fmt._table_sha256(header)
    meta["graph_sha256"] = hashlib.sha256(meta["graph"].encode()).hexdigest()


def test_round_trip_keeps_graph_tensors_and_dtypes(tmp_path):
    path = write_tiny(tmp_path / "m.bnn")
    graph, tensors, meta = fmt.read_file(path)
    want_graph, want_tensors = tiny_model()
    assert graph == want_graph
    assert set(tensors) == set(want_tensors)
    for name, array in want_tensors.items():
        assert tensors[name].dtype == array.dtype
        np.testing.assert_array_equal(tensors[name], array)
    assert meta["format"] == "binarynet-packed"
    assert meta["format_version"] == "3"
    # 8-byte aligned data: the JSON header is padded to a multiple of 8
    assert fmt.header_size(path.read_bytes()) % 8 == 0


def test_runner_computes_hand_values(tmp_path):
    model = engine.load(write_tiny(tmp_path / "m.bnn"))
    x = np.array([[1.0, 1.0, 1.0, 1.0, 1.0], [-1.0, 2.0, -0.5, 0.0, -3.0]], dtype=np.float32)
    # sample 0 = +++++: dots 5, -1, -1 ; sample 1 = -+-+- (0 -> +1): dots -1, 5, 1
    want = np.array([[5.0, -0.5 + 1.0, 2.0 + 0.25], [-1.0, 2.5 + 1.0, -2.0 + 0.25]], np.float32)
    np.testing.assert_array_equal(model.predict(x), want)


def test_safetensors_package_reads_our_file(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open
    path = write_tiny(tmp_path / "m.bnn")
    loaded = safetensors_numpy.load_file(str(path))
    _, want = tiny_model()
    assert set(loaded) == set(want)
    for name in want:
        np.testing.assert_array_equal(loaded[name], want[name])
    with safe_open(str(path), framework="numpy") as f:
        assert f.metadata()["format"] == "binarynet-packed"


def test_summary_accounts_for_the_file_size(tmp_path):
    graph, tensors = tiny_model()
    model = engine.PackedModel(graph, tensors)
    size = model.save(tmp_path / "m.bnn")
    assert size == (tmp_path / "m.bnn").stat().st_size
    last = model.summary().splitlines()[-1]
    assert last.endswith(f"= file {size} bytes")
    assert f"tensors {model.nbytes} bytes" in last


@pytest.mark.parametrize("blob, message", [
    (b"", "truncated: 0 bytes"),
    (b"\x01\x00\x00", "truncated: 3 bytes"),
    (struct.pack("<Q", 64) + b"{}", "truncated: the header claims 64 bytes"),
    (struct.pack("<Q", 1 << 40) + b"{}", "header length 1099511627776 is implausible"),
    (struct.pack("<Q", 4) + b"\xff\xfe{}", "not valid UTF-8 JSON"),
    (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    (struct.pack("<Q", 2) + b"{}", "no '__metadata__'"),
])
def test_broken_headers(tmp_path, blob, message):
    path = tmp_path / "bad.bnn"
    path.write_bytes(blob)
    with pytest.raises(ModelFileError, match=message) as err:
        engine.load(path)
    assert str(path) in str(err.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ModelFileError, match="no such packed model file"):
        engine.load(tmp_path / "nope.bnn")
    with pytest.raises(ModelFileError, match="is a directory"):
        engine.load(tmp_path)


def test_truncated_file(tmp_path):
    path = write_tiny(tmp_path / "m.bnn")
    blob = path.read_bytes()
    path.write_bytes(blob[:-5])
    with pytest.raises(ModelFileError, match="truncated: tensor .* ends at byte"):
        engine.load(path)


def test_altered_tensor_byte(tmp_path):
    path = write_tiny(tmp_path / "m.bnn")
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match="tensor data altered or corrupted: SHA-256"):
        engine.load(path)


def test_altered_graph(tmp_path):
    path = write_tiny(tmp_path / "m.bnn")
    header, data = read_parts(path)
    header["__metadata__"]["graph"] = header["__metadata__"]["graph"].replace(
        '"num_classes":3', '"num_classes":4')
    write_parts(path, header, data)
    with pytest.raises(ModelFileError, match="graph altered or corrupted"):
        engine.load(path)


@pytest.mark.parametrize("version, message", [
    ("4", "written by format version 4 .*, this binarynet .* reads versions 2 to 3; upgrade binarynet"),
    ("1", "written by format version 1 .* reads versions 2 to 3; re-export the model from its checkpoint with this binarynet"),
    ("\u00b2", "format_version .* is not an integer"),
    ("one", "format_version 'one' is not an integer"),
])
def test_wrong_versions(tmp_path, version, message):
    path = write_tiny(tmp_path / "m.bnn")
    header, data = read_parts(path)
    header["__metadata__"]["format_version"] = version
    write_parts(path, header, data)
    with pytest.raises(ModelFileError, match=message):
        engine.load(path)


def test_wrong_format_name_and_missing_metadata(tmp_path):
    path = write_tiny(tmp_path / "m.bnn")
    header, data = read_parts(path)
    header["__metadata__"]["format"] = "something-else"
    write_parts(path, header, data)
    with pytest.raises(ModelFileError, match="format is 'something-else'.*not a binarynet"):
        engine.load(path)
    header["__metadata__"]["format"] = "binarynet-packed"
    del header["__metadata__"]["graph_sha256"]
    write_parts(path, header, data)
    with pytest.raises(ModelFileError, match="metadata lacks graph_sha256"):
        engine.load(path)


@pytest.mark.parametrize("edit, message", [
    (lambda e: e.update(dtype="F16"), "dtype 'F16' is not one binarynet uses"),
    (lambda e: e.update(shape=[3, -1]), "shape .* must be a list of at most 8 integers in \\[0, 2\\*\\*40\\]"),
    (lambda e: e.update(shape=[4, 1]), "bytes for shape \\[4, 1\\]"),
    (lambda e: e.update(data_offsets=[8, 4]), "data_offsets .* must be \\[begin, end\\]"),
    (lambda e: e.update(extra=1), "entry must have exactly dtype, shape and data_offsets"),
    # these raised TypeError, OverflowError or ValueError ('array is too big') before format 2
    (lambda e: e.update(dtype=["U64"]), "dtype \\['U64'\\] is not one binarynet uses"),
    (lambda e: e.update(shape=[2**63]), "shape .* must be a list of at most 8"),
    (lambda e: e.update(shape=[0, 2**62], data_offsets=[0, 0]), "shape .* must be a list"),
    (lambda e: e.update(shape=[0, 2**40], data_offsets=[0, 0]), "implausibly large"),
    (lambda e: e.update(shape=[int("9" * 4000)]), "shape \\[9999.*\\.\\.\\. must be a list"),
    (lambda e: e.update(data_offsets=[0, 2**70]), "truncated"),
])
def test_bad_tensor_entries(tmp_path, edit, message):
    path = write_tiny(tmp_path / "m.bnn")
    header, data = read_parts(path)
    edit(header["fc.weight"])
    write_parts(path, header, data)
    with pytest.raises(ModelFileError, match=message):
        engine.load(path)


def test_overlapping_tensors_and_trailing_bytes(tmp_path):
    path = write_tiny(tmp_path / "m.bnn")
    header, data = read_parts(path)
    begin, end = header["fc.scale"]["data_offsets"]
    header["fc.shift"]["data_offsets"] = [begin, end]  # both point at the same bytes
    write_parts(path, header, data)
    with pytest.raises(ModelFileError, match="overlaps or has holes"):
        engine.load(path)
    header, data = read_parts(write_tiny(tmp_path / "m.bnn"))
    write_parts(path, header, data + b"\x00" * 8)
    with pytest.raises(ModelFileError, match="8 unexpected bytes after the last tensor"):
        engine.load(path)


def write_graph(path, graph, tensors):
    """A file whose bytes and hashes are valid but whose graph may not be."""
    path.write_bytes(fmt.encode(graph, tensors))
    return path


@pytest.mark.parametrize("change, message", [
    (lambda g, t: g["ops"][1].update(op="softmax"), "unknown op 'softmax'"),
    (lambda g, t: g["ops"][1]["tensors"].pop("scale"), "missing tensor role 'scale'"),
    (lambda g, t: t.update({"fc.scale": np.ones(3, np.float32)}),
     "tensor 'fc.scale' \\(scale\\) has dtype float32, expected float64"),
    (lambda g, t: t.update({"fc.weight": np.ones((3, 2), np.uint64)}),
     "has shape \\(3, 2\\), expected \\(3, 1\\)"),
    (lambda g, t: t.update({"extra": np.ones(2)}), "tensors not used by any op: extra"),
    (lambda g, t: g["ops"][1].update(in_features=6), "in_features 6 != 5 input features"),
    (lambda g, t: g.update(num_classes=4), "last op must produce logits or float of shape \\(4,\\)"),
    (lambda g, t: g["ops"].append(dict(g["ops"][1])), "follows the logits"),
    (lambda g, t: g["input"].update(scale=[0.5]), "scale and offset must both be given"),
    (lambda g, t: g["input"].update(shape=[0]), "input shape must be"),
    (lambda g, t: g["ops"].pop(0), "dense_logits takes bits"),
])
def test_inconsistent_graphs(tmp_path, change, message):
    graph, tensors = tiny_model()
    change(graph, tensors)
    path = write_graph(tmp_path / "m.bnn", graph, tensors)
    with pytest.raises(ModelFileError, match="invalid graph: .*" + message) as err:
        engine.load(path)
    assert str(path) in str(err.value)


def test_encode_refuses_unsupported_dtype():
    graph, tensors = tiny_model()
    tensors["fc.scale"] = np.ones(3, np.complex64)
    with pytest.raises(TypeError, match="tensor 'fc.scale': dtype complex64 cannot be stored"):
        fmt.encode(graph, tensors)


def test_swapped_offsets_of_same_size_tensors_are_caught(tmp_path):
    """Data and both data/graph hashes untouched: only the table changed (version 1 loaded it)."""
    path = write_tiny(tmp_path / "m.bnn")
    header, data = read_parts(path)
    header["fc.scale"]["data_offsets"], header["fc.shift"]["data_offsets"] = (
        header["fc.shift"]["data_offsets"], header["fc.scale"]["data_offsets"])
    write_parts(path, header, data)
    with pytest.raises(ModelFileError, match="tensor table altered or corrupted"):
        engine.load(path)


def test_renamed_tensor_is_caught(tmp_path):
    path = write_tiny(tmp_path / "m.bnn")
    header, data = read_parts(path)
    meta = header["__metadata__"]
    header["fc.bias"] = header.pop("fc.shift")  # graph still names fc.shift: rehash only the data
    meta["tensors_sha256"] = hashlib.sha256(data).hexdigest()
    write_parts(path, header, data)
    with pytest.raises(ModelFileError, match="tensor table altered"):
        engine.load(path)


def write_header_text(path, text: bytes, data=b""):
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


@pytest.mark.parametrize("text, message", [
    (b"[" * 100_000 + b"]" * 100_000, "nests deeper than 32 levels"),
    (b'{"a":' * 50 + b"1" + b"}" * 50, "nests deeper than 32 levels"),
    (b'{"a": ' + b"7" * 5000 + b"}", "not valid UTF-8 JSON"),
    (b'{"a": NaN}', "not valid UTF-8 JSON"),
])
def test_hostile_header_json_raises_model_file_error(tmp_path, text, message):
    """RecursionError and ValueError (integer digit limit) escaped json.loads before."""
    path = write_header_text(tmp_path / "bad.bnn", text)
    with pytest.raises(ModelFileError, match=message):
        engine.load(path)


def test_brackets_inside_strings_do_not_count_as_nesting():
    assert fmt.parse_json(b'{"a": "' + b"[" * 100 + b'\\"]"}', "header") == {"a": "[" * 100 + '"]'}


def test_hostile_graph_json_raises_model_file_error(tmp_path):
    path = write_tiny(tmp_path / "m.bnn")
    header, data = read_parts(path)
    header["__metadata__"]["graph"] = "[" * 5000 + "]" * 5000
    rehash(header, data)
    write_parts(path, header, data)
    with pytest.raises(ModelFileError, match="metadata 'graph' nests deeper than 32 levels"):
        engine.load(path)


def test_bool_bytes_other_than_0_and_1_are_refused():
    """numpy reads byte 2 as True; the compiled kernels and the reference need not agree."""
    blob = bytearray(fmt.encode({"ops": []}, {"flip": np.array([True, False, True])}))
    blob[-1] = 2
    header_end = fmt.header_size(blob)
    header = json.loads(blob[8:header_end])
    rehash(header, bytes(blob[header_end:]))
    text = json.dumps(header).encode()
    with pytest.raises(ModelFileError, match="tensor 'flip': BOOL bytes must be 0 or 1"):
        fmt.decode(struct.pack("<Q", len(text)) + text + bytes(blob[header_end:]))


def test_format_2_files_still_load_and_predict_the_same(tmp_path):
    """A file as format 2 wrote it (version "2", ops without "inputs": a chain) loads as the
    same model: format 3 reads every format-2 graph as a chain."""
    graph, tensors = tiny_model()
    blob = fmt.encode(graph, tensors)
    old = blob.replace(b'"format_version":"3"', b'"format_version":"2"')
    assert old != blob and b'"inputs"' not in old
    (tmp_path / "old.bnn").write_bytes(old)
    loaded = engine.load(tmp_path / "old.bnn")
    assert fmt.read_file(tmp_path / "old.bnn")[2]["format_version"] == "2"
    x = np.linspace(-1, 1, 15, dtype=np.float32).reshape(3, 5)
    np.testing.assert_array_equal(loaded.predict(x), engine.PackedModel(graph, tensors).predict(x))
    assert loaded.save(tmp_path / "new.bnn") == len(blob)  # written back as version 3
    assert fmt.read_file(tmp_path / "new.bnn")[2]["format_version"] == "3"
