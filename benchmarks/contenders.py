"""The engine's contenders in ``bench_int8.py``: the same network's float form in ONNX Runtime
(fp32 and int8) and in torch int8, built the way they were measured for issue 12.

- **float form**: :func:`float_form` turns a binarynet torch model (a training model, or
  ``export.to_torch`` of a packed one) into a plain eval network computing the same function:
  every binary weight a constant +-1 (times its output scale), every binarization a
  ``torch.where(x >= 0, 1, -1)``. The library's sign (``copysign`` in autograd Functions) has no
  ONNX symbolic, and torch's TorchScript ONNX exporter fails (``unordered_map::at``) on two
  inlined sign Functions in one graph; ``where`` exports as one ONNX op. The result is checked to
  give bit-identical logits to the model it came from (:func:`check_same_function`).
- **ONNX**: torch's TorchScript exporter (``dynamo=False``: the dynamo one needs onnxscript),
  opset 17, a dynamic batch axis.
- **ORT int8**: after ORT's recommended ``quant_pre_process`` (shape inference, graph
  optimisation), ``quantize_dynamic`` for MLPs (int8 weights, activations quantized at run time)
  and ``quantize_static`` in QDQ format for convnets, calibrated (MinMax) on a few batches of
  realistic inputs, with uint8 activations and int8 weights (U8S8; int8 activations, S8S8,
  were 16% faster at batch 1 and 12% slower at batch 64 on the paper ConvNet in one check on
  a loaded machine, so neither is clearly ORT's best here).
- **torch int8**: ``torch.ao.quantization.quantize_dynamic`` on the Linear layers (MLP).
- **ORT sessions**: ``intra_op_num_threads`` threads, sequential, and
  ``session.intra_op.allow_spinning = "0"``: by default ORT's pool threads spin for a while after
  each run waiting for more work, which on a machine where contenders are timed round by round
  would steal the cores from the next contender (torch is kept from spinning the same way by
  ``OMP_WAIT_POLICY=PASSIVE``, :mod:`binarynet.threads`).

The ORT parts (sessions, quantization, peak memory of a session in a fresh process, as
:func:`binarynet.speed.peak_memory` does for the engine and torch) are in :mod:`ort_contender`,
which does not import torch.

onnxruntime and onnx are the ``bench`` extra (``pip install .[bench]``), never required by the
library.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

import binarynet as bn

OPSET = 17
# quantizers whose eval-mode forward is sign(x) (sign(0) = +1): the ones float_form may replace
SIGN_QUANTIZERS = ("sign", "ste_sign", "approx_sign", "swish_sign", "stochastic_sign")


class ContenderError(RuntimeError):
    """A contender could not be built for this network (the benchmark prints it and goes on)."""


def where_sign(x: torch.Tensor) -> torch.Tensor:
    """+1 where x >= 0 else -1 (sign(-0.0) = +1 too), as one exportable op."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


class WhereSign(nn.Module):
    """sign(x + shift) (a ``Sign`` without shift, an ``RSign`` with its per-channel one)."""

    def __init__(self, shift=None) -> None:
        super().__init__()
        self.shift = (None if shift is None else
                      nn.Parameter(shift.detach().clone(), requires_grad=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shift is not None:
            x = x + self.shift.view(1, -1, *([1] * (x.dim() - 2)))
        return where_sign(x)


def _sign_like(name, owner: str) -> None:
    if name is not None and not str(name).split("(")[0] in SIGN_QUANTIZERS:
        raise ContenderError(f"float form: {owner} uses quantizer {name}, which is not a sign")


def _freeze(layer: bn.nn.BinaryLayer) -> None:
    """The binary layer with its eval-mode weight (+-1) as a constant and a where-sign input."""
    _sign_like(layer.input_quantizer_name, type(layer).__name__)
    alpha = layer.output_scale()
    weight = layer.quantized_weight().detach().clone()
    layer.weight_quantizer = None
    layer.weight.data = weight
    if alpha is not None:  # mean |W| of the latent weight: keep it as a fixed factor
        layer.scale = "learned"
        layer.channel_scale = nn.Parameter(alpha.detach().clone(), requires_grad=False)
    if layer.input_quantizer is not None:
        layer.input_quantizer = where_sign


def float_form(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode that ONNX can export (see the module docstring)."""
    net = copy.deepcopy(model).eval()
    with torch.no_grad():
        for module in list(net.modules()):
            if isinstance(module, bn.nn.BinaryLayer):
                _freeze(module)
        for parent in list(net.modules()):
            for name, child in parent.named_children():
                if isinstance(child, bn.nn.Sign):
                    setattr(parent, name, WhereSign())
                elif isinstance(child, bn.nn.RSign):
                    _sign_like(child.quantizer_name, "RSign")
                    setattr(parent, name, WhereSign(child.shift))
    return net


def check_same_function(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    """Raise ContenderError unless ``a`` and ``b`` give identical outputs on ``x``."""
    with torch.inference_mode():
        ya, yb = a(x), b(x)
    if not torch.equal(ya, yb):
        raise ContenderError(f"float form differs from the model by "
                             f"{(ya - yb).abs().max().item():.3g} on the check batch")


def export_onnx(net: nn.Module, example: torch.Tensor, path: str) -> None:
    """``net`` as an ONNX file with a dynamic batch axis."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and trace notes
        torch.onnx.export(net, (example,), path, dynamo=False, opset_version=OPSET,
                          input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})


def torch_int8_dynamic(net: nn.Module) -> nn.Module:
    """torch's dynamic int8 quantization of the Linear layers of ``net``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        return torch.ao.quantization.quantize_dynamic(net, {nn.Linear}, dtype=torch.qint8)
