"""How exactly an exported DAG model follows the torch model (issue 12, "Exactness"): every
binary decision is compared, sign op by sign op, with torch's on the same inputs.

The engine folds batch norms and RSign shifts into sign thresholds and sums real convolutions in
its own order, so a sign may decide differently from torch's float32 arithmetic when its
input lies within rounding of the threshold (a near-tie). :func:`agreement` counts, per
``sign`` op, the decisions that differ and how far their input was from the threshold
(|x - t| / |x|, x the torch value, and relative to the typical |x| of that input); once a
sample has one differing bit, the later ops see
different inputs, so its later disagreements are counted apart as ``cascaded`` (they are not
near-ties of their own). Also the argmax agreement and the largest logit difference.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from .fx_trace import trace


class _Recorder(fx.Interpreter):
    """Runs the traced model, keeping every node's output."""

    def __init__(self, gm):
        super().__init__(gm)
        self.outputs: dict = {}

    def run_node(self, n):
        out = super().run_node(n)
        self.outputs[n.name] = out
        return out


def _torch_bits(gm, outputs: dict, how: dict) -> torch.Tensor:
    if "node" in how:
        return outputs[how["node"]]
    node = next(n for n in gm.graph.nodes if n.name == how["quantizer_of"])
    return gm.get_submodule(node.target).quantized_input(outputs[node.args[0].name])


def _to_torch_layout(array: np.ndarray, shape: tuple) -> np.ndarray:
    """An engine trace array (N, ...) in torch's (N, C, H, W) / (N, K) layout."""
    if array.shape[1:] == shape:
        return array
    return np.moveaxis(array, -1, 1)  # NHWC -> NCHW


def agreement(model: nn.Module, packed, x) -> dict:
    """Compare ``packed`` (exported from ``model`` by the traced path) with ``model`` on float
    inputs ``x`` (N, ...). Returns::

        {"samples": N, "argmax_agreement": fraction, "max_logit_diff": max |engine - torch|,
         "max_logit_relative": that / max |torch logit| of the sample,
         "diverged_samples": samples with a differing decision,
         "max_logit_relative_exact": max_logit_relative over the other samples,
         "signs": {op: {"decisions": n, "differ": n, "cascaded": n, "max_margin": r,
                        "max_margin_scale": r}}}

    ``differ`` counts decisions of samples with no earlier differing bit; ``max_margin`` is
    their largest |x - t| / |x| and ``max_margin_scale`` their largest |x - t| / mean |x| (the
    typical size of the sign's input, the scale float32 rounding is relative to: an x near
    zero makes the first large); 0 when none differ. ``cascaded`` counts the others.
    """
    signs = packed.export_report.get("signs")
    if signs is None:
        raise ValueError("agreement compares models exported by the traced (DAG) path")
    x = torch.as_tensor(np.asarray(x, np.float32))
    model_mode = model.training
    model.eval()
    try:
        with torch.no_grad():
            gm = trace(model, x)
            rec = _Recorder(gm)
            want = rec.run(x).double().numpy()
    finally:
        model.train(model_mode)
    engine = {name: arr for name, _, arr in packed.trace(x.numpy())}
    diverged = np.zeros(len(x), bool)
    per_op = {}
    for op in packed.ops:
        if op["op"] == "sign":
            per_op[op["name"]] = _compare_sign(gm, rec.outputs, engine, packed, op,
                                               signs[op["name"]], diverged)
    got = packed.predict(x.numpy()).astype(np.float64)
    relative = np.abs(got - want).max(axis=1) / np.maximum(np.abs(want).max(axis=1), 1e-30)
    return {"samples": len(x), "argmax_agreement": float(np.mean(got.argmax(1) == want.argmax(1))),
            "max_logit_diff": float(np.abs(got - want).max()),
            "max_logit_relative": float(relative.max()),
            "diverged_samples": int(diverged.sum()),
            "max_logit_relative_exact": float(relative[~diverged].max(initial=0.0)),
            "signs": per_op}


def _compare_sign(gm, outputs: dict, engine: dict, packed, op: dict, how: dict,
                  diverged: np.ndarray) -> dict:
    """One sign op's decisions against torch's; marks the samples that diverge at it."""
    n = len(diverged)
    t_bits = _torch_bits(gm, outputs, how["torch"]).numpy() >= 0
    src = outputs[how["source"]].double().numpy()
    e_bits = _to_torch_layout(engine[op["name"]], t_bits.shape[1:]) > 0
    thresh = packed.tensors[op["tensors"]["thresh"]].astype(np.float64)
    if how["perm"] is not None:
        # a flattened map: the sign's features (and the engine trace of its bits, which
        # reorders only the flatten op's own output) are in the engine's NHWC order
        inverse = np.argsort(how["perm"])
        thresh, e_bits = thresh[inverse], e_bits[:, inverse]
    distance = np.abs(src - thresh.reshape((1, -1) + (1,) * (src.ndim - 2))).reshape(n, -1)
    differ = (e_bits != t_bits).reshape(n, -1)
    fresh = differ & ~diverged[:, None]
    near = distance[fresh]
    result = {"decisions": int(differ.size), "differ": int(fresh.sum()),
              "cascaded": int((differ & diverged[:, None]).sum()),
              "max_margin": float((near / np.maximum(np.abs(src.reshape(n, -1)[fresh]),
                                                     1e-30)).max(initial=0.0)),
              "max_margin_scale": float(near.max(initial=0.0) / max(np.abs(src).mean(), 1e-30))}
    diverged |= differ.any(axis=1)
    return result
