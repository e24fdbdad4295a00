"""The engine beside its real alternatives: torch fp32, ONNX Runtime fp32 and int8, torch int8.

Issue 12's speed section: on the same CPU, same threads (2 by default; ``--threads N`` for all
contenders), contenders timed round by round (``binarynet.timing.interleaved_samples``, medians),
each contender running the same network's float form (see ``contenders.py``):

- paper MNIST MLP (batch 1 and 256): engine; torch fp32 (``export.to_torch`` of the packed file,
  as ``bench_engine.py``); ORT fp32; ORT int8 dynamic; torch int8 dynamic. Targets: >= 6x vs
  the int8 contenders.
- paper CIFAR-10 ConvNet (batch 1 and 64): engine; torch fp32; ORT fp32; ORT int8 static QDQ
  (calibrated on a few batches of real test images when ``BINARYNET_DATA`` has them). Targets:
  >= 4x vs ORT int8, >= 20x vs torch fp32.
- ``reactnet18`` and ``quicknet`` (small), 224x224, 1000 classes (batch 1 and 8), when
  ``binarynet.export`` supports them (else one line says it refused and the run goes on):
  torch fp32 is the model's float form, ORT int8 static QDQ calibrated on random images.
  Targets: >= 2.5x vs ORT int8, >= 8x vs torch fp32; with ``--threads 1`` QuickNet batch 1
  under 4 ms (Larq Compute Engine's published QuickNet-small figure on an Apple M1, one thread).

The paper networks have random weights and batch-norm statistics of a trained network's scale
(``bench_engine.trained_like``); the zoo models are as built. The engine takes uint8 images, the
others the normalised float32 ones. Per contender: ms per batch, ratio contender / engine,
argmax agreement with torch fp32 on the same images (int8 does not compute the same network;
with random weights logits are near-tied, so this says nothing about trained accuracy), file
size, peak RSS of a fresh process running one batch (engine and torch via
``binarynet.speed.peak_memory``, ORT via ``ort_contender.ort_peak_memory``; torch int8's is not
measured). The engine's rate is the binary MACs of its graph (conv, dense and their float-output
forms; not the real-valued first layers) per second, also as a percent of the xor+popcount
peak measured by ``binarynet.engine.kernels.xor_popcount_probe`` when the engine has it
("peak: not measured" otherwise).

    python benchmarks/bench_int8.py                      # all networks (many minutes)
    python benchmarks/bench_int8.py --quick --networks mnist_mlp,cifar10_vgg
    python benchmarks/bench_int8.py --threads 1 --networks quicknet --json out.json

Needs the ``bench`` extra (``pip install .[bench]``: onnxruntime, onnx).
"""

import argparse
import dataclasses
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # contenders, bench_engine

from binarynet import threads as thread_policy  # noqa: E402

thread_policy.set_passive_wait_policy()  # before torch loads OpenMP: idle threads sleep

import numpy as np  # noqa: E402
import torch  # noqa: E402

import binarynet as bn  # noqa: E402
import contenders  # noqa: E402
import ort_contender  # noqa: E402
from bench_engine import trained_like  # noqa: E402
from binarynet import timing  # noqa: E402
from binarynet.engine import kernels  # noqa: E402
from binarynet.errors import BinarynetError  # noqa: E402
from binarynet.export import export, to_torch  # noqa: E402
from binarynet.speed import engine_input, normalised, peak_memory, state_dict_bytes  # noqa: E402
from binarynet.summary.packed import summarise_packed  # noqa: E402

ENGINE, TORCH, ORT = "engine", "torch fp32", "ORT fp32"
ORT_INT8, TORCH_INT8 = "ORT int8", "torch int8"


@dataclasses.dataclass(frozen=True)
class Workload:
    build: object            # () -> torch model in eval mode
    shape: tuple             # input (C, H, W)
    batches: tuple
    mlp: bool                # int8: dynamic (MLP) or static QDQ (convnet)
    dataset: str | None      # real images for calibration and agreement, if present
    zoo: bool                # torch fp32 = the model's float form (not to_torch of the file)
    targets: dict            # contender -> speed-up the issue asks for
    one_thread_ms: float | None = None  # engine target at batch 1 with --threads 1


def _zoo(name, **kw):
    return lambda: bn.models.get(name, num_classes=1000, input_size=224, **kw).eval()


WORKLOADS = {
    "mnist_mlp": Workload(lambda: trained_like(bn.models.get("mnist_mlp")), (1, 28, 28), (1, 256),
                          True, "mnist", False, {ORT_INT8: 6.0, TORCH_INT8: 6.0}),
    "cifar10_vgg": Workload(lambda: trained_like(bn.models.get("cifar10_vgg")), (3, 32, 32),
                            (1, 64), False, "cifar10", False, {ORT_INT8: 4.0, TORCH: 20.0}),
    "reactnet18": Workload(_zoo("reactnet18"), (3, 224, 224), (1, 8), False, None, True,
                           {ORT_INT8: 2.5, TORCH: 8.0}),
    "quicknet": Workload(_zoo("quicknet", size="small"), (3, 224, 224), (1, 8), False, None, True,
                         {ORT_INT8: 2.5, TORCH: 8.0}, one_thread_ms=4.0),
}


def popcount_peak(threads: int, repeats: int):
    """bit-MACs per second of the engine's in-register xor+popcount probe, or None when the
    engine has no probe. The iteration count is grown until one call lasts ~20 ms."""
    probe = getattr(kernels, "xor_popcount_probe", None)
    if probe is None:
        return None
    iterations = 1 << 10

    def call():
        return probe(iterations, threads)

    while timing.seconds_per_call(call, 0.0) < 0.02 and iterations < 1 << 40:
        iterations *= 4
    return call() / timing.median_seconds({"probe": call}, repeats)["probe"]


def binary_macs(packed):
    """Binary MACs per sample of the packed graph (``binarynet.summary``'s count), or None when
    the summary leaves a weighted op of the graph uncounted (an op kind it does not know)."""
    s = summarise_packed(packed, None)
    for op, row in zip(packed.ops, s.layers):
        if "weight" in op["tensors"] and row.binary_macs + row.multibit_macs == 0:
            return None
    return s.binary_macs


def images(work: Workload, count: int, rng):
    """``count`` uint8 images: the dataset's test images when present, else uniform random;
    and a word saying which."""
    if work.dataset is not None:
        try:
            data = bn.data.load(work.dataset, "test")
            if len(data) >= count:
                return data.images[:count].numpy(), f"{work.dataset} test images"
        except (BinarynetError, ValueError):
            pass
    return rng.integers(0, 256, (count, *work.shape), dtype=np.uint8), "random images"


def build_contenders(name: str, work: Workload, model, packed, tmp: str, calibration, threads: int):
    """``({contender: f(float32 batch) -> logits}, {contender: file bytes}, {ORT name: path})``."""
    torch_net = contenders.float_form(model) if work.zoo else to_torch(packed).eval()
    onnx_net = torch_net if work.zoo else contenders.float_form(torch_net)
    check = torch.from_numpy(calibration[0])
    contenders.check_same_function(model if work.zoo else torch_net, onnx_net, check)
    fp32_path, int8_path = (os.path.join(tmp, f"{name}.{kind}.onnx") for kind in ("fp32", "int8"))
    contenders.export_onnx(onnx_net, check, fp32_path)
    ort_contender.quantize_ort(fp32_path, int8_path, None if work.mlp else calibration)

    def torch_fn(net):
        def run(x):
            with torch.inference_mode():
                return net(torch.from_numpy(x)).numpy()
        return run

    fns = {TORCH: torch_fn(torch_net),
           ORT: ort_contender.ort_run(ort_contender.ort_session(fp32_path, threads)),
           ORT_INT8: ort_contender.ort_run(ort_contender.ort_session(int8_path, threads))}
    sizes = {TORCH: state_dict_bytes(torch_net), ORT: os.path.getsize(fp32_path),
             ORT_INT8: os.path.getsize(int8_path)}
    if work.mlp:
        quantized = contenders.torch_int8_dynamic(torch_net)
        fns[TORCH_INT8], sizes[TORCH_INT8] = torch_fn(quantized), state_dict_bytes(quantized)
    return fns, sizes, {ORT: fp32_path, ORT_INT8: int8_path}


def agreement(packed, fns: dict, x_u8: np.ndarray, chunk: int) -> dict:
    """Per contender (engine included): how many argmaxes equal torch fp32's on ``x_u8``."""
    outputs = {name: [] for name in (ENGINE, *fns)}
    for start in range(0, len(x_u8), chunk):
        part = x_u8[start:start + chunk]
        x_f = normalised(packed, part)
        outputs[ENGINE].append(np.asarray(packed.predict(engine_input(packed, part))).argmax(1))
        for name, fn in fns.items():
            outputs[name].append(fn(x_f).argmax(1))
    reference = np.concatenate(outputs[TORCH])
    return {name: int((np.concatenate(a) == reference).sum()) for name, a in outputs.items()}


def memory(packed_path, packed, ort_paths, zoo: bool, batch: int, threads: int) -> dict:
    """Peak RSS (KiB, and the part over the imports) per contender, fresh process each."""
    kinds = ("engine",) if zoo else ("engine", "torch")
    measured = peak_memory(packed_path, batch, threads, kinds=kinds)
    out = {ENGINE: measured["engine"]}
    if "torch" in measured:
        out[TORCH] = measured["torch"]
    for name, path in ort_paths.items():
        out[name] = ort_contender.ort_peak_memory(path, packed.input_shape, batch, threads)
    return out


def time_batch(packed, fns: dict, batch: int, repeats: int, rng) -> dict:
    """Median seconds per batch of every contender, interleaved round by round."""
    x_u8 = rng.integers(0, 256, (batch, *packed.input_shape), dtype=np.uint8)
    x_e, x_f = engine_input(packed, x_u8), normalised(packed, x_u8)
    runs = {ENGINE: lambda: packed.predict(x_e)}
    runs.update({name: (lambda fn=fn: fn(x_f)) for name, fn in fns.items()})
    samples = timing.interleaved_samples(runs, repeats)
    return {name: float(np.median(s)) for name, s in samples.items()}


def _memory_text(m) -> str:
    """Peak RSS in MiB and, in brackets, the part over the imports (the model and one batch)."""
    if m is None:
        return "not measured"
    return (f"{m['rss_peak_kib'] / 1024:.0f} "
            f"(+{(m['rss_peak_kib'] - m['rss_after_imports_kib']) / 1024:.1f})")


def format_table(name: str, work: Workload, batch: int, result: dict, threads: int) -> str:
    """One workload at one batch size: a row per contender."""
    seconds, agree, files = result["seconds"][batch], result["agreement"], result["file_bytes"]
    mem = result["memory"].get(batch, {})
    lines = [f"\n{name}, batch {batch} (agreement on {result['agreement_images']} "
             f"{result['input_source']}; peak RSS of a fresh process running one batch)",
             f"{'contender':<11} {'ms/batch':>10} {'vs engine':>10} {'target':>13} {'% peak':>7} "
             f"{'agrees w/ fp32':>15} {'file MiB':>9} {'peak RSS MiB (+run)':>22}"]
    engine_s = seconds[ENGINE]
    for contender, s in seconds.items():
        ratio = s / engine_s
        target = work.targets.get(contender)
        verdict = "" if target is None else f">={target:g}x {'ok' if ratio >= target else 'MISSED'}"
        peak = result["percent_peak"][batch] if contender == ENGINE else None
        lines.append(f"{contender:<11} {1e3 * s:>10.3f} {ratio:>9.2f}x {verdict:>13} "
                     f"{'-' if peak is None else f'{peak:.0f}%':>7} "
                     f"{agree[contender]:>7}/{result['agreement_images']:<7} "
                     f"{files[contender] / 2 ** 20:>9.2f} {_memory_text(mem.get(contender)):>22}")
    if work.one_thread_ms is not None and threads == 1 and batch == 1:
        ok = 1e3 * engine_s < work.one_thread_ms
        lines.append(f"one-thread target: engine {1e3 * engine_s:.2f} ms < "
                     f"{work.one_thread_ms} ms: {'ok' if ok else 'MISSED'}")
    return "\n".join(lines)


def run_workload(name: str, work: Workload, args, peak, tmp: str):
    """Measure one network; ``{"skipped": why}`` (after one printed line) when export refuses it."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = work.build()
    example = torch.randint(0, 256, (2, *work.shape), dtype=torch.uint8)
    try:
        packed = export(model, example, input_scale=2 / 255, input_offset=-1.0)
    except BinarynetError as e:
        print(f"\n{name}: skipped, the engine's export refuses it: {e}")
        return {"skipped": f"export refuses it: {e}"}
    packed_path = os.path.join(tmp, f"{name}.bnn")
    engine_bytes = packed.save(packed_path)
    n_agree = (args.agreement_zoo if work.zoo else args.agreement)
    n_calib = args.calibration_batches * args.calibration_batch
    x_all, source = images(work, n_agree + n_calib, rng)
    x_calib = normalised(packed, x_all[n_agree:])
    step = args.calibration_batch
    calibration = [x_calib[i:i + step] for i in range(0, n_calib, step)]
    fns, sizes, ort_paths = build_contenders(name, work, model, packed, tmp, calibration,
                                             args.threads)
    result = {"input_source": source, "agreement_images": n_agree,
              "binary_macs_per_sample": binary_macs(packed),
              "file_bytes": {ENGINE: engine_bytes, **sizes},
              "agreement": agreement(packed, fns, x_all[:n_agree], max(work.batches)),
              "seconds": {}, "percent_peak": {}, "memory": {}}
    for batch in work.batches:
        seconds = time_batch(packed, fns, batch, args.repeats, rng)
        result["seconds"][batch] = seconds
        macs = result["binary_macs_per_sample"]
        rate = None if macs is None else macs * batch / seconds[ENGINE]
        result["percent_peak"][batch] = None if peak is None or rate is None else 100 * rate / peak
        if not args.no_memory:
            result["memory"][batch] = memory(packed_path, packed, ort_paths, work.zoo, batch,
                                             args.threads)
        print(format_table(name, work, batch, result, args.threads), flush=True)
        print("engine: binary MACs not counted (binarynet.summary misses an op of this graph)"
              if rate is None else f"engine: {rate / 1e9:.1f} G binary MAC/s ({macs / 1e6:.1f} M "
              "binary MACs per sample)", flush=True)
    return result


def header(args, peak) -> str:
    import onnxruntime

    plural = "s" if args.threads != 1 else ""
    peak_text = ("peak: not measured (the engine has no xor_popcount_probe)" if peak is None else
                 f"xor+popcount peak {peak / 1e9:.0f} G bit-MAC/s on {args.threads} thread{plural}")
    return (f"CPU: {timing.cpu_description()}; {args.threads} thread{plural} for every contender; "
            f"engine kernels {kernels.get_backend()}\nonnxruntime {onnxruntime.__version__}, "
            f"torch {torch.__version__}; medians of {args.repeats} interleaved rounds; "
            f"ORT and torch threads sleep when idle (no spinning)\n{peak_text}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 15, fewer images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--networks", default=",".join(WORKLOADS), help="comma-separated subset")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process peaks")
    parser.add_argument("--json", help="write every number to this file")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.networks.split(",")) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown network(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    args.repeats = 3 if args.quick else 15
    args.agreement, args.agreement_zoo = (128, 4) if args.quick else (1000, 16)
    args.calibration_batches, args.calibration_batch = (2, 4) if args.quick else (4, 8)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    kernels.set_num_threads(args.threads)
    peak = popcount_peak(args.threads, args.repeats)
    print(header(args, peak), flush=True)
    import onnxruntime

    report = {"cpu": timing.cpu_description(), "threads": args.threads, "repeats": args.repeats,
              "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
              "engine_kernels": kernels.get_backend(), "peak_bit_macs_per_s": peak,
              "workloads": {}, "skipped": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.networks.split(","):
            result = run_workload(name, WORKLOADS[name], args, peak, tmp)
            if "skipped" in result:
                report["skipped"][name] = result["skipped"]
            else:
                report["workloads"][name] = result
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
