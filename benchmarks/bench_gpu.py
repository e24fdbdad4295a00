"""Binary GEMM on an NVIDIA GPU vs torch.matmul, and the paper's MNIST MLP end to end (issue 6).

Prints, in one run:
  0. The chip's 1-bit MMA ceiling: a register-only loop of m16n8k256 AND-popc MMAs (TOPS).
  1. GEMM at 8192^3 and at the MNIST MLP's shapes (M = 1, 64, 1024; K = N = 4096): our Triton
     XNOR-popcount kernel and the 1-bit tensor-core kernel (bmma.cu), each with packed activations
     given and with the packing of float activations included, vs torch.matmul in fp32 (no TF32),
     tf32, bf16 and int8 (torch._int_mm). Every binary result is first checked bit for bit against
     the fp32 product of the same +-1 matrices (exact: |dot| <= K < 2^24).
  2. The paper's MNIST MLP (784 -> 3 x 4096 -> 10, random weights; docs/paper.md §3, §4.3) on a batch of
     10000 (as the paper) and of 64 and 1: binary (first layer as an exact fp32 product of the
     uint8 pixels with +-1 weights, then fused bgemm_threshold layers on packed bits) vs the float
     torch model in fp32 / tf32 / bf16. The binary predictions must equal the fp32 model's
     (fp32 and tf32 are exact here; bf16 rounds the sums it returns, so it may differ).
  3. The packed engine end to end (binarynet.engine.PackedModel.to("cuda").predict on a uint8
     batch already on the GPU, logits back as a GPU tensor): the paper's MNIST MLP at batch 1, 64,
     1024, 10000 and the paper's CIFAR-10 ConvNet at batch 1, 64, 256 (exported from randomly
     initialised torch models with spread batch-norm statistics), vs the same networks in float
     (binarynet.export.to_torch(packed) on the GPU, fp32 without TF32, and bf16 autocast) on the
     normalised float images. "same" is the fraction of argmax predictions equal to float fp32's.

Timing: binarynet.timing on blocks of calls with the device synchronised only at the block's
ends (so launch gaps count, but no per-call synchronisation), warm-up first (Triton JIT and nvcc
build happen there), median of the repeats. The header names the GPU, and the host CPU and its
threads. Weights are packed once (they are constant at
inference; so are the weight row popcounts of the tensor-core kernel); "packed" rows take packed
activations (the tensor-core rows still count their row popcounts), "+pack" rows start from float
activations.
Targets (issue 6): binary faster than cuBLAS fp32 at 8192^3 (the paper's claim, 3.4x on a GTX 750);
with the 1-bit tensor cores, faster than bf16 at the same shape.

Usage: python benchmarks/bench_gpu.py [--quick] [--sweep] [--json results.json] [--smoke]
       [--skip-mlp] [--skip-engine] [--skip-cifar]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time

import torch

from binarynet import timing
from binarynet.gpu import backend, bmma, triton_kernels

GEMM_SHAPES = [(8192, 8192, 8192), (1, 4096, 4096), (64, 4096, 4096), (1024, 4096, 4096)]
MLP_BATCHES = [10000, 64, 1]
MLP_HIDDEN = 4096
# --smoke: tiny problems that also run on CPU tensors under TRITON_INTERPRET=1 (checks the script)
SMOKE_GEMM_SHAPES = [(5, 70, 130)]
SMOKE_MLP_BATCHES = [7]
SMOKE_MLP_HIDDEN = 70
# section 3: the packed engine (model options for binarynet.models.get, input shape, batches)
ENGINE_MODELS = {
    "mnist_mlp": ({}, (1, 28, 28), [1, 64, 1024, 10000]),
    "cifar10_vgg": ({}, (3, 32, 32), [1, 64, 256]),
}
SMOKE_ENGINE_MODELS = {
    "mnist_mlp": ({"hidden": 70, "depth": 2, "in_shape": (1, 5, 5)}, (1, 5, 5), [3]),
    "cifar10_vgg": ({"widths": (5, 7), "fc": (9,), "image_size": 4}, (3, 4, 4), [2]),
}

DEVICE = "cuda"
# --sweep: other tiles of both kernels, at 8192^3 and M = 64 (the rows say which the default took)
SWEEP_SHAPES = [(8192, 8192, 8192), (64, 4096, 4096)]
SWEEP_TILES = [triton_kernels.LARGE_TILE, triton_kernels.MEDIUM_TILE, triton_kernels.SMALL_TILE,
               triton_kernels.TileConfig(64, 32, 4, 2), triton_kernels.TileConfig(64, 64, 2, 4),
               triton_kernels.TileConfig(64, 64, 4, 8), triton_kernels.TileConfig(128, 64, 2, 8)]
SWEEP_BMMA_TILES = ["huge", "large", "medium", "small"]


# ----------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------
WARMUP = 3
SMOKE = False


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def time_ms(fn, reps: int, target_ms: float = 2.0) -> float:
    """Median milliseconds per call of fn: each repeat times a block of calls at least
    ~target_ms long, synchronised only at its ends. (--smoke: one call.)"""
    if SMOKE:
        return 1e3 * timing.seconds_per_call(fn, 0.0, _sync)
    seconds = timing.median_seconds({"f": fn}, repeats=reps, min_seconds=target_ms / 1e3,
                                    warmup=WARMUP, sync=_sync)
    return 1e3 * seconds["f"]


def generator(seed: int) -> torch.Generator:
    return torch.Generator(device=DEVICE).manual_seed(seed)


def signs(shape, gen: torch.Generator) -> torch.Tensor:
    """Random +-1 float32 tensor on DEVICE."""
    return torch.randint(0, 2, shape, device=DEVICE, generator=gen).float() * 2 - 1


# ----------------------------------------------------------------------------------------------
# GEMM
# ----------------------------------------------------------------------------------------------
def gemm_rows(m: int, n: int, k: int, reps: int, engines: list[str], sweep: bool) -> list[dict]:
    """Time every method at M x N x K; returns result rows (method, ms, ok)."""
    gen = generator(m + n + k)
    a_f, w_f = signs((m, k), gen), signs((n, k), gen)
    reference = a_f @ w_f.T  # exact for +-1 inputs (see module docstring)
    torch.backends.cuda.matmul.allow_tf32 = False
    rows = []

    def add(method, fn, check=None):
        try:
            ok = None
            if check is not None:
                ok = bool(torch.equal(check().to(torch.float32), reference))
            rows.append({"method": method, "ms": time_ms(fn, reps), "exact": ok})
        except Exception as err:  # report and go on: one failing method must not hide the others
            rows.append({"method": method, "ms": None, "exact": None,
                         "error": f"{type(err).__name__}: {err}"[:200]})

    # cuBLAS first, then ours: a kernel fault (sticky CUDA error) cannot hide the baselines
    # Weights stay (N, K) and enter as a transposed view, as in nn.Linear (x @ W^T): the "TN"
    # layout cuBLAS prefers, int8 included.
    add("torch fp32", lambda: a_f @ w_f.T)
    torch.backends.cuda.matmul.allow_tf32 = True
    add("torch tf32", lambda: a_f @ w_f.T)
    torch.backends.cuda.matmul.allow_tf32 = False
    a_h, w_h = a_f.to(torch.bfloat16), w_f.to(torch.bfloat16)
    add("torch bf16", lambda: a_h @ w_h.T, lambda: a_h @ w_h.T)
    a_i, w_i = a_f.to(torch.int8), w_f.to(torch.int8)
    add("torch int8 (_int_mm)", lambda: torch._int_mm(a_i, w_i.T),
        lambda: torch._int_mm(a_i, w_i.T))

    a_p, w_p = backend.pack(a_f), backend.pack(w_f)
    a_words, w_words = a_p.view(torch.int32), w_p.view(torch.int32)
    if "triton" in engines:
        add("triton packed", lambda: triton_kernels.bgemm_words(a_words, w_words, k),
            lambda: triton_kernels.bgemm_words(a_words, w_words, k))
        add("triton +pack", lambda: triton_kernels.bgemm_words(
            backend.pack(a_f).view(torch.int32), w_words, k),
            lambda: triton_kernels.bgemm_words(backend.pack(a_f).view(torch.int32), w_words, k))
        if sweep:
            default = triton_kernels.default_tile(m, n, a_words.device)
            for tile in SWEEP_TILES:
                name = (f"  triton tile {tile.block_m}x{tile.block_n}x{tile.block_k}"
                        f"/w{tile.num_warps}" + (" (default)" if tile == default else ""))
                add(name, lambda t=tile: triton_kernels.bgemm_words(a_words, w_words, k, tile=t),
                    lambda t=tile: triton_kernels.bgemm_words(a_words, w_words, k, tile=t))
    if "tensor_core" in engines:
        w_pop = bmma.row_popcounts(w_words)
        add("tensor-core packed", lambda: bmma.bgemm_words(a_words, w_words, k, w_popcounts=w_pop),
            lambda: bmma.bgemm_words(a_words, w_words, k, w_popcounts=w_pop))
        add("tensor-core +pack", lambda: bmma.bgemm_words(
            backend.pack(a_f).view(torch.int32), w_words, k, w_popcounts=w_pop),
            lambda: bmma.bgemm_words(backend.pack(a_f).view(torch.int32), w_words, k,
                                     w_popcounts=w_pop))
        if sweep:
            for tile in SWEEP_BMMA_TILES:
                add(f"  tensor-core tile {tile}", lambda t=tile: bmma.bgemm_words(
                    a_words, w_words, k, w_popcounts=w_pop, tile=t),
                    lambda t=tile: bmma.bgemm_words(a_words, w_words, k, w_popcounts=w_pop, tile=t))

    del a_f, w_f, reference, a_h, w_h, a_i, w_i
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    for row in rows:
        if row["ms"]:
            row["tops"] = 2 * m * n * k / (row["ms"] * 1e-3) / 1e12
    return rows


# ----------------------------------------------------------------------------------------------
# the paper's MNIST MLP
# ----------------------------------------------------------------------------------------------
class MLP:
    """784 -> 4096 -> 4096 -> 4096 -> 10 with random +-1 weights and BN+sign as thresholds.

    Hidden unit n is +1 iff s >= t[n] (s <= t[n] where flip[n]), the folded BN + sign of
    docs/paper.md §5.3; the output layer keeps an affine BN (scale, shift) before argmax.
    """

    def __init__(self, hidden: int = MLP_HIDDEN, seed: int = 0):
        gen = generator(seed)
        sizes = [784, hidden, hidden, hidden, 10]
        self.weights = [signs((o, i), gen) for i, o in zip(sizes[:-1], sizes[1:])]
        # thresholds within about one standard deviation (sqrt(fan_in)) of a random +-1 sum
        self.thresh = [torch.randint(-int(math.sqrt(i)), int(math.sqrt(i)) + 1, (o,), device=DEVICE,
                                     generator=gen, dtype=torch.int32)
                       for i, o in zip(sizes[:-2], sizes[1:-1])]
        self.flip = [torch.rand(o, device=DEVICE, generator=gen) < 0.2 for o in sizes[1:-1]]
        self.scale = torch.rand(10, device=DEVICE, generator=gen) + 0.5
        self.shift = torch.randn(10, device=DEVICE, generator=gen)
        self.packed = [backend.pack(w) for w in self.weights[1:]]
        self.w1_t = self.weights[0].T.contiguous()
        self._float_weights = {}  # dtype -> weights converted once (as deployed)

    def _hidden_signs(self, s: torch.Tensor, i: int) -> torch.Tensor:
        """+-1 float of a layer's threshold test on exact integer-valued float sums."""
        t = self.thresh[i].float()
        on = torch.where(self.flip[i], s <= t, s >= t)
        return on.float() * 2 - 1

    def float_forward(self, x_u8: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The float torch model (cuBLAS in `dtype`). In fp32 / tf32 it is exact for these
        integer-valued operands; bf16 rounds the sums its products return."""
        if dtype not in self._float_weights:
            self._float_weights[dtype] = [w.to(dtype) for w in self.weights]
        weights = self._float_weights[dtype]
        h = x_u8.to(dtype)
        for i, w in enumerate(weights[:-1]):
            s = (h @ w.T).float()
            h = self._hidden_signs(s, i).to(dtype)
        s = (h @ weights[-1].T).float()
        return (s * self.scale + self.shift).argmax(dim=1)

    def binary_forward(self, x_u8: torch.Tensor) -> torch.Tensor:
        """First layer: fp32 product of uint8 pixels and +-1 weights (exact: |s| <= 784 * 255),
        thresholded into packed bits; then fused bgemm_threshold layers; output bgemm + BN."""
        s = x_u8.float() @ self.w1_t
        t = self.thresh[0].float()
        h = backend.pack(torch.where(self.flip[0], t - s, s - t))  # bit = (s >= t), or s <= t
        for i, w in enumerate(self.packed[:-1]):
            h = backend.bgemm_threshold(h, w, self.weights[i + 1].shape[1], self.thresh[i + 1],
                                        self.flip[i + 1])
        s = backend.bgemm(h, self.packed[-1], self.weights[-1].shape[1]).float()
        return (s * self.scale + self.shift).argmax(dim=1)


@contextlib.contextmanager
def gemm_engine(engine: str):
    """Force backend's dense engine (BINARYNET_GPU_GEMM) inside the block."""
    saved = os.environ.get("BINARYNET_GPU_GEMM")
    os.environ["BINARYNET_GPU_GEMM"] = engine
    try:
        yield
    finally:
        if saved is None:
            del os.environ["BINARYNET_GPU_GEMM"]
        else:
            os.environ["BINARYNET_GPU_GEMM"] = saved


def mlp_rows(reps: int, engines: list[str], batches: list[int], hidden: int) -> list[dict]:
    model = MLP(hidden)
    gen = generator(1)
    rows = []
    for batch in batches:
        x = torch.randint(0, 256, (batch, 784), device=DEVICE, generator=gen, dtype=torch.uint8)
        expected = model.float_forward(x, torch.float32)
        for engine in engines:
            try:
                with gemm_engine(engine):
                    same = bool(torch.equal(model.binary_forward(x), expected))
                    ms = time_ms(lambda: model.binary_forward(x), reps)
                rows.append({"batch": batch, "method": f"binary ({engine})", "ms": ms,
                             "same": same})
            except Exception as err:  # report and go on
                rows.append({"batch": batch, "method": f"binary ({engine})", "ms": None,
                             "error": f"{type(err).__name__}: {err}"[:200]})
        for name, dtype, tf32 in [("float fp32", torch.float32, False),
                                  ("float tf32", torch.float32, True),
                                  ("float bf16", torch.bfloat16, False)]:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            same = bool(torch.equal(model.float_forward(x, dtype), expected))
            ms = time_ms(lambda: model.float_forward(x, dtype), reps)
            rows.append({"batch": batch, "method": name, "ms": ms, "same": same})
        torch.backends.cuda.matmul.allow_tf32 = False
    return rows


# ----------------------------------------------------------------------------------------------
# the packed engine end to end (PackedModel on the GPU) vs the float torch model
# ----------------------------------------------------------------------------------------------
def exported_model(name: str, options: dict, in_shape, seed: int = 0):
    """binarynet.export of a randomly initialised paper model (batch-norm statistics spread so
    thresholds differ per unit and some flip), with uint8 input normalised as x / 127.5 - 1."""
    import binarynet as bn
    from binarynet.export import export

    torch.manual_seed(seed)
    model = bn.models.get(name, **options).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-4, 4)
                m.weight.uniform_(-1, 1)
    example = torch.randint(0, 256, (8, *in_shape), dtype=torch.uint8)
    return export(model, example, input_scale=2 / 255, input_offset=-1.0)


def engine_rows(name: str, options: dict, in_shape, batches: list[int], reps: int) -> list[dict]:
    """Time PackedModel.predict on the GPU and the float model (fp32, bf16 autocast) per batch."""
    from binarynet.export import to_torch

    t0 = time.time()
    packed = exported_model(name, options, in_shape)
    export_s = time.time() - t0
    if DEVICE == "cuda":
        on_gpu = packed.to("cuda")
    else:  # --smoke on CPU: the same runner on CPU tensors, in Triton's interpreter
        from binarynet.gpu.engine_backend import on_torch_device
        on_gpu = on_torch_device(packed, "cpu")
    float_model = to_torch(packed).to(DEVICE).eval()
    channels = in_shape[0]
    scale = torch.tensor(packed.input_scale, dtype=torch.float32, device=DEVICE)
    offset = torch.tensor(packed.input_offset, dtype=torch.float32, device=DEVICE)
    scale, offset = scale.reshape(1, channels, 1, 1), offset.reshape(1, channels, 1, 1)
    gen = generator(2)
    rows = []
    for batch in batches:
        x_u8 = torch.randint(0, 256, (batch, *in_shape), device=DEVICE, generator=gen,
                             dtype=torch.uint8)
        x_f = x_u8.float() * scale + offset  # the normalisation the engine folds in
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        with torch.no_grad():
            expected = float_model(x_f).argmax(dim=1)
        common = {"model": name, "batch": batch, "export_s": export_s}

        def add(method, fn, predictions):
            try:
                same = float((predictions().argmax(dim=1) == expected).float().mean())
                rows.append({**common, "method": method, "ms": time_ms(fn, reps), "same": same})
            except Exception as err:  # report and go on
                rows.append({**common, "method": method, "ms": None, "same": None,
                             "error": f"{type(err).__name__}: {err}"[:200]})

        engine_fn = lambda: on_gpu.predict(x_u8)  # noqa: E731
        add(f"packed engine ({backend.gemm_engine(x_u8.device)})", engine_fn, engine_fn)

        def float_fp32():
            with torch.no_grad():
                return float_model(x_f)

        def float_bf16():
            with torch.no_grad(), torch.autocast(DEVICE, dtype=torch.bfloat16):
                return float_model(x_f)

        add("float fp32", float_fp32, float_fp32)
        add("float bf16 autocast", float_bf16, float_bf16)
        del x_u8, x_f
    return rows


def print_engine(rows):
    for name in dict.fromkeys(r["model"] for r in rows):
        group = [r for r in rows if r["model"] == name]
        print(f"\nPacked engine end to end: {name} (export {group[0]['export_s']:.1f} s on the CPU; "
              "uint8 in, logits out, on the GPU)")
        print(f"  {'batch':>6s} {'method':30s} {'ms':>10s} {'vs fp32':>8s} {'vs bf16':>8s}  "
              "same argmax as fp32")
        for batch in dict.fromkeys(r["batch"] for r in group):
            part = [r for r in group if r["batch"] == batch]
            base = {r["method"]: r["ms"] for r in part}
            fp32, bf16 = base.get("float fp32"), base.get("float bf16 autocast")
            for r in part:
                vs32 = f"{fp32 / r['ms']:7.2f}x" if r["ms"] and fp32 else "     n/a"
                vs16 = f"{bf16 / r['ms']:7.2f}x" if r["ms"] and bf16 else "     n/a"
                same = f"{r['same']:.4f}" if r.get("same") is not None else ""
                print(f"  {batch:6d} {r['method']:30s} {_fmt_ms(r['ms'])} {vs32} {vs16}  {same}"
                      + (f"  [{r['error']}]" if r.get("error") else ""))


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------
def _fmt_ms(ms):
    return f"{ms:10.4f}" if ms is not None else "       n/a"


def print_gemm(shape, rows):
    m, n, k = shape
    base = {r["method"]: r["ms"] for r in rows}
    fp32, bf16 = base.get("torch fp32"), base.get("torch bf16")
    print(f"\nGEMM M={m} N={n} K={k}")
    print(f"  {'method':34s} {'ms':>10s} {'TOPS':>8s} {'vs fp32':>8s} {'vs bf16':>8s}  exact")
    for r in rows:
        vs32 = f"{fp32 / r['ms']:7.2f}x" if r["ms"] and fp32 else "     n/a"
        vs16 = f"{bf16 / r['ms']:7.2f}x" if r["ms"] and bf16 else "     n/a"
        tops = f"{r['tops']:8.1f}" if r.get("tops") else "     n/a"
        exact = {True: "yes", False: "NO", None: ""}[r["exact"]]
        print(f"  {r['method']:34s} {_fmt_ms(r['ms'])} {tops} {vs32} {vs16}  {exact}"
              + (f"  [{r['error']}]" if r.get("error") else ""))


def print_mlp(rows, hidden: int):
    print(f"\nMNIST MLP 784-{hidden}x3-10 end to end (first layer fp32, BN+sign folded to "
          "thresholds)")
    print(f"  {'batch':>6s} {'method':22s} {'ms':>10s} {'vs fp32':>8s}  same predictions")
    for batch in sorted({r["batch"] for r in rows}, reverse=True):
        group = [r for r in rows if r["batch"] == batch]
        fp32 = next((r["ms"] for r in group if r["method"] == "float fp32"), None)
        for r in group:
            vs = f"{fp32 / r['ms']:7.2f}x" if r["ms"] and fp32 else "     n/a"
            same = {True: "yes", False: "NO", None: ""}[r.get("same")]
            print(f"  {batch:6d} {r['method']:22s} {_fmt_ms(r['ms'])} {vs}  {same}"
                  + (f"  [{r['error']}]" if r.get("error") else ""))


def verdict(results):
    """The issue's two targets at 8192^3, from the measured rows."""
    rows = {r["method"]: r["ms"] for r in results["gemm"].get("8192x8192x8192", [])}
    fp32, bf16 = rows.get("torch fp32"), rows.get("torch bf16")
    lines = []
    for label, method, base, base_name in [
            ("Triton XNOR GEMM faster than cuBLAS fp32", "triton packed", fp32, "fp32"),
            ("Triton XNOR GEMM (+pack) faster than cuBLAS fp32", "triton +pack", fp32, "fp32"),
            ("1-bit tensor cores faster than bf16", "tensor-core packed", bf16, "bf16"),
            ("1-bit tensor cores (+pack) faster than bf16", "tensor-core +pack", bf16, "bf16")]:
        ours = rows.get(method)
        if ours is None or base is None:
            lines.append(f"  {label}: not measured")
        else:
            lines.append(f"  {label}: {'YES' if ours < base else 'NO'} "
                         f"({ours:.3f} ms vs {base:.3f} ms {base_name}, {base / ours:.2f}x)")
    return lines


def save(results: dict, path: str | None) -> None:
    """Write the results so far (after every section: a later crash keeps them)."""
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no 8192^3")
    parser.add_argument("--sweep", action="store_true", help="also time other Triton tiles")
    parser.add_argument("--json", help="write all numbers to this file")
    parser.add_argument("--skip-mlp", action="store_true")
    parser.add_argument("--skip-engine", action="store_true",
                        help="skip the packed engine end to end (section 3)")
    parser.add_argument("--skip-cifar", action="store_true",
                        help="in section 3, the MNIST MLP only")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny problems, only to check the script (on CPU: TRITON_INTERPRET=1)")
    args = parser.parse_args(argv)
    global DEVICE, WARMUP, SMOKE
    if torch.cuda.is_available():
        DEVICE = "cuda"
        props = torch.cuda.get_device_properties(0)
        name = (f"{props.name}, {props.multi_processor_count} SMs, capability "
                f"{props.major}.{props.minor}")
    elif args.smoke and triton_kernels.INTERPRETED:
        DEVICE, name = "cpu", "CPU (Triton interpreter): timings mean nothing"
    else:
        print("bench_gpu: no CUDA GPU: nothing to measure (--smoke runs on CPU under "
              "TRITON_INTERPRET=1)", file=sys.stderr)
        return 2
    reps = 5 if args.quick else 15
    SMOKE = args.smoke
    engines = ["triton"] + (["tensor_core"] if DEVICE == "cuda" and bmma.supported() else [])
    host = f"{timing.cpu_description()}, {torch.get_num_threads()} torch threads"
    print(f"device: {name}; host CPU: {host}; torch {torch.__version__}, "
          f"triton {triton_kernels.triton.__version__}; engines: {', '.join(engines)}")
    results = {"device": name, "host": host, "torch": torch.__version__,
               "triton": triton_kernels.triton.__version__, "gemm": {}, "mlp": [], "engine": []}
    if "tensor_core" in engines:
        try:
            run, bit_macs = bmma.peak_probe()
            ms = time_ms(run, reps)
            results["bmma_peak_tops"] = 2 * bit_macs / (ms * 1e-3) / 1e12
            print(f"1-bit MMA ceiling (register operands only, no memory): "
                  f"{results['bmma_peak_tops']:.0f} TOPS")
        except Exception as err:  # a diagnostic: report and go on
            print(f"1-bit MMA ceiling: failed: {type(err).__name__}: {err}")
    shapes = SMOKE_GEMM_SHAPES if args.smoke else GEMM_SHAPES[1:] if args.quick else GEMM_SHAPES
    for shape in shapes:
        t0 = time.time()
        rows = gemm_rows(*shape, reps=reps, engines=engines,
                         sweep=args.sweep and shape in SWEEP_SHAPES)
        results["gemm"]["x".join(map(str, shape))] = rows
        print_gemm(shape, rows)
        save(results, args.json)
        print(f"  ({time.time() - t0:.1f} s)")
        sys.stdout.flush()
    if not args.skip_mlp:
        batches = (SMOKE_MLP_BATCHES if args.smoke else MLP_BATCHES[1:] if args.quick
                   else MLP_BATCHES)
        hidden = SMOKE_MLP_HIDDEN if args.smoke else MLP_HIDDEN
        results["mlp"] = mlp_rows(reps, engines, batches, hidden)
        print_mlp(results["mlp"], hidden)
        save(results, args.json)
    if not args.skip_engine:
        models = SMOKE_ENGINE_MODELS if args.smoke else ENGINE_MODELS
        for model_name, (options, in_shape, batches) in models.items():
            if args.skip_cifar and model_name != "mnist_mlp":
                continue
            t0 = time.time()
            results["engine"] += engine_rows(model_name, options, in_shape, batches, reps)
            save(results, args.json)
            print(f"  ({model_name}: {time.time() - t0:.1f} s)")
        print_engine(results["engine"])
        sys.stdout.flush()
    print("\nTargets at 8192^3 (issue 6):")
    for line in verdict(results):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
