"""Where the engine's time goes: per op kind, for the paper networks and the modern BNNs.

    python benchmarks/profile_engine.py NETWORK BATCH THREADS [--uint8]

NETWORK: mnist_mlp, cifar10_vgg, reactnet18, quicknet (small, 224x224, 1000 classes). The
networks are as built after two training-mode batches (batch-norm statistics of real
activations); random weights do not change the engine's speed. Prints the median time of each
step kind over ``--repeats`` runs (``PackedModel.profile``: fused steps are one entry, named
by their ops joined with +), their sum, and predict's median, with the CPU it ran on.
``--uint8``: uint8 images with the export's input scale and offset (else float32 images).
"""
from __future__ import annotations

import argparse
import collections
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from binarynet.threads import set_passive_wait_policy  # noqa: E402

set_passive_wait_policy()  # before torch loads: its idle OpenMP threads must not spin

import numpy as np  # noqa: E402
import torch  # noqa: E402

import binarynet as bn  # noqa: E402
from binarynet import timing  # noqa: E402
from binarynet.engine import kernels  # noqa: E402

NETWORKS = {
    "mnist_mlp": (lambda: bn.models.get("mnist_mlp"), (1, 28, 28)),
    "cifar10_vgg": (lambda: bn.models.get("cifar10_vgg"), (3, 32, 32)),
    "reactnet18": (lambda: bn.models.get("reactnet18", num_classes=1000, input_size=224),
                   (3, 224, 224)),
    "quicknet": (lambda: bn.models.get("quicknet", size="small", num_classes=1000,
                                       input_size=224), (3, 224, 224)),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("network", choices=sorted(NETWORKS))
    parser.add_argument("batch", type=int)
    parser.add_argument("threads", type=int)
    parser.add_argument("--uint8", action="store_true")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    build, shape = NETWORKS[args.network]
    model = build().train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, *shape))
    model.eval()
    rng = np.random.default_rng(0)
    if args.uint8:
        example = torch.randint(0, 256, (2, *shape), dtype=torch.uint8)
        packed = bn.export.export(model, example, input_scale=2 / 255, input_offset=-1.0)
        x = rng.integers(0, 256, (args.batch, *shape), dtype=np.uint8)
    else:
        packed = bn.export.export(model, torch.randn(2, *shape))
        x = rng.standard_normal((args.batch, *shape)).astype(np.float32)
    kernels.set_num_threads(args.threads)
    for _ in range(3):
        packed.predict(x)
    per_kind = collections.defaultdict(float)
    for _, kind, seconds in packed.profile(x, repeats=args.repeats):
        per_kind[kind] += seconds
    predict = timing.median_seconds({"predict": lambda: packed.predict(x)}, args.repeats)
    print(f"{args.network}, batch {args.batch}, {args.threads} thread(s), "
          f"{'uint8' if args.uint8 else 'float32'} input; {timing.cpu_description()}; "
          f"engine kernels {kernels.get_backend()}")
    for kind, seconds in sorted(per_kind.items(), key=lambda item: -item[1]):
        print(f"  {kind:<40} {1e3 * seconds:9.3f} ms")
    print(f"  {'sum of steps':<40} {1e3 * sum(per_kind.values()):9.3f} ms")
    print(f"  {'predict (median)':<40} {1e3 * predict['predict']:9.3f} ms")


if __name__ == "__main__":
    main()
