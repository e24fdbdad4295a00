"""``binarynet export``, ``binarynet predict`` and ``binarynet bench``: argument parsing and
printing over binarynet.export, binarynet.engine and binarynet.speed."""
from __future__ import annotations

import json
import os
import time

import numpy as np

from ..errors import BinarynetError, DataError
from .files import require_checkpoint, require_packed_model
from .options import positive_int


def register(subparsers) -> None:
    """Add the export / predict / bench sub-commands to the ``binarynet`` parser."""
    p = subparsers.add_parser(
        "export", help="turn a training checkpoint into a packed 1-bit model file (.bnn)",
        description="Export a checkpoint (or a run folder: its best.pt) to the packed model file "
        "the torch-free engine runs: 1-bit weights, batch norm + sign folded into integer "
        "thresholds, the input normalisation folded into the first layer. By default the file "
        "goes into the run folder as model.bnn, where `binarynet report` finds it.")
    p.add_argument("checkpoint", help="checkpoint file, or a run folder (uses its best.pt)")
    p.add_argument("-o", "--output", help="packed model file to write (default: model.bnn in "
                   "the checkpoint's run folder)")
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
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="samples per engine call")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="engine threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=run_predict)

    p = subparsers.add_parser(
        "bench", help="engine vs float PyTorch: speed and peak memory of a packed model",
        description="Time the packed engine (uint8 input, first layer included) against the same "
        "network in float32 PyTorch (Linear/Conv2d with the +-1 weights, BatchNorm, Sign; see "
        "binarynet.export.to_torch), interleaved repeats, median; and each one's peak memory in "
        "a fresh process. Prints the CPU and thread count the figures come from.")
    p.add_argument("model", help="packed model file (.bnn)")
    p.add_argument("--batch-sizes", default="1,64,256", help="comma-separated (default 1,64,256)")
    p.add_argument("--threads", type=positive_int, default=2, help="threads of both (default 2)")
    p.add_argument("--repeats", type=positive_int, default=15,
                   help="interleaved timing rounds (default 15)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=run_bench)


# -- export -------------------------------------------------------------------------------------
def default_output(checkpoint: str) -> str:
    """model.bnn beside the checkpoint: in its run folder, where the report looks for it."""
    from ..runs import MODEL_FILE

    return os.path.join(os.path.dirname(checkpoint) or ".", MODEL_FILE)


def run_export(args) -> int:
    """``binarynet export``: checkpoint -> .bnn."""
    import torch

    from ..export import export
    from ..speed import state_dict_bytes
    from ..summary import recipe_input
    from ..train.checkpoint import load_model

    checkpoint = require_checkpoint(args.checkpoint, "export")
    output = args.output or default_output(checkpoint)
    model, recipe, (scale, offset) = load_model(checkpoint)
    shape, _ = recipe_input(recipe)
    example = torch.randint(0, 256, (64, *shape), dtype=torch.uint8,
                            generator=torch.Generator().manual_seed(0))
    packed = export(model, example, input_scale=scale, input_offset=offset,
                    first_layer=args.first_layer)
    size = packed.save(output)
    float_bytes = state_dict_bytes(model)
    print(f"exported {checkpoint} ({recipe.name}) -> {output}: {size} bytes, "
          f"{float_bytes / size:.1f}x smaller than the float32 state_dict ({float_bytes} bytes)")
    print(packed.summary())
    return 0


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
    try:
        dataset = data.load(spec, split, data_dir=data_dir, download=download)
    except ValueError as exc:  # unknown dataset or split: the message lists the known ones
        raise DataError(str(exc)) from None
    return dataset.images.numpy(), dataset.labels.numpy()


def run_predict(args) -> int:
    """``binarynet predict``: accuracy of a packed model."""
    from .. import engine
    from ..engine import kernels

    model = engine.load(require_packed_model(args.model, "predict"))
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
def _batch_sizes(text: str) -> list:
    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise BinarynetError(f"--batch-sizes expects positive integers like 1,64,256, got {text!r}")
    return sizes


def run_bench(args) -> int:
    """``binarynet bench``: engine vs float torch speed and peak memory."""
    from .. import engine, timing
    from ..engine import kernels
    from ..speed import compare_speed, format_memory, machine, peak_memory

    batch_sizes = _batch_sizes(args.batch_sizes)
    model = engine.load(require_packed_model(args.model, "bench"))
    rows = compare_speed(model, batch_sizes, threads=args.threads, repeats=args.repeats)
    memory = None if args.no_memory else peak_memory(args.model, max(batch_sizes), args.threads)
    if args.json:
        print(json.dumps({"model": args.model, "threads": args.threads, "speed": rows,
                          "memory": memory, "cpu": timing.cpu_description(),
                          "kernels": kernels.cpu_features()}))
        return 0
    print(f"{args.model}: engine (uint8 input) vs float32 PyTorch, median of {args.repeats} "
          f"interleaved rounds\non {machine(args.threads)}")
    print(f"{'batch':>6} {'engine ms':>11} {'torch ms':>11} {'speed-up':>9}   (best of rounds: "
          "engine ms, torch ms, speed-up)")
    for row in rows:
        print(f"{row['batch']:>6} {row['engine_ms']:>11.3f} {row['torch_ms']:>11.3f} "
              f"{row['speedup']:>8.1f}x   ({row['engine_best_ms']:.3f}, {row['torch_best_ms']:.3f}, "
              f"{row['speedup_best']:.1f}x)")
    if memory:
        print(format_memory(memory, max(batch_sizes)))
    return 0
