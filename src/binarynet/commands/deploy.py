"""``binarynet export``, ``binarynet predict`` and ``binarynet bench`` (thin layer over
binarynet.export and binarynet.engine), plus the speed / peak-memory measurement they share with
``benchmarks/bench_engine.py``.
"""
from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from ..errors import BinarynetError, DataError


def register(subparsers) -> None:
    """Add the export / predict / bench sub-commands to the ``binarynet`` parser."""
    p = subparsers.add_parser(
        "export", help="turn a training checkpoint into a packed 1-bit model file (.bnn)",
        description="Export a checkpoint (or a run folder: its best.pt) to the packed model file "
        "the torch-free engine runs: 1-bit weights, batch norm + sign folded into integer "
        "thresholds, the input normalisation folded into the first layer.")
    p.add_argument("checkpoint", help="checkpoint file, or a run folder (uses its best.pt)")
    p.add_argument("-o", "--output", required=True, help="packed model file to write (.bnn)")
    p.add_argument("--first-layer", choices=("bitplane", "int"), default="bitplane",
                   help="uint8 first layer: 8 popcount bit planes (paper §1.6) or an integer "
                   "product (same result)")
    p.set_defaults(func=run_export)

    p = subparsers.add_parser(
        "predict", help="run a packed model on a dataset split or .npz file and print accuracy",
        description="Predict with the packed engine. --data is a dataset name (mnist, "
        "fashion-mnist, cifar10, svhn; uint8 images) or a .npz file holding 'images' (uint8 "
        "or normalised float, shaped like the model input) and 'labels'.")
    p.add_argument("model", help="packed model file (.bnn)")
    p.add_argument("--data", required=True, metavar="NAME|FILE.npz")
    p.add_argument("--split", default="test", help="dataset split (default: test)")
    p.add_argument("--data-dir", help="dataset folder (default: $BINARYNET_DATA, then the user cache)")
    p.add_argument("--download", action="store_true", help="download missing dataset files first")
    p.add_argument("--batch-size", type=int, default=None, help="samples per engine call")
    p.add_argument("--threads", type=int, default=None, help="engine threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=run_predict)

    p = subparsers.add_parser(
        "bench", help="engine vs float PyTorch: speed and peak memory of a packed model",
        description="Time the packed engine (uint8 input, first layer included) against the same "
        "network in float32 PyTorch (Linear/Conv2d with the +-1 weights, BatchNorm, Sign; see "
        "binarynet.export.to_torch), interleaved repeats, median; and each one's peak memory in "
        "a fresh process.")
    p.add_argument("model", help="packed model file (.bnn)")
    p.add_argument("--batch-sizes", default="1,64,256", help="comma-separated (default 1,64,256)")
    p.add_argument("--threads", type=int, default=2, help="threads of both (default 2)")
    p.add_argument("--repeats", type=int, default=15, help="interleaved timing rounds (default 15)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=run_bench)


# -- export -------------------------------------------------------------------------------------
def run_export(args) -> int:
    """``binarynet export``: checkpoint -> .bnn."""
    import torch

    from ..export import export
    from ..train.checkpoint import load_model

    model, recipe, (scale, offset) = load_model(args.checkpoint)
    example = torch.randint(0, 256, (64, *_image_shape(recipe)), dtype=torch.uint8,
                            generator=torch.Generator().manual_seed(0))
    packed = export(model, example, input_scale=scale, input_offset=offset,
                    first_layer=args.first_layer)
    size = packed.save(args.output)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    print(f"exported {args.checkpoint} ({recipe.name}) -> {args.output}: {size} bytes, "
          f"{buffer.tell() / size:.1f}x smaller than the float32 state_dict ({buffer.tell()} bytes)")
    print(packed.summary())
    return 0


def _image_shape(recipe) -> tuple:
    from .. import data
    if recipe.dataset == "synthetic":
        from ..train import synthetic
        images, _ = synthetic.generate("test", num_train=1, num_val=1, num_test=1, seed=recipe.seed)
        return tuple(images.shape[1:])
    return tuple(data.info(recipe.dataset).image_shape)


# -- predict ------------------------------------------------------------------------------------
def load_labelled(spec: str, split: str, data_dir=None, download=False):
    """(images, labels) numpy arrays of a dataset split (uint8) or of a .npz file."""
    if spec.endswith(".npz") or os.path.isfile(spec):
        try:
            with np.load(spec, allow_pickle=False) as f:
                keys = set(f.files)
                image_key = next((k for k in ("images", "x") if k in keys), None)
                label_key = next((k for k in ("labels", "y") if k in keys), None)
                if image_key is None or label_key is None:
                    raise DataError(f"{spec}: expected arrays 'images' and 'labels' (or 'x' and "
                                    f"'y'), found {sorted(keys)}")
                return f[image_key], f[label_key]
        except (OSError, ValueError) as exc:
            raise DataError(f"{spec}: cannot read as .npz ({exc})") from None
    from .. import data
    dataset = data.load(spec, split, data_dir=data_dir, download=download)
    return dataset.images.numpy(), dataset.labels.numpy()


def run_predict(args) -> int:
    """``binarynet predict``: accuracy of a packed model."""
    from .. import engine
    from ..engine import kernels

    model = engine.load(args.model)
    images, labels = load_labelled(args.data, args.split, args.data_dir, args.download)
    if images.shape[1:] != model.input_shape:
        raise DataError(f"{args.data}: images of shape {images.shape[1:]}, the model takes "
                        f"{model.input_shape}")
    if labels.shape != (len(images),):
        raise DataError(f"{args.data}: {len(labels)} labels for {len(images)} images")
    if args.threads:
        kernels.set_num_threads(args.threads)
    try:
        start = time.perf_counter()
        logits = model.predict(images, batch_size=args.batch_size)
        seconds = time.perf_counter() - start
    except (TypeError, ValueError) as exc:
        raise BinarynetError(str(exc)) from None
    wrong = int(np.sum(logits.argmax(1) != labels))
    result = {"model": args.model, "data": args.data, "split": args.split, "samples": len(labels),
              "accuracy": 1 - wrong / len(labels), "wrong": wrong, "seconds": seconds,
              "input": str(images.dtype)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model} on {args.data} ({args.split if not args.data.endswith('.npz') else 'file'}"
              f", {images.dtype} input): accuracy {100 * result['accuracy']:.2f}% ({wrong} of "
              f"{len(labels)} wrong) in {seconds:.2f} s ({len(labels) / seconds:.0f} images/s)")
    return 0


# -- bench --------------------------------------------------------------------------------------
def _median_time(fn, budget: float = 0.02) -> float:
    """Seconds per call of fn(), averaged over enough calls to fill ``budget`` seconds."""
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    calls = max(1, int(budget / max(once, 1e-6)))
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def compare_speed(packed, batch_sizes, threads: int = 2, repeats: int = 15, seed: int = 0) -> list:
    """Engine (uint8 input if the model has a normalisation, else float) vs the float torch network
    of :func:`binarynet.export.to_torch` on random input; interleaved repeats, medians.

    Returns rows ``{"batch", "engine_ms", "torch_ms", "speedup"}`` (medians) and the same with
    ``_best`` (minimum over the rounds: the least disturbed by other load on the machine).
    """
    import torch

    from ..engine import kernels
    from ..export import to_torch

    torch.set_num_threads(threads)
    kernels.set_num_threads(threads)
    net = to_torch(packed)
    rng = np.random.default_rng(seed)
    rows = []
    for batch in batch_sizes:
        x_u8 = rng.integers(0, 256, (batch, *packed.input_shape), dtype=np.uint8)
        if packed.input_scale is not None:
            shape = (1, -1) + (1,) * (len(packed.input_shape) - 1)
            x_f = (x_u8 * np.asarray(packed.input_scale).reshape(shape)
                   + np.asarray(packed.input_offset).reshape(shape)).astype(np.float32)
            x_engine = x_u8
        else:
            x_f = (x_u8 / 127.5 - 1).astype(np.float32)
            x_engine = x_f
        x_torch = torch.from_numpy(x_f)

        def run_torch():
            with torch.inference_mode():
                net(x_torch)

        engine_times, torch_times = [], []
        for _ in range(repeats):
            engine_times.append(_median_time(lambda: packed.predict(x_engine)))
            torch_times.append(_median_time(run_torch))
        e, t = statistics.median(engine_times), statistics.median(torch_times)
        e_best, t_best = min(engine_times), min(torch_times)
        rows.append({"batch": batch, "engine_ms": 1e3 * e, "torch_ms": 1e3 * t, "speedup": t / e,
                     "engine_best_ms": 1e3 * e_best, "torch_best_ms": 1e3 * t_best,
                     "speedup_best": t_best / e_best})
    return rows


_MEMORY_CHILD = r"""
import json, resource, sys, tracemalloc
def high_water_kib():
    # VmHWM is this process's own peak RSS; ru_maxrss may carry the forking parent's mark.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
path, kind, batch, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
import numpy as np
from binarynet import engine
from binarynet.engine import kernels
if kind == "torch":
    import torch
    from binarynet.export import to_torch
    torch.set_num_threads(threads)
kernels.set_num_threads(threads)
base = high_water_kib()
tracemalloc.start()
model = engine.load(path)
x = np.random.default_rng(0).integers(0, 256, (batch, *model.input_shape), dtype=np.uint8)
if kind == "torch" or model.input_scale is None:
    shape = (1, -1) + (1,) * (len(model.input_shape) - 1)
    scale = np.asarray(model.input_scale or [1 / 127.5]).reshape(shape)
    offset = np.asarray(model.input_offset or [-1.0]).reshape(shape)
    x = (x * scale + offset).astype(np.float32)
if kind == "torch":
    net = to_torch(model)
    del model
    with torch.inference_mode():
        net(torch.from_numpy(x))
else:
    model.predict(x)
python_peak = tracemalloc.get_traced_memory()[1]
peak = high_water_kib()
print(json.dumps({"rss_peak_kib": peak, "rss_after_imports_kib": base,
                  "python_heap_peak_bytes": python_peak}))
"""


def peak_memory(path, batch: int, threads: int = 2) -> dict:
    """Peak memory of the engine and of the float torch network, each in a fresh process.

    ``rss_peak_kib`` is the process high-water mark (VmHWM), ``rss_after_imports_kib`` the
    mark after importing numpy/binarynet (and torch), so their difference is what loading the
    model and running one batch added; ``python_heap_peak_bytes`` is tracemalloc's peak of the
    Python-visible allocations (numpy arrays included; torch's own allocator is not traced).
    """
    out = {}
    for kind in ("engine", "torch"):
        result = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, os.fspath(path), kind,
                                 str(batch), str(threads)], capture_output=True, text=True,
                                timeout=600)
        if result.returncode != 0:
            raise BinarynetError(f"memory measurement ({kind}) failed: "
                                 f"{result.stderr.strip().splitlines()[-1:]}")
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


def run_bench(args) -> int:
    """``binarynet bench``: engine vs float torch speed and peak memory."""
    from .. import engine
    from ..engine import kernels

    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        batch_sizes = []
    if not batch_sizes or min(batch_sizes) < 1:
        raise BinarynetError(f"--batch-sizes expects positive integers like 1,64,256, got "
                             f"{args.batch_sizes!r}")
    model = engine.load(args.model)
    rows = compare_speed(model, batch_sizes, threads=args.threads, repeats=args.repeats)
    memory = None if args.no_memory else peak_memory(args.model, max(batch_sizes), args.threads)
    if args.json:
        print(json.dumps({"model": args.model, "threads": args.threads, "speed": rows,
                          "memory": memory, "cpu": kernels.cpu_features()}))
        return 0
    print(f"{args.model}: engine ({kernels.cpu_features().get('backend')}, uint8 input) vs float32 "
          f"PyTorch, {args.threads} threads, median of {args.repeats} interleaved rounds")
    print(f"{'batch':>6} {'engine ms':>11} {'torch ms':>11} {'speed-up':>9}   (best of rounds: "
          "engine ms, torch ms, speed-up)")
    for row in rows:
        print(f"{row['batch']:>6} {row['engine_ms']:>11.3f} {row['torch_ms']:>11.3f} "
              f"{row['speedup']:>8.1f}x   ({row['engine_best_ms']:.3f}, {row['torch_best_ms']:.3f}, "
              f"{row['speedup_best']:.1f}x)")
    if memory:
        print(format_memory(memory, max(batch_sizes)))
    return 0
