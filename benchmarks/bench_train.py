"""Training speed of the paper's networks: samples/s, seconds per epoch and share of the device's peak.

For the paper MLP (``mnist_mlp``, 3x4096, batch 100) and the paper ConvNet (``cifar10_vgg``,
batch 50), on the CPU and (when present) a CUDA GPU, one training step is what
``binarynet train`` does: a batch gathered from a device-resident split of the training set's
size (random uint8 images; :class:`binarynet.train.step_batches.StepBatches`), forward, squared
hinge, backward, fused Adam with the per-layer Glorot scales and latent clipping. On a GPU under
bf16 autocast (``--amp``), the ConvNet in channels_last. The float twin of each network
(``nn.Linear`` / ``nn.Conv2d`` for the binary layers, ``nn.Hardtanh`` for ``Sign``, same BN and
loss, fused ``torch.optim.Adam``) is timed interleaved with it (``binarynet.timing``).

FLOPs per training sample are counted from the layers' shapes: each dense or convolution layer
does M multiply-adds per sample forward (in x out for a dense layer; C_in/groups x kh x kw x
C_out x H_out x W_out for a convolution, output sizes taken from a forward pass), 2M FLOPs; the
backward pass twice that (gradients of the input and of the weight). Batch norm, signs,
pooling, the loss and the optimizer are not counted (they are memory-bound and small). Seconds
per epoch = steps per epoch (training split // batch) x seconds per step.

    python benchmarks/bench_train.py [--devices cpu,cuda] [--threads N] [--cpu-peak-gflops G]
                                     [--gpu-peak-tflops T] [--json out.json] [--quick]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from binarynet import threads  # noqa: E402

threads.set_passive_wait_policy()  # before torch loads OpenMP

import torch  # noqa: E402
from torch import nn  # noqa: E402

import binarynet as bn  # noqa: E402
from binarynet.data import ImageDataset  # noqa: E402
from binarynet.timing import cpu_description, median_seconds  # noqa: E402
from binarynet.train.builders import autocast  # noqa: E402
from binarynet.train.step_batches import StepBatches  # noqa: E402

# name: model, its overrides in --quick, image shape, training-split size (train minus val), batch.
NETWORKS = {
    "paper MLP (mnist_mlp)": ("mnist_mlp", {"hidden": 64}, (1, 28, 28), 50_000, 100),
    "paper ConvNet (cifar10_vgg)": ("cifar10_vgg", {"widths": (8, 16, 32), "fc": (32, 32)}, (3, 32, 32),
                                    45_000, 50),
}
# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets.
GPU_BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0,
                        "L4": 121.0}


def float_twin(binary: nn.Sequential) -> nn.Sequential:
    """The same network with float layers: BinaryLinear -> Linear, BinaryConv2d -> Conv2d, Sign -> Hardtanh."""
    layers = []
    for module in binary:
        if isinstance(module, bn.nn.BinaryLinear):
            layers.append(nn.Linear(module.in_features, module.out_features, bias=module.bias is not None))
        elif isinstance(module, bn.nn.BinaryConv2d):
            layers.append(nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                                    module.padding, groups=module.groups, bias=module.bias is not None))
        elif isinstance(module, bn.nn.Sign):
            layers.append(nn.Hardtanh())
        else:
            layers.append(copy.deepcopy(module))
    return nn.Sequential(*layers)


def training_flops_per_sample(model: nn.Module, image_shape) -> int:
    """6 x the multiply-adds per sample of the dense and convolution layers (see the docstring)."""
    macs = []

    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs.append(module.in_channels // module.groups * kh * kw * output[0].numel())
        else:
            macs.append(module.in_features * module.out_features)

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *image_shape))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return 6 * sum(macs)


def cpu_peak_gflops(cores: int) -> tuple:
    """(fp32 GFLOP/s, how it was obtained): cores x clock x FLOPs per cycle of the vector units."""
    flags, mhz = set(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    flags = set(value.split())
                elif key.strip() == "cpu MHz":
                    mhz.append(float(value))
    except OSError:
        pass
    if not mhz:
        return None, "unknown (no clock in /proc/cpuinfo; give --cpu-peak-gflops)"
    if "avx512f" in flags:
        per_cycle, unit = 64, "2 AVX-512 FMA units x 16 fp32 x 2"
    elif "avx2" in flags and "fma" in flags:
        per_cycle, unit = 32, "2 AVX2 FMA units x 8 fp32 x 2"
    else:
        per_cycle, unit = 8, "SSE, 4 fp32 x (mul + add)"
    ghz = statistics.median(mhz) / 1000
    return cores * ghz * per_cycle, f"estimated: {cores} cores x {ghz:.2f} GHz x {per_cycle} FLOP/cycle ({unit}, assumed)"


def gpu_peak_tflops(name: str) -> tuple:
    """(bf16 dense TFLOP/s, how it was obtained) for a GPU named ``name``."""
    for key, peak in GPU_BF16_PEAK_TFLOPS.items():  # "H100 PCIe" before "H100"
        if key in name:
            return peak, f"bf16 dense peak of {key} (data sheet)"
    return None, f"unknown for {name} (give --gpu-peak-tflops)"


def make_step(model, optimizer, batches, order, batch, generator, device, amp, channels_last):
    """One training step per call, walking through ``order`` batch by batch."""
    position = [0]

    def step():
        start = position[0] % (len(order) - batch + 1)
        position[0] = start + batch
        x, y = batches.batch(order[start:start + batch], generator)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):  # the trainer's: bf16, or fp16 on GPUs without it
            scores = model(x)
        loss = bn.losses.squared_hinge(scores.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def measure(name: str, device: torch.device, args) -> dict:
    """Seconds per step of the binary network and its float twin on ``device``."""
    model_name, quick_overrides, shape, split_size, batch = NETWORKS[name]
    overrides = quick_overrides if args.quick else {}
    samples = 2_000 if args.quick else split_size
    batch = 20 if args.quick else batch
    torch.manual_seed(0)
    binary = bn.models.get(model_name, **overrides)
    flops = training_flops_per_sample(binary, shape)
    on_gpu = device.type == "cuda"
    amp, channels_last = on_gpu and args.amp, on_gpu and len(shape) == 3 and model_name != "mnist_mlp"
    images = torch.randint(0, 256, (samples, *shape), dtype=torch.uint8)
    dataset = ImageDataset("synthetic", "train", images, torch.randint(0, 10, (samples,)), tuple("0123456789"))
    batches = StepBatches(dataset, ((2 / 255,) * shape[0], (-1.0,) * shape[0]), device)
    order = torch.randperm(samples).to(batches.home)
    steps = {}
    for kind, model in (("binary", binary), ("float", float_twin(binary))):
        model = model.to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        # fused Adam on every device, as binarynet train (train.builders.build_optimizer) steps
        optimizer = (bn.optim.Adam(bn.optim.param_groups(model, 1e-3), fused=True) if kind == "binary"
                     else torch.optim.Adam(model.parameters(), 1e-3, fused=True))
        steps[kind] = make_step(model, optimizer, batches, order, batch, torch.Generator().manual_seed(0),
                                device, amp, channels_last)
    sync = torch.cuda.synchronize if on_gpu else None
    seconds = median_seconds(steps, repeats=args.repeats, min_seconds=args.min_seconds, warmup=3, sync=sync)
    return {"network": name, "device": device.type, "batch": batch, "samples": samples, "amp_bf16": amp,
            "channels_last": channels_last, "flops_per_sample": flops,
            "seconds_per_step": seconds, "steps_per_epoch": samples // batch}


def report(result: dict, peak_flops: float | None) -> list:
    """Printed lines of one :func:`measure` result (and the fields added to it)."""
    lines = []
    for kind, seconds in result["seconds_per_step"].items():
        rate = result["batch"] / seconds
        achieved = rate * result["flops_per_sample"]
        share = achieved / peak_flops if peak_flops else None
        result.setdefault("rows", {})[kind] = {"samples_per_s": rate, "epoch_s": seconds * result["steps_per_epoch"],
                                               "flops_per_s": achieved, "share_of_peak": share}
        lines.append(f"  {kind:>6}: {seconds * 1e3:9.2f} ms/step {rate:10.0f} samples/s "
                     f"{seconds * result['steps_per_epoch']:9.2f} s/epoch ({result['samples']} samples) "
                     f"{achieved / 1e12:8.3f} TFLOP/s" + (f" = {100 * share:6.2f}% of peak" if share else ""))
    ratio = result["seconds_per_step"]["binary"] / result["seconds_per_step"]["float"]
    lines.append(f"  binary / float time per step: {ratio:.2f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated; cuda is skipped when absent")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: binarynet.threads)")
    parser.add_argument("--cpu-peak-gflops", type=float, help="fp32 peak of the cores used (default: estimated)")
    parser.add_argument("--gpu-peak-tflops", type=float, help="bf16 dense peak (default: from a table)")
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="float32 on the GPU too")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--min-seconds", type=float, default=0.5, help="length of one timing block")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--quick", action="store_true", help="tiny networks and data (a smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.min_seconds = 2, 0.001
    torch.set_num_threads(args.threads or threads.default_threads())
    devices = [d for d in args.devices.split(",") if d == "cpu" or (d == "cuda" and torch.cuda.is_available())]
    results = []
    print(f"torch {torch.__version__}; CPU: {cpu_description()}, {torch.get_num_threads()} torch threads"
          + (" (--quick: small networks, not the paper's)" if args.quick else ""))
    for device_name in devices:
        device = torch.device(device_name)
        if device.type == "cuda":
            gpu = torch.cuda.get_device_name(device)
            peak, how = ((args.gpu_peak_tflops, "--gpu-peak-tflops") if args.gpu_peak_tflops
                         else gpu_peak_tflops(gpu))
            peak_flops = peak * 1e12 if peak else None
            print(f"\nGPU {gpu}: peak {peak} TFLOP/s ({how})")
        else:
            peak, how = ((args.cpu_peak_gflops, "--cpu-peak-gflops") if args.cpu_peak_gflops
                         else cpu_peak_gflops(torch.get_num_threads()))
            peak_flops = peak * 1e9 if peak else None
            print(f"\nCPU: peak {peak and round(peak, 1)} GFLOP/s fp32 ({how})")
        for name in NETWORKS:
            result = measure(name, device, args)
            print(f"{name} on {device.type}, batch {result['batch']}, {result['flops_per_sample'] / 1e9:.4f} GFLOP "
                  f"per training sample (6 x multiply-adds), bf16 autocast {result['amp_bf16']}, channels_last "
                  f"{result['channels_last']}:")
            print("\n".join(report(result, peak_flops)), flush=True)
            results.append({**result, "peak_flops": peak_flops, "peak_source": how})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_description(), "torch": torch.__version__, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
