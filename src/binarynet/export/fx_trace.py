"""Tracing a model with torch.fx: binarynet's layers and torch's own modules stay leaves, every
other module (``Residual``, ``DoubledPointwise``, users' blocks) is traced through, so adds and
concatenations written in ``forward`` become graph nodes.

:func:`trace` gives the traced graph with every node's output shape (from running the example
input), and :func:`chain_leaves` tells whether the graph is a plain chain of the modules the
format-2 chain export handles (the paper networks: they keep that exact, fused path).
"""
from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from .. import nn as bnn
from ..errors import ExportError
from .modules import describe


def _leaf_types() -> tuple:
    # BlurPool is a fixed depthwise conv whose forward reads x.shape: a leaf, exported as
    # conv_real. Imported here so that export/models stay importable in either order.
    from ..models.quicknet import BlurPool

    return (bnn.BinaryLayer, bnn.Sign, bnn.RSign, bnn.RPReLU, bnn.ShiftBatchNorm1d,
            bnn.ShiftBatchNorm2d, BlurPool)


class _Tracer(fx.Tracer):
    """torch.fx tracer with binarynet's layers as leaves; names the module a trace fails in."""

    def __init__(self):
        super().__init__()
        self.leaves = _leaf_types()

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return isinstance(m, self.leaves) or super().is_leaf_module(m, qualified_name)

    def call_module(self, m, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except ExportError:
            raise
        except Exception as err:  # a forward torch.fx cannot follow (data-dependent code)
            path = self.path_of_module(m)
            raise ExportError(f"{describe(path, m)} cannot be traced by torch.fx: "
                              f"{_first_line(err)}") from None


def trace(model: nn.Module, x: torch.Tensor) -> fx.GraphModule:
    """The model traced (dead nodes removed), each node's ``meta["shape"]`` set from ``x``.

    The model must be in eval mode; raises :class:`ExportError` naming the module that cannot
    be traced.
    """
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except ExportError:
        raise
    except Exception as err:
        raise ExportError(f"the model cannot be traced by torch.fx: "
                          f"{_first_line(err)}") from None
    gm = fx.GraphModule(tracer.root, graph)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ExportError(f"export takes models with one input tensor; forward has "
                          f"{len(placeholders)} inputs")
    with torch.no_grad():
        _Shapes(gm, x).run(x)
    return gm


class _Shapes(fx.Interpreter):
    """Runs the traced model on the example input, recording each node's output shape in
    ``meta["shape"]`` (None when it is not a tensor) and naming the node that fails on it."""

    def __init__(self, gm: fx.GraphModule, x: torch.Tensor):
        super().__init__(gm)
        self.extra_traceback = False  # our message names the node; keep the model's error as is
        self.input_shape = tuple(x.shape)

    def run_node(self, n):
        try:
            out = super().run_node(n)
        except ExportError:
            raise
        except Exception as err:  # the model's own error on this input (a shape mismatch...)
            what = (describe(n.target, module_of(self.module, n)) if n.op == "call_module"
                    else f"{getattr(n.target, '__name__', n.target)!r} in {where(n)}")
            raise ExportError(f"{what} fails on the example input of shape {self.input_shape}: "
                              f"{_first_line(err)}") from None
        n.meta["shape"] = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        return out


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def module_of(gm: fx.GraphModule, node: fx.Node) -> nn.Module:
    return gm.get_submodule(node.target)


def where(node: fx.Node) -> str:
    """The module a function node was called in (from the tracer's module stack), for errors."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "the model's forward"
    path, kind = list(stack.values())[-1]
    name = kind.__name__ if isinstance(kind, type) else str(kind).rsplit(".", 1)[-1]
    return f"module {path!r} ({name})"


def chain_leaves(gm: fx.GraphModule, supported: tuple):
    """``[(path, module)]`` when the traced graph is a chain of ``supported`` modules, each
    reading the previous one, with no binary layer scaled (``scale=``); else None."""
    leaves, previous = [], None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            previous = node
        elif node.op == "output":
            return leaves if leaves and node.args[0] is previous else None
        elif node.op != "call_module" or node.args != (previous,) or node.kwargs:
            return None
        else:
            m = module_of(gm, node)
            if not isinstance(m, supported) or (isinstance(m, bnn.BinaryLayer)
                                                and m.scale is not None):
                return None
            leaves.append((node.target, m))
            previous = node
    return None
