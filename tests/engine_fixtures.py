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
