"""Hand-built format-3 graphs for the engine's DAG tests (imported as a plain module)."""
import numpy as np

from binarynet import engine
from binarynet.engine import reference


class GraphBuilder:
    """Ops appended in execution order; each op's tensors are stored as "<name>.<role>"."""

    def __init__(self, shape, num_classes, scale=None, offset=None):
        self.graph = {"input": {"shape": list(shape), "scale": scale, "offset": offset},
                      "num_classes": num_classes, "ops": []}
        self.tensors = {}

    def op(self, kind, name, inputs=None, tensors=None, **attrs):
        op = {"op": kind, "name": name, **attrs, "tensors": {}}
        if inputs is not None:
            op["inputs"] = list(inputs)
        for role, array in (tensors or {}).items():
            self.tensors[f"{name}.{role}"] = array
            op["tensors"][role] = f"{name}.{role}"
        self.graph["ops"].append(op)
        return name

    def model(self, **kwargs):
        return engine.PackedModel(self.graph, self.tensors, **kwargs)


def pm1(rng, shape):
    """Random +-1 float32 values."""
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)


def packed(w_pm1):
    """+-1 weights (..., K) packed along the last axis."""
    return reference.pack(w_pm1)


def f32(rng, shape, low=-1.0, high=1.0):
    return rng.uniform(low, high, shape).astype(np.float32)


def conv_attrs(c, o, k, stride=1, padding=0, groups=1, dilation=1):
    return dict(in_channels=c, out_channels=o, kernel=[k, k], stride=[stride, stride],
                padding=[padding, padding], dilation=[dilation, dilation], groups=groups)


def residual_net(seed=0, c=16, size=8, classes=10, odd=5):
    """A ReActNet-like DAG touching every new op; returns (builder, params) where params holds
    the float/+-1 arrays a torch twin needs."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder((3, size, size), classes)
    p = {}
    g.op("input_float", "in")
    p["stem.w"] = f32(rng, (c, 3, 3, 3))
    p["stem.b"] = f32(rng, c)
    g.op("conv_real", "stem", tensors={"weight": p["stem.w"], "bias": p["stem.b"]},
         **conv_attrs(3, c, 3, padding=1))
    p["bn0.s"], p["bn0.h"] = f32(rng, c, -2, 2), f32(rng, c)
    g.op("scale_shift", "bn0", tensors={"scale": p["bn0.s"], "shift": p["bn0.h"]})
    p["act0"] = (f32(rng, c, -0.2, 0.2), f32(rng, c, -0.5, 0.5), f32(rng, c, -0.2, 0.2))
    g.op("prelu", "act0", tensors=dict(zip(("shift_in", "slope", "shift_out"), p["act0"])))
    # block 1: rsign -> bconv 3x3 -> bn -> + shortcut -> rprelu
    p["s1.t"], p["s1.f"] = f32(rng, c, -0.5, 0.5), rng.random(c) < 0.3
    g.op("sign", "s1", tensors={"thresh": p["s1.t"], "flip": p["s1.f"]})
    p["b1.w"] = pm1(rng, (c, 3, 3, c))
    p["b1.s"], p["b1.h"] = f32(rng, c, -0.1, 0.1), f32(rng, c)
    p["b1.s"][0] = 0.0  # a zero scale
    g.op("bconv", "b1", tensors={"weight": packed(p["b1.w"]), "scale": p["b1.s"],
                                  "shift": p["b1.h"]}, pad_mode="zero", **conv_attrs(c, c, 3, padding=1))
    p["bn1.s"], p["bn1.h"] = f32(rng, c, -2, 2), f32(rng, c)
    g.op("scale_shift", "bn1", tensors={"scale": p["bn1.s"], "shift": p["bn1.h"]})
    g.op("add", "add1", inputs=["bn1", "act0"])
    p["act1"] = (f32(rng, c, -0.2, 0.2), f32(rng, c, -0.5, 0.5), f32(rng, c, -0.2, 0.2))
    g.op("prelu", "act1", tensors=dict(zip(("shift_in", "slope", "shift_out"), p["act1"])))
    # block 2 (downsampling): bconv stride 2 + avg-pooled shortcut, relu
    p["s2.t"], p["s2.f"] = f32(rng, c, -0.5, 0.5), rng.random(c) < 0.3
    g.op("sign", "s2", tensors={"thresh": p["s2.t"], "flip": p["s2.f"]})
    p["b2.w"] = pm1(rng, (c, 3, 3, c))
    p["b2.s"], p["b2.h"] = f32(rng, c, -0.1, 0.1), f32(rng, c)
    g.op("bconv", "b2", tensors={"weight": packed(p["b2.w"]), "scale": p["b2.s"],
                                  "shift": p["b2.h"]}, pad_mode="zero",
         **conv_attrs(c, c, 3, stride=2, padding=1))
    g.op("avgpool", "pool2", inputs=["act1"], kernel=[2, 2], stride=[2, 2], padding=[0, 0],
         ceil_mode=False, count_include_pad=True)
    g.op("add", "add2", inputs=["pool2", "b2"])
    g.op("relu", "act2")
    # a concat with a max-pooled branch, an odd-width 1x1 real conv, global pool, dense head
    g.op("maxpool_real", "mp", inputs=["act1"], kernel=[3, 3], stride=[2, 2], padding=[1, 1],
         ceil_mode=False)
    g.op("concat", "cat", inputs=["act2", "mp"])
    p["proj.w"], p["proj.b"] = f32(rng, (odd, 1, 1, 2 * c)), f32(rng, odd)
    g.op("conv_real", "proj", tensors={"weight": p["proj.w"], "bias": p["proj.b"]},
         **conv_attrs(2 * c, odd, 1))
    g.op("global_avgpool", "gap")
    g.op("flatten", "flat")
    p["fc.w"], p["fc.b"] = f32(rng, (classes, odd)), f32(rng, classes)
    g.op("dense_real", "fc", tensors={"weight": p["fc.w"], "bias": p["fc.b"]},
         in_features=odd, out_features=classes)
    return g, p
