"""The execution plan of a graph: which ops run together in one kernel call, and when each
value can be dropped. Built once per model and backend (:class:`binarynet.engine.runner.Runner`).

A step runs one op, or fuses several into one call of the backend's kernels when they have it:

- ``conv_maxpool``: a format-2 ``conv`` whose only reader is a ``maxpool`` with the same flip
  tensor (``bconv2d_threshold_maxpool``);
- ``transform``: a ``bconv`` (groups 1) / ``bdense`` and the chain of elementwise ops after
  it (``relu``, ``scale_shift``, ``prelu``, at most one ``add``), as long as each value of the
  chain has exactly one reader, applied in the kernel's output transform
  (``bconv2d_transform`` / ``bgemm_transform``); a ``sign`` reading the chain's last value is
  folded into the same call, which then also returns the float value only when something else
  reads it.

A fused step runs where its first op is, or later when the add's other operand (a residual's
shortcut, such as an average pool the exporter lists after the conv) is computed after it: the
ops of a chain read only its own values besides that operand and the conv's input, and nothing
else reads the values inside the chain, so waiting for it keeps the plan in a topological order.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

from . import reference
from .float_checks import ELEMENTWISE

__all__ = ["Step", "build", "single_ops"]

# The most steps a fused kernel applies (besides the layer's own scale/shift); a longer chain
# continues as separate ops.
MAX_STEPS = reference.MAX_TRANSFORM_STEPS


@dataclass(frozen=True)
class Step:
    """One call: ``ops`` (op indices, the first one's kernel), the values it reads and
    stores (value indices; -1 is the model input) and those no later step reads."""

    kind: str  # "op", "conv_maxpool" or "transform"
    ops: tuple
    reads: tuple
    writes: tuple
    frees: tuple = ()
    residual: int | None = None  # transform: the value the "add" adds
    sign: int | None = None      # transform: the folded sign op
    float_out: bool = True       # transform: store the chain's float value too

    @property
    def chain(self) -> tuple:
        """The elementwise ops a transform applies (op indices, in order)."""
        return self.ops[1:-1] if self.sign is not None else self.ops[1:]


def _readers(reads, count) -> dict:
    """value index -> the ops reading it, once per operand slot."""
    readers = {j: [] for j in range(-1, count)}
    for i, sources in enumerate(reads):
        for j in sources:
            readers[j].append(i)
    return readers


def _transform(i, ops, reads, readers) -> Step:
    """The fused step starting at bconv/bdense ``i``."""
    chain, residual, end = [], None, i
    while len(readers[end]) == 1 and len(chain) < MAX_STEPS:
        k = readers[end][0]
        kind = ops[k]["op"]
        if kind not in ELEMENTWISE:
            break
        if kind == "add":
            other = [j for j in reads[k] if j != end]
            if residual is not None or len(other) != 1:
                break
            residual = other[0]
        chain.append(k)
        end = k
    signs = [k for k in readers[end] if ops[k]["op"] == "sign"]
    sign = signs[0] if signs else None
    float_out = sign is None or len(readers[end]) > 1
    writes = ((end,) if float_out else ()) + ((sign,) if sign is not None else ())
    return Step("transform", (i, *chain) + ((sign,) if sign is not None else ()),
                tuple(reads[i]) + ((residual,) if residual is not None else ()), writes,
                residual=residual, sign=sign, float_out=float_out)


def build(graph: dict, reads: list, kernels) -> list:
    """The steps that run ``graph`` (``reads``: :func:`binarynet.engine.graph.sources`) with
    the fused kernels ``kernels`` offers."""
    ops = graph["ops"]
    readers = _readers(reads, len(ops))
    fused_pool = hasattr(kernels, "bconv2d_threshold_maxpool")
    transform = {"bconv": hasattr(kernels, "bconv2d_transform"),
                 "bdense": hasattr(kernels, "bgemm_transform")}
    steps, covered = [], set()
    for i, op in enumerate(ops):
        if i in covered:
            continue
        kind = op["op"]
        pool = readers[i][0] if len(readers[i]) == 1 else None
        if (kind == "conv" and fused_pool and pool is not None and ops[pool]["op"] == "maxpool"
                and op["groups"] == 1 and ops[pool]["tensors"]["flip"] == op["tensors"]["flip"]):
            step = Step("conv_maxpool", (i, pool), tuple(reads[i]), (pool,))
        elif transform.get(kind) and op.get("groups", 1) == 1:
            step = _transform(i, ops, reads, readers)
        else:
            step = Step("op", (i,), tuple(reads[i]), (i,))
        covered.update(step.ops)
        steps.append(step)
    return _with_frees(_in_order(steps))


def _in_order(steps) -> list:
    """The steps in an order where each runs after the steps writing what it reads: by their
    first op, except that a fused step whose residual is computed after its conv waits for it."""
    writer = {j: n for n, step in enumerate(steps) for j in step.writes}
    waits = [{writer[j] for j in step.reads if j >= 0} for step in steps]
    unblocks: dict = {}
    for n, before in enumerate(waits):
        for m in before:
            unblocks.setdefault(m, []).append(n)
    ready = [n for n, before in enumerate(waits) if not before]
    heapq.heapify(ready)
    order = []
    while ready:
        n = heapq.heappop(ready)
        order.append(steps[n])
        for m in unblocks.get(n, ()):
            waits[m].discard(n)
            if not waits[m]:
                heapq.heappush(ready, m)
    return order


def single_ops(graph: dict, reads: list) -> list:
    """One step per op, nothing fused (how :meth:`Runner.trace` runs a graph)."""
    return _with_frees([Step("op", (i,), tuple(reads[i]), (i,))
                        for i in range(len(graph["ops"]))])


def _with_frees(steps) -> list:
    """Each step with the values it is the last to read (the graph's output is never freed)."""
    last = {}
    for n, step in enumerate(steps):
        for j in step.reads:
            last[j] = n
    frees: dict = {}
    for j, n in last.items():
        frees.setdefault(n, []).append(j)
    return [Step(s.kind, s.ops, s.reads, s.writes, tuple(sorted(frees.get(n, ()))), s.residual,
                 s.sign, s.float_out) for n, s in enumerate(steps)]
