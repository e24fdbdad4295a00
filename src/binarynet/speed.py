"""Speed, peak memory and file size of a packed model in the engine against the same network in
float PyTorch: what ``binarynet bench`` / ``export``, the report, the demo and
``benchmarks/bench_engine.py`` print.

The float baseline is :func:`binarynet.export.to_torch` of the packed model (Linear/Conv2d with
the +-1 weights, BatchNorm, Sign: the same function) on normalised float32 input; the engine
takes the uint8 images (its first layer folds the normalisation in). Timing is
:mod:`binarynet.timing` (warm-up, interleaved rounds, medians). Peak memory of each side is
measured in a fresh process (:mod:`binarynet._memory_probe`), so neither inherits the other's
allocations or imports.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import numpy as np

from . import timing
from .errors import BinarynetError


def machine(threads: int) -> str:
    """The line every printed figure comes with: CPU model, clock, usable cores, the threads
    both sides ran on and the engine's kernel backend."""
    from .engine import kernels

    return (f"{timing.cpu_description()}; {threads} thread{'s' if threads != 1 else ''} for "
            f"engine and torch; engine kernels {kernels.get_backend()}")


def normalised(packed, x_u8: np.ndarray) -> np.ndarray:
    """The float32 images torch takes for uint8 images ``x_u8``: the model's folded input
    normalisation, or 2x/255 - 1 for a model without one."""
    if packed.input_scale is None:
        return (x_u8 / 127.5 - 1).astype(np.float32)
    shape = (1, -1) + (1,) * (len(packed.input_shape) - 1)
    return (x_u8 * np.asarray(packed.input_scale).reshape(shape)
            + np.asarray(packed.input_offset).reshape(shape)).astype(np.float32)


def engine_input(packed, x_u8: np.ndarray) -> np.ndarray:
    """What the engine takes: the uint8 images when the model folds a normalisation in, else
    the normalised float images."""
    return x_u8 if packed.input_scale is not None else normalised(packed, x_u8)


def random_images(packed, batch: int, rng) -> np.ndarray:
    """A batch of random uint8 images of the model's input shape."""
    return rng.integers(0, 256, (batch, *packed.input_shape), dtype=np.uint8)


def compare_speed(packed, batch_sizes, threads: int = 2, repeats: int = 15, seed: int = 0) -> list:
    """Engine vs the float torch network on random input at each batch size.

    Returns rows ``{"batch", "engine_ms", "torch_ms", "speedup"}`` (medians of ``repeats``
    interleaved rounds) and the same with ``_best`` (minimum over the rounds: the least
    disturbed by other load on the machine). Sets both libraries to ``threads`` threads.
    """
    import torch

    from .engine import kernels
    from .export import to_torch

    torch.set_num_threads(threads)
    kernels.set_num_threads(threads)
    net = to_torch(packed)
    rng = np.random.default_rng(seed)
    rows = []
    for batch in batch_sizes:
        x_u8 = random_images(packed, batch, rng)
        x_engine, x_torch = engine_input(packed, x_u8), torch.from_numpy(normalised(packed, x_u8))

        def run_torch():
            with torch.inference_mode():
                net(x_torch)

        samples = timing.interleaved_samples(
            {"engine": lambda: packed.predict(x_engine), "torch": run_torch}, repeats)
        e, t = statistics.median(samples["engine"]), statistics.median(samples["torch"])
        e_best, t_best = min(samples["engine"]), min(samples["torch"])
        rows.append({"batch": batch, "engine_ms": 1e3 * e, "torch_ms": 1e3 * t, "speedup": t / e,
                     "engine_best_ms": 1e3 * e_best, "torch_best_ms": 1e3 * t_best,
                     "speedup_best": t_best / e_best})
    return rows


def peak_memory(path, batch: int, threads: int = 2, kinds=("engine", "torch")) -> dict:
    """Peak memory of the engine and of the float torch network (``kinds``: either or both),
    each in a fresh process running :mod:`binarynet._memory_probe` on the packed model file
    ``path``.

    Per side: ``rss_peak_kib`` is the process high-water mark (VmHWM), ``rss_after_imports_kib``
    the mark after importing numpy/binarynet (and torch), so their difference is what loading
    the model and running one batch added; ``python_heap_peak_bytes`` is tracemalloc's peak of
    the Python-visible allocations (numpy arrays included; torch's own allocator is not traced).
    """
    out = {}
    for kind in kinds:
        result = subprocess.run(
            [sys.executable, "-m", "binarynet._memory_probe", os.fspath(path), kind, str(batch),
             str(threads)], capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise BinarynetError(f"memory measurement ({kind}) failed: {last}")
        out[kind] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def format_memory(memory: dict, batch: int) -> str:
    """One line per side: peak RSS, its increment over the imports, traced heap peak."""
    lines = [f"peak memory, batch {batch} (fresh process each):"]
    for kind, m in memory.items():
        added = (m["rss_peak_kib"] - m["rss_after_imports_kib"]) / 1024
        lines.append(f"  {kind:<6} peak RSS {m['rss_peak_kib'] / 1024:8.1f} MiB "
                     f"(+{added:.1f} MiB over imports), Python heap peak "
                     f"{m['python_heap_peak_bytes'] / 2 ** 20:.1f} MiB")
    return "\n".join(lines)


def state_dict_bytes(model) -> int:
    """Size in bytes of ``torch.save(model.state_dict())``: the float model's file."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()
