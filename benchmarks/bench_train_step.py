"""Time of one training step of the paper's MNIST MLP (3 x 4096), binary vs float.

Binary: ``binarynet.models.mnist_mlp()`` trained with ``bn.optim.Adam`` (LR-scaled param
groups, latent clipping) and the squared hinge. Float: the identical network with
``nn.Linear`` for ``BinaryLinear`` and ``nn.Hardtanh`` for ``Sign`` (same BN, dropout, loss),
trained with ``torch.optim.Adam``. A step is forward + backward + optimizer step on a batch of
100. The two are timed in interleaved repetitions (binarynet.timing: one step per sample, so
machine load hits both alike) and the median times are compared. The output names the CPU
(model, clock, cores) and the threads.

    python benchmarks/bench_train_step.py [--reps 15] [--threads 2] [--batch 100]
"""
from __future__ import annotations

import argparse
import statistics

import torch

import binarynet as bn
from binarynet import timing
from bench_train import float_twin  # the one float twin (benchmarks/ is on sys.path when run)


def make_step(model, optimizer, x, y):
    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = bn.losses.squared_hinge(model(x), y)
        loss.backward()
        optimizer.step()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15, help="timed steps per network (interleaved)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28) * 2 - 1
    y = torch.randint(0, 10, (args.batch,))

    binary = bn.models.mnist_mlp()
    floating = float_twin(binary)
    steps = {
        "binary": make_step(binary, bn.optim.Adam(bn.optim.param_groups(binary, 3e-3)), x, y),
        "float": make_step(floating, torch.optim.Adam(floating.parameters(), 3e-3), x, y),
    }
    # min_seconds=0: every sample is exactly one step
    times = timing.interleaved_samples(steps, repeats=args.reps, min_seconds=0.0,
                                       warmup=args.warmup)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"CPU: {timing.cpu_description()}; {args.threads} torch threads, batch {args.batch}, "
          f"{args.reps} interleaved steps each (torch {torch.__version__})")
    for name in steps:
        print(f"{name:>6}: median {med[name] * 1e3:8.1f} ms/step  (min {min(times[name]) * 1e3:.1f} ms)")
    print(f"ratio binary/float: {med['binary'] / med['float']:.3f}")


if __name__ == "__main__":
    main()
