"""Binary GEMM vs torch fp32 matmul, both on the same number of CPU threads (issue 4).

For each M x K x N it times ``torch.matmul`` of fp32 (M, K) x (K, N), our ``bgemm`` (int32
out) and ``bgemm_threshold`` (fused BN + sign, packed bits out) on pre-packed operands, and
prints GMAC/s (M*K*N multiply-accumulates per second; a binary MAC is one bit of XOR +
popcount) and the speed-up over torch. A last row runs the conv shape as a real 3x3 convolution
(torch conv2d vs bconv2d / bconv2d_threshold). Timing is binarynet.timing: methods interleaved
within every repeat, each figure the median over repeats, so load from other processes on a
shared machine hits all of them alike. The header names the CPU (model, clock, cores) and the
threads the figures come from, and the in-register XOR + popcount peak
(``kernels.xor_popcount_probe``) measured on the same threads, of which each rate is a percentage.

Before timing, the full output of every binary method is checked against torch's fp32 product
of the same +-1 operands (exact: |sums| <= K < 2**24), computed by the very call that is timed
(same shape, same threads, same code path): a kernel that skipped work would otherwise show up
as a rate above the machine's peak.

    python benchmarks/bench_bgemm.py                # the issue-4 shapes, 2 threads
    python benchmarks/bench_bgemm.py --quick        # small shapes, a few seconds
    python benchmarks/bench_bgemm.py --first-layer  # uint8 first layers and threshold_pack (ms)
    python benchmarks/bench_bgemm.py --convnet --batch 64  # the paper ConvNet's layers, % of peak
"""
from __future__ import annotations

import argparse

import numpy as np

from binarynet import threads as thread_policy

thread_policy.set_passive_wait_policy()  # before torch loads OpenMP: its idle threads sleep

import torch  # noqa: E402

from binarynet import timing  # noqa: E402
from binarynet.engine import kernels, reference  # noqa: E402

SHAPES = [  # (M, K, N, target speed-up over torch fp32, or None)
    (1, 4096, 4096, 50.0),
    (64, 4096, 4096, 12.0),
    (256, 4096, 4096, 12.0),
    (4096, 4096, 4096, 6.0),
    (8192, 2304, 256, None),  # conv im2col shape: 3x3x256 -> 256 channels, 8 x 32 x 32 pixels
]
QUICK_SHAPES = [(1, 1024, 1024, None), (64, 1024, 1024, None), (512, 1152, 128, None)]
CONV = (8, 32, 32, 256, 256)  # batch, height, width, in channels, out channels; 3x3, padding 1
QUICK_CONV = (2, 16, 16, 128, 128)


def signs(x: torch.Tensor) -> torch.Tensor:
    """+-1 float32 of x (sign(0) = +1), the values the packed bits stand for."""
    return torch.where(x >= 0, 1.0, -1.0)


def check_exact(methods: dict, expected: dict) -> None:
    """Every method's output (one call, as timed) equals the expected array, in full."""
    for name, want in expected.items():
        got = methods[name]()
        if not np.array_equal(got, want):
            wrong = int(np.sum(got != want)) if got.shape == want.shape else "shape"
            raise SystemExit(f"bench_bgemm: {name} disagrees with the fp32 reference "
                             f"({wrong} of {want.size} outputs differ): its timing would be void")


def bench_shape(m, k, n, repeats, min_seconds, rng):
    a_f = torch.from_numpy(rng.standard_normal((m, k), dtype=np.float32))
    w_f = torch.from_numpy(rng.standard_normal((n, k), dtype=np.float32))
    w_t = w_f.t().contiguous()  # torch gets its preferred (K, N) layout
    a = kernels.pack(a_f.numpy())
    w = kernels.pack(w_f.numpy())
    thresh = rng.integers(-64, 65, n).astype(np.int32)
    flip = rng.random(n) < 0.5

    methods = {
        "torch": lambda: torch.matmul(a_f, w_t),
        "bgemm": lambda: kernels.bgemm(a, w, k),
        "bgemm_threshold": lambda: kernels.bgemm_threshold(a, w, k, thresh, flip),
    }
    dots = (signs(a_f) @ signs(w_t)).numpy().astype(np.int32)
    check_exact(methods, {"bgemm": dots, "bgemm_threshold": reference.threshold_pack(dots, thresh, flip)})
    return _gmacs(methods, m * k * n, repeats, min_seconds)


def bench_conv(batch, h, w, c, o, repeats, min_seconds, rng):
    """The same GEMM as a real 3x3 conv (padding 1): torch conv2d fp32 vs bconv2d(_threshold)."""
    x_f = torch.from_numpy(rng.standard_normal((batch, c, h, w), dtype=np.float32))
    w_f = torch.from_numpy(rng.standard_normal((o, c, 3, 3), dtype=np.float32))
    x = kernels.pack(x_f.permute(0, 2, 3, 1).numpy())  # NHWC, channels packed
    wb = kernels.pack(w_f.permute(0, 2, 3, 1).numpy())
    thresh = rng.integers(-64, 65, o).astype(np.int32)
    flip = rng.random(o) < 0.5
    methods = {
        "torch": lambda: torch.nn.functional.conv2d(x_f, w_f, padding=1),
        "bgemm": lambda: kernels.bconv2d(x, wb, c, 1, 1),
        "bgemm_threshold": lambda: kernels.bconv2d_threshold(x, wb, c, thresh, flip, 1, 1),
    }
    dots = torch.nn.functional.conv2d(signs(x_f), signs(w_f), padding=1)
    dots = dots.permute(0, 2, 3, 1).numpy().astype(np.int32)  # NHWC, as the engine
    check_exact(methods, {"bgemm": dots, "bgemm_threshold": reference.threshold_pack(dots, thresh, flip)})
    return _gmacs(methods, batch * h * w * o * 9 * c, repeats, min_seconds)


FIRST_LAYER_SHAPES = [  # (label, M, K, N)
    ("CIFAR first conv 64x32x32, 3x3x3 -> 128", 64 * 32 * 32, 27, 128),
    ("MNIST first dense 784 -> 4096, batch 256", 256, 784, 4096),
]


def bench_first_layer(repeats, min_seconds, rng):
    """ms per call of int_gemm / bitplane_gemm (uint8 x +-1 -> int32) vs torch fp32 matmul of
    the same values, and threshold_pack of the CIFAR first conv's int32 output."""
    print(f"{'first layer (ms per call)':>42} {'torch':>8} {'int_gemm':>9} {'bitplane':>9} "
          f"{'x int':>6} {'x bitpl':>7}")
    for label, m, k, n in FIRST_LAYER_SHAPES:
        x = rng.integers(0, 256, (m, k), dtype=np.uint8)
        w = kernels.pack(rng.standard_normal((n, k), dtype=np.float32))
        x_f = torch.from_numpy(x.astype(np.float32))
        w_t = torch.from_numpy(kernels.unpack(w, k).astype(np.float32).T.copy())
        want = kernels.int_gemm(x, w, k)
        # fp32 is exact here: |sums| <= 255 k < 2**24
        assert np.array_equal(want[:64], (x_f[:64] @ w_t).numpy().astype(np.int32)), "int_gemm disagrees"
        assert np.array_equal(kernels.bitplane_gemm(x, w, k), want), "bitplane_gemm disagrees"
        methods = {"torch": lambda: torch.matmul(x_f, w_t),
                   "int_gemm": lambda: kernels.int_gemm(x, w, k),
                   "bitplane": lambda: kernels.bitplane_gemm(x, w, k)}
        ms = _median_ms(methods, repeats, min_seconds)
        print(f"{label:>42} {ms['torch']:8.2f} {ms['int_gemm']:9.2f} {ms['bitplane']:9.2f} "
              f"{ms['torch'] / ms['int_gemm']:5.1f}x {ms['torch'] / ms['bitplane']:6.1f}x", flush=True)
    m, n = FIRST_LAYER_SHAPES[0][1], FIRST_LAYER_SHAPES[0][3]
    s = rng.integers(-300, 301, (m, n)).astype(np.int32)
    thresh = rng.integers(-50, 51, n).astype(np.int32)
    flip = rng.random(n) < 0.5
    ms = _median_ms({"threshold_pack": lambda: kernels.threshold_pack(s, thresh, flip)},
                    repeats, min_seconds)
    print(f"{f'threshold_pack ({m}, {n}) int32':>42} {ms['threshold_pack']:8.2f}")


PROBE_ITERATIONS = 100_000  # per thread and call: ~1-5 ms


def measured_peak(threads, repeats, min_seconds) -> float:
    """Bit-MACs per second of the in-register XOR + popcount + add probe on ``threads`` threads
    (kernels.xor_popcount_probe), the ceiling the rates below are a percentage of."""
    done = kernels.xor_popcount_probe(PROBE_ITERATIONS, threads)
    seconds = timing.median_seconds(
        {"probe": lambda: kernels.xor_popcount_probe(PROBE_ITERATIONS, threads)},
        repeats, min_seconds)["probe"]
    return done / seconds


# the paper CIFAR-10 ConvNet's binary convs: (label, side, in, out, fused 2x2 max-pool); 3x3, pad 1
CONVNET = [("conv 128->128 32x32 +pool", 32, 128, 128, True), ("conv 128->256 16x16", 16, 128, 256, False),
           ("conv 256->256 16x16 +pool", 16, 256, 256, True), ("conv 256->512 8x8", 8, 256, 512, False),
           ("conv 512->512 8x8 +pool", 8, 512, 512, True)]


def bench_convnet(batch, threads, repeats, min_seconds, rng):
    """ms, G bit-MAC/s and % of the peak measured in the same rounds, of the ConvNet's binary
    conv layers (as the runner calls them) and its fused uint8 first conv; outputs checked
    against the numpy reference on one image first."""
    methods, macs = {}, {}
    for label, side, c, o, pool in CONVNET:
        x = kernels.pack(rng.standard_normal((batch, side, side, c), dtype=np.float32))
        w = kernels.pack(rng.standard_normal((o, 3, 3, c), dtype=np.float32))
        thresh, flip = rng.integers(-30, 31, o).astype(np.int32), rng.random(o) < 0.5
        args = (w, c, thresh, flip) + ((2, 2) if pool else ()) + (1, 1)
        op = "bconv2d_threshold_maxpool" if pool else "bconv2d_threshold"
        check_exact({label: lambda op=op, x=x, args=args: getattr(kernels, op)(x[:1], *args)},
                    {label: getattr(reference, op)(x[:1], *args)})
        methods[label] = lambda op=op, x=x, args=args: getattr(kernels, op)(x, *args)
        macs[label] = batch * side * side * o * 9 * c
    x_u8 = rng.integers(0, 256, (batch, 3, 32, 32), dtype=np.uint8)
    w_u8 = kernels.pack(rng.standard_normal((128, 27), dtype=np.float32))
    classes = np.array([0] + [1] * 30 + [2], np.int32)
    first = (w_u8, 3, rng.integers(-500, 500, (3, 3, 128)).astype(np.int32), rng.random(128) < 0.5,
             classes, classes, 1, 1)
    check_exact({"first": lambda: kernels.int_conv_threshold(x_u8[:1], *first)},
                {"first": reference.int_conv_threshold(x_u8[:1], *first)})
    methods["first conv 3->128 32x32 (uint8)"] = lambda: kernels.int_conv_threshold(x_u8, *first)
    methods["probe"] = lambda: kernels.xor_popcount_probe(PROBE_ITERATIONS, threads)
    seconds = timing.median_seconds(methods, repeats, min_seconds)
    peak = kernels.xor_popcount_probe(PROBE_ITERATIONS, threads) / seconds.pop("probe")
    print(f"paper ConvNet layers, batch {batch}; xor+popcount peak measured in the same rounds: "
          f"{peak / 1e9:,.0f} G bit-MAC/s")
    for label, t in seconds.items():
        rate = f"{macs[label] / t / 1e9:8.0f} {100 * macs[label] / t / peak:5.0f}%" if label in macs else ""
        print(f"{label:>32} {1e3 * t:9.3f} ms {rate}")


def _median_ms(methods, repeats, min_seconds):
    seconds = timing.median_seconds(methods, repeats, min_seconds)
    return {name: 1e3 * t for name, t in seconds.items()}


def _gmacs(methods, macs, repeats, min_seconds):
    """10^9 multiply-accumulates per second of each method, from its median time."""
    seconds = timing.median_seconds(methods, repeats, min_seconds)
    return {name: macs / t / 1e9 for name, t in seconds.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    parser.add_argument("--first-layer", action="store_true",
                        help="uint8 first layers and threshold_pack instead of the binary GEMMs")
    parser.add_argument("--convnet", action="store_true",
                        help="the paper ConvNet's conv layers, %% of the measured peak")
    parser.add_argument("--batch", type=int, default=64, help="batch of --convnet")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (median)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    kernels.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 7)
    min_seconds = 0.02 if args.quick else 0.1
    rng = np.random.default_rng(args.seed)
    print(f"CPU: {timing.cpu_description()}; {args.threads} thread"
          f"{'s' if args.threads != 1 else ''} for torch "
          f"{torch.__version__} and the engine (kernels {kernels.get_backend()}); median of "
          f"{repeats} interleaved rounds")
    if args.first_layer:
        bench_first_layer(repeats, min_seconds, rng)
        return
    if args.convnet:
        bench_convnet(args.batch, args.threads, repeats, min_seconds, rng)
        return
    peak = measured_peak(args.threads, repeats, min_seconds) / 1e9
    print(f"measured xor+popcount peak ({kernels.kernel_table()[kernels.get_backend()]['probe']}, "
          f"in registers): {peak:,.0f} G bit-MAC/s; %peak = bgemm_thr / peak")
    header = (f"{'M x K x N':>20} {'torch':>8} {'bgemm':>8} {'bgemm_thr':>9} "
              f"{'x bgemm':>8} {'x thr':>7} {'%peak':>6} {'target':>7}")
    print(header + "\n" + "-" * len(header) + "   (GMAC/s, speed-up over torch fp32)")
    all_met = True
    for m, k, n, target in QUICK_SHAPES if args.quick else SHAPES:
        g = bench_shape(m, k, n, repeats, min_seconds, rng)
        ratio, ratio_thr = g["bgemm"] / g["torch"], g["bgemm_threshold"] / g["torch"]
        met = "" if target is None else (">=%gx %s" % (target, "ok" if ratio >= target else "MISS"))
        all_met &= target is None or ratio >= target
        print(f"{f'{m}x{k}x{n}':>20} {g['torch']:8.1f} {g['bgemm']:8.1f} {g['bgemm_threshold']:9.1f} "
              f"{ratio:7.1f}x {ratio_thr:6.1f}x {100 * g['bgemm_threshold'] / peak:5.0f}% {met:>9}",
              flush=True)
    batch, h, w, c, o = QUICK_CONV if args.quick else CONV
    g = bench_conv(batch, h, w, c, o, repeats, min_seconds, rng)
    label = f"conv {batch}x{h}x{w}x{c}->{o}"
    print(f"{label:>20} {g['torch']:8.1f} {g['bgemm']:8.1f} {g['bgemm_threshold']:9.1f} "
          f"{g['bgemm'] / g['torch']:7.1f}x {g['bgemm_threshold'] / g['torch']:6.1f}x "
          f"{100 * g['bgemm_threshold'] / peak:5.0f}%"
          "   (torch conv2d vs bconv2d / bconv2d_threshold, 3x3 pad 1)")
    if not args.quick:
        print("all targets met" if all_met else "some targets missed")


if __name__ == "__main__":
    main()
