"""Child process of :func:`binarynet.speed.peak_memory`: load a packed model, run one batch in
the engine or in float torch, print the memory high-water marks as one JSON line.

    python -m binarynet._memory_probe MODEL.bnn engine|torch BATCH THREADS

A fresh process per side, so that the figures hold only what that side imported and allocated
(the engine side never imports torch).
"""
from __future__ import annotations

import json
import resource
import sys
import tracemalloc


def high_water_kib() -> int:
    """This process's peak RSS in KiB. VmHWM, because ru_maxrss may carry the mark of the
    parent that forked this process."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(path: str, kind: str, batch: int, threads: int) -> dict:
    """Peak RSS after the imports and after one batch of ``kind`` ("engine" or "torch")."""
    import numpy as np

    from binarynet import engine
    from binarynet.engine import kernels
    from binarynet.speed import engine_input, normalised, random_images

    if kind not in ("engine", "torch"):
        raise ValueError(f"kind must be 'engine' or 'torch', got {kind!r}")
    if kind == "torch":
        import torch

        from binarynet.export import to_torch
        torch.set_num_threads(threads)
    kernels.set_num_threads(threads)
    base = high_water_kib()
    tracemalloc.start()
    model = engine.load(path)
    x_u8 = random_images(model, batch, np.random.default_rng(0))
    if kind == "torch":
        net = to_torch(model)
        x_f = normalised(model, x_u8)
        del model, x_u8
        with torch.inference_mode():
            net(torch.from_numpy(x_f))
    else:
        model.predict(engine_input(model, x_u8))
    python_peak = tracemalloc.get_traced_memory()[1]
    return {"rss_peak_kib": high_water_kib(), "rss_after_imports_kib": base,
            "python_heap_peak_bytes": python_peak}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 4:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    path, kind, batch, threads = argv[0], argv[1], int(argv[2]), int(argv[3])
    print(json.dumps(measure(path, kind, batch, threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
