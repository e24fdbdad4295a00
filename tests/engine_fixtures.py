"""Helpers shared by the engine's test files (imported as a plain module, like gpu_setup)."""
import os
import subprocess
import sys
import textwrap

import numpy as np

# Put first in a script: any import of torch in it fails (the engine must not need it).
BLOCK_TORCH = textwrap.dedent("""
    import sys
    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
    sys.meta_path.insert(0, NoTorch())
""")


def run_without_torch(script: str) -> subprocess.CompletedProcess:
    """Run ``script`` (dedented) in a fresh interpreter where importing torch fails, with this
    process's import path, so it imports the binarynet under test."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(script)],
                          capture_output=True, text=True, timeout=120, env=env)


def predict_without_torch(tmp_path, model, x, then: str = "") -> subprocess.CompletedProcess:
    """Save ``model`` and ``x``; in a torch-free interpreter (:func:`run_without_torch`) load
    the model, check its predictions equal this process's, that no torch module got imported,
    then run ``then`` (dedented script lines) and print ``ok: torch-free``."""
    model.save(tmp_path / "m.bnn")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "want.npy", model.predict(x))
    return run_without_torch(textwrap.dedent(f"""
        import numpy as np
        from binarynet import engine
        model = engine.load({str(tmp_path / "m.bnn")!r})
        got = model.predict(np.load({str(tmp_path / "x.npy")!r}))
        np.testing.assert_array_equal(got, np.load({str(tmp_path / "want.npy")!r}))
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
    """) + textwrap.dedent(then) + 'print("ok: torch-free")\n')


def assert_same_bits(got, want, nan_payloads=True):
    """``got`` equals ``want`` bit for bit: an array, or a tuple of arrays or None (a fused
    kernel's (y, bits)). Floats compare by their bits, so -0.0 is not 0.0; a NaN must sit where
    the wanted NaN sits, with the same payload only when ``nan_payloads`` (a sum's NaN takes
    either operand's, as the compiler orders the addition)."""
    got, want = (got, want) if isinstance(want, tuple) else ((got,), (want,))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if w is None:
            assert g is None
            continue
        assert g.dtype == w.dtype and g.shape == w.shape
        if w.dtype.kind != "f":
            np.testing.assert_array_equal(g, w)
            continue
        bits = np.dtype(f"u{w.dtype.itemsize}")
        g_bits, w_bits = g.view(bits), w.view(bits)
        if not nan_payloads:
            np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
            keep = ~np.isnan(w)
            g_bits, w_bits = g_bits[keep], w_bits[keep]
        np.testing.assert_array_equal(g_bits, w_bits)


def tiny_dense_model():
    """+-1 input of 5 features -> 3 logits: logits = scale * (x_b . w_b) + shift."""
    graph = {
        "input": {"shape": [5], "scale": None, "offset": None},
        "num_classes": 3,
        "ops": [
            {"op": "binarize_input", "name": "in", "tensors": {}},
            {"op": "dense_logits", "name": "fc", "in_features": 5, "out_features": 3,
             "tensors": {"weight": "fc.weight", "scale": "fc.scale", "shift": "fc.shift"}},
        ],
    }
    # rows: +++++ / -+-+- / ++---  (bit i = element i, LSB first)
    weight = np.array([[0b11111], [0b01010], [0b00011]], dtype=np.uint64)
    tensors = {"fc.weight": weight, "fc.scale": np.array([1.0, 0.5, -2.0]),
               "fc.shift": np.array([0.0, 1.0, 0.25])}
    return graph, tensors


def pm1(rng, shape):
    """Random +-1 float64 array."""
    return rng.choice(np.array([-1.0, 1.0]), size=shape)
