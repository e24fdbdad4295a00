"""The C core's one ISA dispatch table (csrc/dispatch.c): each row, forced by set_backend or by
BINARYNET_KERNEL, runs every op bit-identically to the numpy reference, and a bad choice is a
one-line BinarynetError raised on first use (where the CLI prints it), not at import."""
import os
import subprocess
import sys

import numpy as np
import pytest

from binarynet.engine import kernel_backend, kernels, reference
from binarynet.errors import BinarynetError

BACKENDS = kernels.available_backends()
OPS = {"tiles", "pack", "planes", "threshold", "int_gemm", "transform", "probe",
       "first_dense_float", "conv2d_float", "pool_float"}
VALID = "['avx2', 'avx512', 'portable']"


def every_op(ops, seed=0) -> dict:
    """Every op of ``ops`` (kernels or reference) on one set of inputs, at sizes that reach the
    GEMV, wide-tile and AVX-512 panel paths, K tails, conv borders, and all pad modes."""
    rng = np.random.default_rng(seed)

    def pm1(*shape):
        return rng.choice(np.array([-1.0, 1.0]), size=shape)

    k, n, c, o = 200, 70, 70, 67
    out = {}
    for dtype in [np.float32, np.float64, np.int8, np.uint8, np.float16]:
        out[f"pack {np.dtype(dtype)}"] = ops.pack((rng.standard_normal((5, 131)) * 3).astype(dtype))
    a, w = reference.pack(pm1(40, k)), reference.pack(pm1(n, k))
    out["unpack"] = ops.unpack(a, k)
    thresh = rng.integers(-k, k + 1, n).astype(np.int32)
    flip = rng.random(n) < 0.5
    for m in [1, 3, 40]:  # GEMV, wide tiles, panel path (>= 32 rows)
        out[f"bgemm m={m}"] = ops.bgemm(a[:m], w, k)
        out[f"bgemm_threshold m={m}"] = ops.bgemm_threshold(a[:m], w, k, thresh, flip)
    x, wc = reference.pack(pm1(2, 7, 9, c)), reference.pack(pm1(o, 3, 3, c))
    ct = rng.integers(-30, 31, o).astype(np.int32)
    cf = rng.random(o) < 0.5
    for mode in ["zero", "one", "minus_one"]:
        args = (1, 1, 1, mode)
        out[f"bconv2d {mode}"] = ops.bconv2d(x, wc, c, *args)
        out[f"bconv2d_threshold {mode}"] = ops.bconv2d_threshold(x, wc, c, ct, cf, *args)
        out[f"bconv2d_threshold_maxpool {mode}"] = ops.bconv2d_threshold_maxpool(
            x, wc, c, ct, cf, 2, 2, *args)
    out["bmaxpool2d"] = ops.bmaxpool2d(x, 2, 2, rng.random(c) < 0.5, c)
    out["maxpool2d_int"] = ops.maxpool2d_int(rng.integers(-99, 99, (2, 7, 9, 5), dtype=np.int32), 3, 2)
    x_u8 = rng.integers(0, 256, (9, 27), dtype=np.uint8)  # 8 * 9 plane rows: panel path
    w_u8 = reference.pack(pm1(n, 27))
    out["bitplane_gemm"] = ops.bitplane_gemm(x_u8, w_u8, 27)
    out["int_gemm"] = ops.int_gemm(x_u8, w_u8, 27)
    f32 = rng.standard_normal((4, n)).astype(np.float32)
    steps = (("relu",), ("prelu",) + tuple(f32[:3]), ("add",))
    for m in [1, 3, 40]:
        out[f"bgemm_transform m={m}"] = ops.bgemm_transform(
            a[:m], w, k, f32[0], f32[1], steps=steps, residual=np.ones((m, n), np.float32),
            sign_thresh=f32[2], sign_flip=flip)
    out["bconv2d_transform"] = ops.bconv2d_transform(
        x, wc, c, f32[0, :o], f32[1, :o], steps=steps[:1], sign_thresh=f32[3, :o], padding=1)
    out["sign_pack"] = ops.sign_pack(f32, f32[0], flip)
    x_int = rng.integers(-99, 100, (5, 27)).astype(np.float32)  # exact sums on every row
    out["first_dense_float"] = ops.first_dense_float(x_int, w_u8, 27)
    sums = rng.integers(-9, 10, (3, n), dtype=np.int32)
    out["threshold_pack"] = ops.threshold_pack(sums, rng.integers(-9, 10, n).astype(np.int32), flip)
    return out


def assert_same(got: dict, want: dict):
    assert got.keys() == want.keys()
    for name in want:
        pairs = zip(got[name], want[name]) if isinstance(want[name], tuple) else [(got[name], want[name])]
        for g, w in pairs:  # the transforms return (y, bits)
            assert g.dtype == w.dtype, name
            np.testing.assert_array_equal(g, w, err_msg=name)


def test_one_table_names_a_kernel_of_every_op_for_every_row():
    table = kernels.kernel_table()
    assert list(table) == BACKENDS and "portable" in table
    for row in table.values():
        assert set(row) == OPS and all(isinstance(v, str) and v for v in row.values())
    assert set(table["portable"].values()) <= {"portable", "popcnt"}  # plain C only
    if "avx2" in table:
        assert not any("avx512" in variant for variant in table["avx2"].values())
    if "avx512" in table:
        assert table["avx512"]["tiles"] == "avx512vpopcntdq"


def test_every_row_runs_every_op_like_the_reference():
    want = every_op(reference)
    previous = kernels.get_backend()
    try:
        for name in BACKENDS:
            kernels.set_backend(name)
            assert kernels.get_backend() == name
            assert_same(every_op(kernels), want)
    finally:
        kernels.set_backend(previous)


def _python(code, **env):
    full_env = dict(os.environ, **env)
    full_env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(__file__)] + [p for p in [full_env.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("name", BACKENDS)
def test_environment_variable_selects_the_row_for_every_op(name):
    code = ("from binarynet.engine import kernels, reference\n"
            "from test_engine_kernels_dispatch import every_op, assert_same\n"
            "assert_same(every_op(kernels), every_op(reference))\n"
            "print(kernels.get_backend(), kernels.cpu_features()['backend'])")
    run = _python(code, BINARYNET_KERNEL=f" {name.upper()} ")  # case and spaces do not matter
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [name, name]


def test_unknown_kernel_is_a_one_line_error_on_first_use_not_at_import():
    code = ("import numpy as np\n"
            "from binarynet import cli\n"  # the CLI imports before its error handler runs
            "from binarynet.engine import kernels\n"
            "from binarynet.errors import BinarynetError\n"
            "for call in [lambda: kernels.pack(np.ones(3)), kernels.get_backend]:\n"
            "    try:\n"
            "        call()\n"
            "    except BinarynetError as exc:\n"
            "        print(type(exc).__name__, isinstance(exc, ValueError), exc)\n")
    run = _python(code, BINARYNET_KERNEL="neon")
    assert run.returncode == 0, run.stderr
    line = f"KernelChoiceError True BINARYNET_KERNEL must be one of {VALID}, got 'neon'"
    assert run.stdout.splitlines() == [line, line]  # raised again on every use, never ignored


def test_a_backend_the_cpu_lacks_is_a_one_line_error(monkeypatch):
    core = kernels._core
    monkeypatch.setattr(core, "backend_supported", lambda code: code == core.PORTABLE)
    monkeypatch.setattr(kernel_backend, "_environment_read", False)
    monkeypatch.setenv("BINARYNET_KERNEL", "avx512")
    with pytest.raises(BinarynetError, match=r"^BINARYNET_KERNEL 'avx512': this CPU cannot run "
                       r"it \(available: \['portable'\]\)$"):
        kernels.bgemm(reference.pack(np.ones((1, 5))), reference.pack(np.ones((1, 5))), 5)
    with pytest.raises(kernels.KernelChoiceError, match=r"^set_backend: backend 'avx2': this "
                       r"CPU cannot run it"):
        kernels.set_backend("avx2")
    with pytest.raises(ValueError, match=r"^set_backend: backend must be one of " + VALID.replace(
            "[", r"\[").replace("]", r"\]") + ", got 'sse'$"):
        kernels.set_backend("sse")


def test_cli_prints_a_bad_kernel_choice_as_one_line(tmp_path):
    torch = pytest.importorskip("torch")
    import binarynet as bn
    from binarynet.export import export

    torch.manual_seed(0)
    model = bn.models.get("mnist_mlp", hidden=16, depth=1, in_shape=(1, 4, 4)).eval()
    x = torch.randint(0, 256, (5, 1, 4, 4), dtype=torch.uint8)
    export(model, x, input_scale=2 / 255, input_offset=-1.0).save(tmp_path / "m.bnn")
    np.savez(tmp_path / "d.npz", images=x.numpy(), labels=np.zeros(5, np.int64))
    code = "import sys; from binarynet.cli import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run(
        [sys.executable, "-c", code, "predict", str(tmp_path / "m.bnn"), "--data",
         str(tmp_path / "d.npz")], env=dict(os.environ, BINARYNET_KERNEL="foo"),
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr == (f"binarynet predict: error: BINARYNET_KERNEL must be one of {VALID}, "
                          "got 'foo'\n")


def test_xor_popcount_probe_counts_its_bit_macs_on_every_row():
    """The peak probe returns what it did: threads x iterations x the bits of one step of its
    row's chains (12 zmm = 6144 bits with AVX-512 VPOPCNTDQ, else 6 scalar words = 384)."""
    per_step = {"avx512vpopcntdq": 12 * 512, "popcnt": 6 * 64, "portable": 6 * 64}
    table = kernels.kernel_table()
    previous = kernels.get_backend()
    try:
        for name in BACKENDS:
            kernels.set_backend(name)
            for threads in (1, 3):
                assert kernels.xor_popcount_probe(1000, threads) == (
                    1000 * threads * per_step[table[name]["probe"]])
    finally:
        kernels.set_backend(previous)
    for bad in [0, -1, 1.5, True]:
        with pytest.raises(ValueError, match=r"^xor_popcount_probe: iterations must be a positive"):
            kernels.xor_popcount_probe(bad, 1)
    with pytest.raises(ValueError, match=r"^xor_popcount_probe: threads must be in \[1, 256\]"):
        kernels.xor_popcount_probe(1, 257)
