"""The traced export: a torch.fx graph (:mod:`.trace`) -> an engine graph of format 3 (a DAG
with a real-valued stream: ``bconv``/``bdense`` with float output, ``sign``, ``scale_shift``,
``add``, ``concat``, pools, ``prelu``, ``conv_real``/``dense_real``; docs/design.md).

Each fx node becomes a :class:`~.values.Value`; module nodes are turned into ops by the
handlers of :mod:`.dag_modules`, function nodes (``a + b``, ``torch.cat``, ``F.relu``,
``torch.flatten``) here. Folding, all from the torch modules' own parameters:

- a batch norm after a binary conv / dense -> its scale and shift (with the layer's
  magnitude-aware alpha): scale = alpha * gamma / sqrt(var + eps), shift = beta + (bias - mean)
  * gamma / sqrt(var + eps), in float64, then float32;
- a batch norm after a real conv / dense -> its weights and bias (float64, then float32);
- a batch norm (or RSign's shift) before a sign -> the sign's threshold and flip
  (:func:`~.values.sign_threshold`); gamma == 0 gives a constant bit;
- any other batch norm -> ``scale_shift``.

Every op reads its inputs by name (``inputs``). Anything the engine cannot run raises
:class:`~binarynet.errors.ExportError` naming the module (path and type) or function.
"""
from __future__ import annotations

import operator

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F

from ..errors import ExportError
from . import dag_modules
from .modules import describe
from .fx_trace import module_of, where
from .values import Value, flat_perm, sign_threshold

_ADDS = (operator.add, operator.iadd, torch.add)
_CATS = (torch.cat, torch.concat)
_RELUS = (F.relu, torch.relu)
_FLATTENS = (torch.flatten,)


class DagBuilder:
    """Writes the ops of a traced model into a :class:`~.writer.GraphWriter`."""

    def __init__(self, gm: fx.GraphModule, writer):
        self.gm, self.writer = gm, writer
        self.values: dict = {}  # fx node -> Value
        self.names: set = {"input"}
        self.signs: dict = {}  # sign op name -> what torch computes it from (exactness check)
        self.input_float = None  # the model input on the real stream, written once if needed

    # -- the walk ---------------------------------------------------------------------------
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.values[node] = Value("image", self.shape(node), name="input",
                                          node=node.name, source=node.name)
            elif node.op == "call_module":
                self._keep(node, dag_modules.handle(self, node, module_of(self.gm, node)))
            elif node.op in ("call_function", "call_method"):
                self._keep(node, self._function(node))
            elif node.op == "output":
                self._output(node)
            else:
                raise ExportError(f"{where(node)}: reads the attribute {node.target!r} of the "
                                  "model as a tensor, which export does not support")
        self._check_all_used()

    def _keep(self, node: fx.Node, v: Value) -> None:
        """Record ``node``'s value; a deferred conv / dense that several nodes read is written
        now (a batch norm folds into it only when it is the one reader)."""
        if v.emit is not None and len(node.users) > 1:
            self.materialize(v, node)
        self.values[node] = v

    def shape(self, node: fx.Node) -> tuple:
        shape = node.meta.get("shape")
        if shape is None:
            raise ExportError(f"{self.label(node)}: its output is not one tensor")
        return shape[1:]

    def label(self, node: fx.Node) -> str:
        """How errors name a node: the module (path and type) or the function and where."""
        if node.op == "call_module":
            return describe(node.target, module_of(self.gm, node))
        what = getattr(node.target, "__name__", str(node.target))
        kind = "method" if node.op == "call_method" else "function"
        return f"{kind} {what!r} in {where(node)}"

    def arg(self, node: fx.Node, index: int = 0) -> Value:
        a = node.args[index] if index < len(node.args) else None
        if not isinstance(a, fx.Node) or a not in self.values:
            raise ExportError(f"{self.label(node)}: argument {index} is not a tensor of the model")
        return self.values[a]

    # -- writing ops ------------------------------------------------------------------------
    def unique(self, name: str) -> str:
        base, i = name, 1
        while name in self.names:
            i += 1
            name = f"{base}.{i}"
        self.names.add(name)
        return name

    def op(self, kind: str, name: str, inputs: list, tensors: dict | None = None,
           report: dict | None = None, **attrs) -> str:
        """Append an op reading ``inputs`` (value names); tensors are stored under
        ``name.role``. Returns the op's (unique) name."""
        name = self.unique(name)
        roles = {role: self.writer.add(f"{name}.{role}", array)
                 for role, array in (tensors or {}).items()}
        self.writer.append({"op": kind, "name": name, "inputs": list(inputs), **attrs,
                            "tensors": roles}, report)
        return name

    def real(self, v: Value, node: fx.Node) -> Value:
        """``v`` as a real value (the model input becomes ``input_float``, once)."""
        if v.kind == "real":
            return v
        if v.kind == "bits":
            raise ExportError(f"{self.label(node)}: takes binary (+-1) activations, which the "
                              "engine only feeds to binary layers, signs, max-pool and flatten")
        if v.kind != "image":
            raise ExportError(f"{self.label(node)}: computes with the tensor's shape, which "
                              "export supports only in x.view(x.size(0), -1)")
        if self.input_float is None:
            name = self.op("input_float", "input_float", ["input"])
            self.input_float = Value("real", v.shape, name=name, node=v.node, source=v.node)
        return self.input_float

    def materialize(self, v: Value, node: fx.Node) -> str:
        """The engine value of ``v`` with its pending affine written out (cached on ``v``)."""
        v = self.real(v, node)
        if v.emit is not None:
            v.name, v.emit = v.emit(*v.affine()), None
        elif v.a is not None:
            v.name = self.op("scale_shift", v.label, [v.name],
                             {"scale": v.a.astype(np.float32), "shift": v.c.astype(np.float32)})
        else:
            return v.name
        v.a = v.c = None
        v.source = v.node
        return v.name

    def sign(self, v: Value, node: fx.Node, name: str, shift=None, torch_from=None) -> Value:
        """+-1 bits of sign(v + shift) (shift per channel in torch order, or None); folds a
        pending batch norm into the threshold. ``torch_from`` names how torch computes these
        bits, for the exactness check (default: ``node``'s output)."""
        if v.kind == "bits":
            if shift is not None:
                raise ExportError(f"{self.label(node)}: shifts binary (+-1) activations before "
                                  "the sign, which export does not support")
            return v
        v = self.real(v, node)
        if v.emit is not None:
            self.materialize(v, node)
        a, c = v.affine()
        if shift is not None:
            c = c + (shift[v.perm] if v.perm is not None else shift)
        thresh, flip = sign_threshold(a, c)
        out = self.op("sign", name, [v.name], {"thresh": thresh, "flip": flip},
                      {"kind": "sign", "constant_channels": int(np.sum(~np.isfinite(thresh))),
                       "flipped_channels": int(flip.sum())})
        self.signs[out] = {"source": v.source, "torch": torch_from or {"node": node.name},
                           "perm": v.perm}
        return Value("bits", v.shape, name=out, perm=v.perm, node=node.name, source=node.name)

    def unary(self, kind: str, v: Value, node: fx.Node, tensors=None, **attrs) -> Value:
        """An elementwise / pooling op on a real value; ``shape`` from the traced node."""
        name = self.op(kind, self.node_name(node), [self.materialize(v, node)], tensors, **attrs)
        return Value("real", self.shape(node), name=name, perm=v.perm, node=node.name,
                     source=node.name)

    def check_in_place(self, node: fx.Node) -> None:
        """An in-place op changes its input for every other reader too, which the graph does
        not show: allowed only when it is that tensor's one reader."""
        if len(node.args[0].users) > 1:
            raise ExportError(f"{self.label(node)}: works in place on a tensor that other parts "
                              "of the model also read; export supports that only out of place")

    @staticmethod
    def node_name(node: fx.Node) -> str:
        return node.target if node.op == "call_module" else node.name

    # -- function nodes ---------------------------------------------------------------------
    def _function(self, node: fx.Node) -> Value:
        target, args, kwargs = node.target, node.args, node.kwargs
        if node.op == "call_method":
            return self._method(node)
        if target in _ADDS and len(args) == 2 and not kwargs:
            return self._add(node)
        if target in _CATS:
            return self._concat(node)
        if target in _RELUS and len(args) == 1 and not kwargs.get("inplace", False):
            return self.unary("relu", self.arg(node), node)
        if target in _FLATTENS and args[1:] in ((1,), (1, -1)) and not kwargs:
            return self.flatten(self.arg(node), node)
        if target is torch.reshape and len(args) == 2 and self._batch_flat(args[1]):
            return self.flatten(self.arg(node), node)
        if target is torch.mean:
            return self._mean(node)
        if target is F.adaptive_avg_pool2d and args[1:] in ((1,), ((1, 1),)) and not kwargs:
            return self.unary("global_avgpool", self.arg(node), node)
        if target is getattr and args[1:] == ("shape",):
            return Value("shape", ())
        if target is operator.getitem and self._kind(args[0]) == "shape" and args[1] == 0:
            return Value("batch", ())
        raise ExportError(f"{self.label(node)} is not supported by export (supported: a + b of "
                          "two tensors, torch.cat along channels, relu, flattening (flatten(x, 1), "
                          "x.view(x.size(0), -1)), global average pooling (adaptive_avg_pool2d(x, "
                          "1), x.mean((2, 3))))")

    def _method(self, node: fx.Node) -> Value:
        """Tensor methods: relu, flatten and view / reshape to (N, -1), mean over H and W."""
        target, args = node.target, node.args
        if target == "relu" and len(args) == 1 and not node.kwargs:
            return self.unary("relu", self.arg(node), node)
        if target == "flatten" and args[1:] in ((1,), (1, -1)) and not node.kwargs:
            return self.flatten(self.arg(node), node)
        if target in ("view", "reshape") and not node.kwargs and (
                self._batch_flat(args[1:]) or (len(args) == 2 and self._batch_flat(args[1]))):
            return self.flatten(self.arg(node), node)
        if target == "mean":
            return self._mean(node)
        if target == "size" and args[1:] in ((0,), ()):
            return Value("batch" if args[1:] else "shape", ())
        raise ExportError(f"{self.label(node)} is not supported by export (supported methods: "
                          "relu, flatten(1), view / reshape to (N, -1), mean((2, 3)))")

    def _batch_flat(self, shape) -> bool:
        """Whether a view / reshape target ``shape`` is (batch size, -1)."""
        return (isinstance(shape, (tuple, list)) and len(shape) == 2 and shape[1] == -1
                and self._kind(shape[0]) == "batch")

    def _kind(self, a):
        """The kind of value an argument is (None for a constant)."""
        return self.values[a].kind if isinstance(a, fx.Node) and a in self.values else None

    def _mean(self, node: fx.Node) -> Value:
        """x.mean((2, 3)) (keepdim or not) of an (N, C, H, W) map: global average pooling."""
        args, kwargs = node.args, dict(node.kwargs)
        dims = args[1] if len(args) > 1 else kwargs.pop("dim", None)
        keepdim = kwargs.pop("keepdim", args[2] if len(args) > 2 else False)
        v = self.arg(node)
        if len(v.shape) != 3 or kwargs or not isinstance(dims, (tuple, list)) or sorted(
                d % 4 for d in dims) != [2, 3]:
            raise ExportError(f"{self.label(node)}: export supports the mean over H and W of "
                              "(N, C, H, W) maps (global average pooling) only")
        name = self.op("global_avgpool", node.name, [self.materialize(v, node)])
        pooled = Value("real", (v.channels, 1, 1), name=name, node=node.name, source=node.name)
        return pooled if keepdim else self.flatten(pooled, node)

    def _add(self, node: fx.Node) -> Value:
        a, b = self.arg(node, 0), self.arg(node, 1)
        if node.target is operator.iadd:
            self.check_in_place(node)
        if a.shape != b.shape:
            raise ExportError(f"{self.label(node)}: adds tensors of shapes {a.shape} and "
                              f"{b.shape}; export supports same-shape adds only")
        a, b = self.real(a, node), self.real(b, node)
        if not np.array_equal(*(p if p is not None else np.arange(a.channels)
                                for p in (a.perm, b.perm))):
            raise ExportError(f"{self.label(node)}: adds flattened tensors of different layouts")
        # a binary conv still to be written goes last, so that the shortcut is ready when it
        # runs and the engine can fuse the add into the conv's output transform
        for v in sorted((a, b), key=lambda v: v.binary and v.emit is not None):
            self.materialize(v, node)
        name = self.op("add", node.name, [a.name, b.name])
        return Value("real", a.shape, name=name, perm=a.perm, node=node.name, source=node.name)

    def _concat(self, node: fx.Node) -> Value:
        parts = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if not isinstance(parts, (list, tuple)) or len(parts) < 2 or not all(
                isinstance(p, fx.Node) for p in parts):
            raise ExportError(f"{self.label(node)}: concatenates {parts!r}; export supports a "
                              "list of two or more tensors of the model")
        values = [self.real(self.values[p], node) for p in parts]
        if any(len(v.shape) != 3 for v in values) or dim not in (1, -3):
            raise ExportError(f"{self.label(node)}: export concatenates (N, C, H, W) tensors "
                              f"along the channels (dim=1) only, got dim={dim}")
        inputs = [self.materialize(v, node) for v in values]
        name = self.op("concat", node.name, inputs)
        return Value("real", self.shape(node), name=name, node=node.name, source=node.name)

    def flatten(self, v: Value, node: fx.Node) -> Value:
        """(C, H, W) -> (C*H*W,) in the engine's NHWC order (readers permute their weights)."""
        if len(v.shape) == 1:
            return v
        c, h, w = v.shape
        src = v.name if v.kind == "bits" else self.materialize(v, node)
        name = self.op("flatten", self.node_name(node), [src])
        return Value(v.kind if v.kind == "bits" else "real", (c * h * w,), name=name,
                     perm=flat_perm(c, h, w), node=node.name, source=node.name)

    # -- the end ----------------------------------------------------------------------------
    def _output(self, node: fx.Node) -> None:
        out = node.args[0]
        if not isinstance(out, fx.Node):
            raise ExportError("export takes models that return one tensor of class scores; "
                              f"this one returns {type(out).__name__}")
        v = self.values[out]
        if v.kind != "real" or len(v.shape) != 1 or v.perm is not None:
            what = ("binary (+-1) activations" if v.kind == "bits" else
                    f"per-sample shape {v.shape}" if len(v.shape) != 1 else
                    "features in the flattened (C, H, W) order")
            raise ExportError(f"the model returns {what} from {self.label(out)}; export needs "
                              "class scores (N, num_classes) computed on the real stream")
        name = self.materialize(v, out)
        if self.writer.ops[-1]["name"] != name:
            raise ExportError(f"{self.label(out)}: the model's output is computed before other "
                              "work that does not reach it")
        self.writer.num_classes = v.channels

    def _check_all_used(self) -> None:
        used = {i for op in self.writer.ops for i in op["inputs"]}
        dead = [op["name"] for op in self.writer.ops[:-1] if op["name"] not in used]
        if dead:
            raise ExportError(f"export wrote ops whose values nothing reads: {dead[:3]}")
