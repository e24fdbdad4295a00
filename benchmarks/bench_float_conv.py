"""The real-valued convolutions (kernels.conv2d_float, and conv2d_float_sign: the float first
conv) on the shapes of BNNs' real layers, as a percentage of this CPU's float32 FMA peak (the
real convs sum in float32; the float first conv's float64 fallback runs at half that rate).

The peak is the in-register multiply-add probe (``kernels.fma_probe``: 12 zmm chains of
vfmadd231ps on the AVX-512 row) timed in the same interleaved rounds as the shapes
(binarynet.timing: medians), on the same threads. Shapes: ReActNet-18's 7x7 stem, QuickNet
(small)'s stem, depthwise and 1x1 transition convs and dense head at 224x224, ReActNet-18's 1x1
shortcuts, and the paper ConvNet's float first conv (bits out). Rates are multiply-adds per
second (a +-1 weight's too).

    python benchmarks/bench_float_conv.py                 # 1 and 2 threads
    python benchmarks/bench_float_conv.py --threads 2 --only stem
"""
from __future__ import annotations

import argparse

import numpy as np

from binarynet import timing
from binarynet.engine import kernels

PROBE_ITERATIONS = 200_000
# (label, batch, side, in, out, kernel, stride, padding, groups)
SHAPES = [
    ("ReActNet-18 stem 7x7/2 3->64", 1, 224, 3, 64, 7, 2, 3, 1),
    ("ReActNet-18 stem, batch 8", 8, 224, 3, 64, 7, 2, 3, 1),
    ("QuickNet stem 3x3/2 3->8", 1, 224, 3, 8, 3, 2, 1, 1),
    ("QuickNet dw 3x3/2 112x112x8", 1, 112, 8, 8, 3, 2, 1, 8),
    ("QuickNet 1x1 56x56 8->32", 1, 56, 8, 32, 1, 1, 0, 1),
    ("QuickNet dw 3x3/2 55x55x32", 1, 55, 32, 32, 3, 2, 1, 32),
    ("QuickNet 1x1 28x28 32->64", 1, 28, 32, 64, 1, 1, 0, 1),
    ("QuickNet dw 3x3/2 27x27x64", 1, 27, 64, 64, 3, 2, 1, 64),
    ("QuickNet dw 3x3/2 13x13x256", 1, 13, 256, 256, 3, 2, 1, 256),
    ("QuickNet 1x1 14x14 64->256", 1, 14, 64, 256, 1, 1, 0, 1),
    ("QuickNet 1x1 7x7 256->512", 1, 7, 256, 512, 1, 1, 0, 1),
    ("dense 512->1000", 1, 1, 512, 1000, 1, 1, 0, 1),
    ("ReActNet-18 1x1 28x28 64->128", 1, 28, 64, 128, 1, 1, 0, 1),
]
FIRST_CONV = [  # the paper ConvNet's first conv, float input (NCHW), bits out
    ("ConvNet first conv (sign) b1", 1, 32, 3, 128, 3, 1, 1, 1),
    ("ConvNet first conv (sign) b64", 64, 32, 3, 128, 3, 1, 1, 1),
]


def method(rng, shape):
    """(the call, its multiply-adds) of one shape, operands laid out once."""
    label, n, side, c, o, k, s, p, g = shape
    ho = (side + 2 * p - k) // s + 1
    macs = n * ho * ho * o * k * k * (c // g)
    weight = rng.standard_normal((o, k, k, c // g)).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    if shape in FIRST_CONV:
        x = rng.standard_normal((n, c, side, side)).astype(np.float32)
        weight = np.sign(weight) + (weight == 0)
        panels = kernels.conv2d_float_sign_panels(weight)
        thresh, flip = rng.standard_normal(o).astype(np.float32), rng.random(o) < 0.5
        return (lambda: kernels.conv2d_float_sign(x, weight, bias, thresh, flip, (s, s), (p, p),
                                                  nchw=True, panels=panels)), macs
    x = rng.standard_normal((n, side, side, c)).astype(np.float32)
    panels = kernels.conv2d_float_panels(weight, g)
    return (lambda: kernels.conv2d_float(x, weight, bias, (s, s), (p, p), (1, 1), g,
                                         panels=panels)), macs


def bench(threads, shapes, repeats, min_seconds):
    kernels.set_num_threads(threads)
    rng = np.random.default_rng(0)
    calls = {shape[0]: method(rng, shape) for shape in shapes}
    contenders = {label: call for label, (call, _) in calls.items()}
    contenders["probe"] = lambda: kernels.fma_probe(PROBE_ITERATIONS, threads)
    seconds = timing.median_seconds(contenders, repeats, min_seconds)
    peak = kernels.fma_probe(PROBE_ITERATIONS, threads) / seconds.pop("probe")
    print(f"{threads} thread(s); float32 FMA peak measured in the same rounds: "
          f"{peak / 1e9:.1f} G multiply-add/s ({kernels.kernel_table()[kernels.get_backend()]['conv2d_float']})")
    for label, t in seconds.items():
        macs = calls[label][1]
        print(f"{label:>32} {1e3 * t:9.3f} ms {macs / t / 1e9:7.2f} G/s {100 * macs / t / peak:5.0f}%")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--only", default="", help="shapes whose label contains this text")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-seconds", type=float, default=0.03)
    args = parser.parse_args(argv)
    shapes = [s for s in SHAPES + FIRST_CONV if args.only.lower() in s[0].lower()]
    print(timing.cpu_description())
    for threads in args.threads:
        bench(threads, shapes, args.repeats, args.min_seconds)


if __name__ == "__main__":
    main()
