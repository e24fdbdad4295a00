"""``export``: a trained torch model -> :class:`~binarynet.engine.PackedModel`, checked against
the torch model on the example input."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from torch import nn

from ..engine.model import PackedModel
from ..errors import ExportError
from .builder import walk
from .dag import DagBuilder
from .inputs import example_batch, normalisation, to_float
from .modules import CHAIN_TYPES, chain_eligible
from .fx_trace import chain_leaves, trace
from .writer import GraphWriter


def export(model: nn.Module, example_input, input_scale=None, input_offset=None,
           first_layer: str = "bitplane") -> PackedModel:
    """Turn a trained binarynet model into a :class:`~binarynet.engine.PackedModel`.

    Args:
        model: a model of binarynet layers and standard modules (see :mod:`binarynet.export`):
            a chain of the paper networks' modules (:data:`SUPPORTED_MODULES`) keeps the fused
            chain ops, anything else is traced with torch.fx into a DAG. It is evaluated in eval
            mode (restored afterwards).
        example_input: a batch shaped like the model's input (N, C, H, W) or (N, K): float
            (normalised), or uint8 when ``input_scale``/``input_offset`` are given. It fixes the
            input shape and is used for a final engine-vs-torch check.
        input_scale, input_offset: the training normalisation x_f = x_u8 * scale + offset (a
            number or one per channel), e.g. 2/255 and -1; lets the engine take uint8 images.
        first_layer: "bitplane" (paper §1.6: 8 popcount bit planes) or "int" (integer product)
            for the chain's first layer on uint8 input. Both give the same integers. (A DAG's
            first layer is a real convolution of the normalised float input.)

    Returns:
        the packed model; ``packed.export_report`` records the path ("chain" or "dag"), per layer
        how many thresholds the verification adjusted, constant and flipped channels, and the
        final check's result.

    Raises:
        ExportError: unsupported module (named by its path and type) or function, a model
            torch.fx cannot trace, non-binary weights, non-monotone decisions, output affine
            mismatch.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"export: model must be a torch.nn.Module, got {type(model).__name__}")
    if first_layer not in ("bitplane", "int"):
        raise ValueError(f"export: first_layer must be 'bitplane' or 'int', got {first_layer!r}")
    tensors = list(model.parameters()) + list(model.buffers())
    floats = {t.dtype for t in tensors if t.is_floating_point()}
    if floats - {torch.float32}:
        raise ExportError(f"export reproduces float32 models; this one has "
                          f"{sorted(str(d) for d in floats)} parameters (call model.float())")
    if any(t.device.type != "cpu" for t in tensors):
        model = copy.deepcopy(model).cpu()  # decisions are evaluated on the CPU
    x = example_batch(example_input, input_scale)
    scale, offset = normalisation(input_scale, input_offset, tuple(x.shape[1:]))
    x_torch, x_u8 = x, None
    if x.dtype == torch.uint8:
        x_torch, x_u8 = to_float(x, scale, offset), x
    states = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            writer = _graph(model, x_torch, lambda: GraphWriter(tuple(x_torch.shape[1:]), scale,
                                                                offset, first_layer))
            expected = model(x_torch)
            packed = PackedModel(writer.graph(), writer.tensors)
            packed.export_report = writer.report
            _final_check(packed, expected, x_torch, x_u8)
    finally:
        for module, training in states.items():
            module.training = training
    return packed


def _graph(model: nn.Module, x: torch.Tensor, new_writer) -> GraphWriter:
    """The engine graph of ``model`` (eval mode) in a writer from ``new_writer()``.

    A chain of the modules the paper networks use (an nn.Sequential, or any model tracing to
    such a chain) keeps the fused chain ops with verified integer thresholds (:mod:`.builder`);
    any other model, or a chain that path refuses, is traced into a DAG (:mod:`.dag`). When
    both refuse a chain, the error says why each did.
    """
    leaves, gm, chain_error = chain_eligible(model), None, None
    if leaves is None:
        gm = trace(model, x)
        leaves = chain_leaves(gm, CHAIN_TYPES)
    if leaves is not None:
        try:
            writer = new_writer()
            walk(writer, leaves)
            writer.report["path"] = "chain"
            return writer
        except ExportError as err:
            chain_error = err
    try:
        gm = gm if gm is not None else trace(model, x)
        writer = new_writer()
        builder = DagBuilder(gm, writer)
        builder.run()
    except ExportError as err:
        if chain_error is None:
            raise
        raise ExportError(f"{chain_error}; the traced export also refuses it: {err}") from None
    writer.report["path"] = "dag"
    writer.report["signs"] = builder.signs
    return writer


def _final_check(packed: PackedModel, expected: torch.Tensor, x_float: torch.Tensor, x_u8) -> None:
    """Run the engine on the example input and compare with the torch model (warn on mismatch)."""
    expected = expected.double().numpy()
    if expected.shape != (x_float.shape[0], packed.num_classes):
        raise ExportError(f"the torch model outputs shape {tuple(expected.shape)}, the export "
                          f"expected (N, {packed.num_classes}); the model has modules export "
                          "does not see")
    inputs = [("float", x_float.numpy())]
    if x_u8 is not None:
        inputs.append(("uint8", x_u8.numpy()))
    results = {}
    for kind, x in inputs:
        got = packed.predict(x).astype(np.float64)
        size = np.abs(expected).max(axis=1, keepdims=True) + 1e-12
        rel = float(np.max(np.abs(got - expected) / size))
        argmax_diff = int(np.sum(got.argmax(1) != expected.argmax(1)))
        results[kind] = {"max_relative_error": rel, "argmax_mismatches": argmax_diff}
        if rel > 1e-4 or argmax_diff:
            warnings.warn(
                f"export: on the example input ({kind} path) the engine's logits differ from the "
                f"torch model's (max relative error {rel:.2e}, {argmax_diff} different argmax of "
                f"{len(x)}); near-ties of a sign round differently in float32 (see "
                "binarynet.export.first_layer and binarynet.export.values)", UserWarning,
                stacklevel=3)
    packed.export_report["example_check"] = results
