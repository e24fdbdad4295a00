"""Binary 3x3 convolutions at batch 1 as a percentage of the XOR + popcount peak (issue 12).

Times ``bconv2d_threshold`` (with and without the fused 2x2 max pool) at the paper CIFAR-10
ConvNet's hidden layers and ``bconv2d_transform`` at ReActNet-18's binary 3x3 convs (224 px),
batch 1, on 1 and 2 threads, and prints milliseconds, G bit-MAC/s and the percentage of
``kernels.xor_popcount_probe`` measured on the same threads. Each figure is the best of several
interleaved samples (binarynet.timing): on a shared machine the best is the least disturbed.

    python benchmarks/bench_conv_batch1.py [--threads 1 2] [--repeats 7]
"""
from __future__ import annotations

import argparse

import numpy as np

from binarynet import timing
from binarynet.engine import kernels

# (name, input h = w, in channels, out channels, stride, kind); 3x3 kernels, zero padding 1
SHAPES = [
    ("convnet 128->128 32x32 +pool", 32, 128, 128, 1, "pool"),
    ("convnet 128->256 16x16", 16, 128, 256, 1, "threshold"),
    ("convnet 256->256 16x16 +pool", 16, 256, 256, 1, "pool"),
    ("convnet 256->512 8x8", 8, 256, 512, 1, "threshold"),
    ("convnet 512->512 8x8 +pool", 8, 512, 512, 1, "pool"),
    ("reactnet18 56x56x64", 56, 64, 64, 1, "transform"),
    ("reactnet18 28x28x128", 28, 128, 128, 1, "transform"),
    ("reactnet18 14x14x256", 14, 256, 256, 1, "transform"),
    ("reactnet18 7x7x512", 7, 512, 512, 1, "transform"),
]


def call_of(h, c, o, stride, kind, rng):
    """A no-argument call running one shape's kernel on random operands; its MAC count."""
    x = kernels.pack(rng.choice([-1, 1], size=(1, h, h, c)).astype(np.int8))
    w = kernels.pack(rng.choice([-1, 1], size=(o, 3, 3, c)).astype(np.int8))
    thresh = rng.integers(-20, 20, o).astype(np.int32)
    flip = rng.random(o) < 0.5
    geo = {"stride": (stride, stride), "padding": (1, 1)}
    ho = (h + 2 - 3) // stride + 1
    macs = ho * ho * o * 9 * c
    if kind == "pool":
        return (lambda: kernels.bconv2d_threshold_maxpool(x, w, c, thresh, flip, (2, 2), (2, 2),
                                                          **geo)), macs
    if kind == "threshold":
        return (lambda: kernels.bconv2d_threshold(x, w, c, thresh, flip, **geo)), macs
    scale = rng.standard_normal(o).astype(np.float32)
    shift = rng.standard_normal(o).astype(np.float32)
    res = rng.standard_normal((1, ho, ho, o)).astype(np.float32)
    return (lambda: kernels.bconv2d_transform(
        x, w, c, scale, shift, steps=(("add",),), residual=res, sign_thresh=shift,
        sign_flip=flip, float_out=True, **geo)), macs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", default="", help="run the shapes whose name contains this")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    calls = {name: call_of(h, c, o, s, kind, rng) for name, h, c, o, s, kind in SHAPES
             if args.only in name}
    print(timing.cpu_description())
    for threads in args.threads:
        kernels.set_num_threads(threads)
        macs = kernels.xor_popcount_probe(1 << 20, threads)
        probe = timing.interleaved_samples(
            {"probe": lambda: kernels.xor_popcount_probe(1 << 20, threads)}, repeats=5)
        peak = macs / min(probe["probe"])
        samples = timing.interleaved_samples({n: f for n, (f, _) in calls.items()},
                                             repeats=args.repeats, min_seconds=0.01)
        print(f"{threads} thread(s), peak {peak / 1e9:.0f} G bit-MAC/s")
        for name, (_, macs) in calls.items():
            best = min(samples[name])
            print(f"  {name:32s} {best * 1e3:7.3f} ms  {macs / best / 1e9:6.0f} G/s "
                  f"{100 * macs / best / peak:5.1f}% of peak")


if __name__ == "__main__":
    main()
