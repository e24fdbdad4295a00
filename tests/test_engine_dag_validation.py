"""Validation of format-3 graphs: the DAG (references, arity, dead values, output), the new ops'
kinds, shapes, attributes and tensors, and the working memory of values a DAG keeps alive.

Every file is written by format.encode (valid hashes): only graph validation can refuse it, at
load, with a ModelFileError naming the op index, its name and the field.
"""
import numpy as np
import pytest

from binarynet import engine
from binarynet.engine import format as fmt
from binarynet.engine import graph as engine_graph
from binarynet.engine import memory
from binarynet.errors import ModelFileError
from dag_fixtures import GraphBuilder, residual_net


def op(graph, name):
    return next(o for o in graph["ops"] if o["name"] == name)


def load(tmp_path, graph, tensors, **kwargs):
    path = tmp_path / "m.bnn"
    path.write_bytes(fmt.encode(graph, tensors))
    return engine.load(path, **kwargs)


def edit_tensor(tensors, name, index, value):
    tensors[name] = tensors[name].copy()
    tensors[name][index] = value


def test_the_residual_net_loads(tmp_path):
    g, _ = residual_net()
    assert load(tmp_path, g.graph, g.tensors).num_classes == 10


CASES = [
    # the DAG: references, names, arity, dead values, the output
    (lambda g, t: op(g, "add1").update(inputs=["bn1", "act1"]),
     "op 7 \\(layer 'add1'\\): add: input 'act1' is a forward reference"),
    (lambda g, t: op(g, "bn0").update(name="act0"),
     "op 7 \\(layer 'add1'\\): add: input 'act0' is ambiguous: ops \\[2, 3\\]"),
    (lambda g, t: op(g, "add1").update(inputs=["bn1", "nope"]),
     "op 7 \\(layer 'add1'\\): add: input 'nope' names no earlier op"),
    (lambda g, t: op(g, "stem").update(name="input"),
     "op 1 \\(layer 'input'\\): conv_real: 'name' must be a string other than 'input'"),
    (lambda g, t: op(g, "cat").update(inputs="act2"),
     "op 15 \\(layer 'cat'\\): concat: attribute 'inputs' must be a list of 1 to 1024 value names"),
    (lambda g, t: op(g, "cat").update(inputs=["act2"] * 1025), "attribute 'inputs' must be a list"),
    (lambda g, t: op(g, "cat").update(inputs=[]), "attribute 'inputs' must be a list"),
    (lambda g, t: op(g, "cat").update(inputs=["act2", 3]), "attribute 'inputs' must be a list"),
    (lambda g, t: op(g, "cat").update(inputs=None), "attribute 'inputs' must be a list"),
    (lambda g, t: op(g, "cat").update(inputs=["act2", "act2"]),
     "op 14 \\(layer 'mp'\\): maxpool_real: its value is not read by any later op"),
    (lambda g, t: op(g, "add1").update(inputs=["bn1"]), "op 7 .*add: reads 1 values, takes 2$"),
    (lambda g, t: op(g, "act2").update(inputs=["add2", "add2"]), "relu: reads 2 values, takes 1$"),
    (lambda g, t: op(g, "cat").update(inputs=["act2"]), "concat: reads 1 values, takes 2 to 1024"),
    (lambda g, t: g.update(num_classes=5),
     "graph: the last op must produce logits or float of shape \\(5,\\), got float of shape \\(10,\\)"),
    # kinds and shapes of the inputs
    (lambda g, t: op(g, "b1").update(inputs=["act0"]),
     "op 5 \\(layer 'b1'\\): bconv takes bits \\(\\(H, W, C\\)\\) activations, got float"),
    (lambda g, t: op(g, "stem").update(inputs=["input"]), "conv_real takes float .* got image"),
    (lambda g, t: op(g, "s1").update(inputs=["input"]), "sign takes float .* got image"),
    (lambda g, t: op(g, "add1").update(inputs=["s1", "act0"]), "add takes float .* got bits"),
    (lambda g, t: op(g, "flat").update(inputs=["input"]),
     "flatten takes bits or float \\(\\(H, W, C\\)\\) activations, got image"),
    (lambda g, t: op(g, "fc").update(inputs=["gap"]), "dense_real takes float \\(\\(K,\\)\\)"),
    (lambda g, t: op(g, "gap").update(inputs=["s2"]), "global_avgpool takes float"),
    (lambda g, t: op(g, "add2").update(inputs=["act1", "b2"]),
     "op 12 \\(layer 'add2'\\): add: operands of shapes \\(8, 8, 16\\) and \\(4, 4, 16\\) differ"),
    (lambda g, t: op(g, "cat").update(inputs=["act2", "act1"]),
     "op 15 \\(layer 'cat'\\): concat: inputs of different heights and widths"),
    # attributes
    (lambda g, t: op(g, "stem").update(kernel=[65, 65]),
     "op 1 \\(layer 'stem'\\): conv_real: attribute 'kernel' must be a pair of integers in \\[1, 64\\]"),
    (lambda g, t: op(g, "stem").update(groups=2), "conv_real: groups 2 must divide in_channels 3"),
    (lambda g, t: op(g, "stem").update(in_channels=4), "conv_real: in_channels 4 does not match"),
    (lambda g, t: op(g, "b1").update(pad_mode="reflect"), "bconv: attribute 'pad_mode' must be one of"),
    (lambda g, t: op(g, "b2").update(stride=[0, 2]), "bconv: attribute 'stride' must be a pair"),
    (lambda g, t: op(g, "pool2").update(padding=[2, 2]),
     "op 11 \\(layer 'pool2'\\): avgpool: padding \\[2, 2\\] must be at most half the kernel"),
    (lambda g, t: op(g, "pool2").update(ceil_mode=1),
     "avgpool: attribute 'ceil_mode' must be true or false, got 1"),
    (lambda g, t: op(g, "pool2").pop("count_include_pad"),
     "avgpool: attribute 'count_include_pad' must be true or false, got None"),
    (lambda g, t: op(g, "pool2").update(stride=[65, 1]), "avgpool: attribute 'stride' must be a pair"),
    (lambda g, t: op(g, "mp").update(kernel=[20, 20]),
     "maxpool_real: kernel \\[20, 20\\] is larger than the padded 8x8 input"),
    (lambda g, t: op(g, "mp").update(ceil_mode="yes"), "maxpool_real: attribute 'ceil_mode'"),
    (lambda g, t: op(g, "fc").update(in_features=6), "dense_real: in_features 6 != 5 input features"),
    (lambda g, t: op(g, "fc").update(out_features=0), "dense_real: attribute 'out_features' must be"),
    # tensors: roles, dtypes, shapes, finite values, pad bits
    (lambda g, t: t.update({"stem.weight": t["stem.weight"][..., :2].copy()}),
     "conv_real: tensor 'stem.weight' \\(weight\\) has shape \\(16, 3, 3, 2\\), expected \\(16, 3, 3, 3\\)"),
    (lambda g, t: edit_tensor(t, "stem.bias", 3, np.nan), "tensor 'stem.bias' \\(bias\\) holds NaN or infinite"),
    (lambda g, t: edit_tensor(t, "fc.weight", (1, 1), np.inf), "tensor 'fc.weight' \\(weight\\) holds NaN or inf"),
    (lambda g, t: edit_tensor(t, "s1.thresh", 0, np.nan), "sign: tensor 's1.thresh' \\(thresh\\) holds NaN values"),
    (lambda g, t: edit_tensor(t, "b1.scale", 0, -np.inf), "bconv: tensor 'b1.scale' \\(scale\\) holds NaN or inf"),
    (lambda g, t: edit_tensor(t, "act1.slope", 0, np.inf), "prelu: tensor 'act1.slope' \\(slope\\) holds"),
    (lambda g, t: t.update({"bn0.scale": t["bn0.scale"].astype(np.float64)}),
     "scale_shift: tensor 'bn0.scale' \\(scale\\) has dtype float64, expected float32"),
    (lambda g, t: t.update({"s1.flip": t["s1.flip"].astype(np.uint8)}), "sign: tensor 's1.flip' \\(flip\\) has dtype uint8"),
    (lambda g, t: op(g, "act0")["tensors"].pop("slope"), "prelu: missing tensor role 'slope'"),
    (lambda g, t: op(g, "act2")["tensors"].update(scale="bn0.scale"), "relu: unexpected tensor roles \\['scale'\\]"),
    (lambda g, t: edit_tensor(t, "b2.weight", (0, 0, 0, 0), np.uint64(1 << 20)),
     "op 10 \\(layer 'b2'\\): bconv: weight has pad bits set beyond its 16 bits per row"),
]


@pytest.mark.parametrize("change, message", CASES)
def test_hostile_format_3_graphs_are_refused_naming_op_and_field(tmp_path, change, message):
    g, _ = residual_net()
    change(g.graph, g.tensors)
    with pytest.raises(ModelFileError, match="invalid graph: .*" + message):
        load(tmp_path, g.graph, g.tensors)


def test_infinite_sign_thresholds_are_constant_channels(tmp_path):
    g, _ = residual_net()
    edit_tensor(g.tensors, "s1.thresh", 0, np.inf)
    edit_tensor(g.tensors, "s1.thresh", 1, -np.inf)
    model = load(tmp_path, g.graph, g.tensors)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    bits = dict((name, v) for name, _, v in model.trace(x))["s1"]
    flip = g.tensors["s1.flip"]
    assert (bits[:, 0] == (1 if flip[0] else -1)).all() and (bits[:, 1] == (-1 if flip[1] else 1)).all()


def test_concat_channels_are_bounded(tmp_path):
    g = GraphBuilder((65, 1, 1), 2)
    g.op("input_float", "in")
    g.op("concat", "cat", inputs=["in"] * 1009)  # 65585 channels
    with pytest.raises(ModelFileError, match="op 1 \\(layer 'cat'\\): concat: 65585 channels, over "
                       "the limit of 65536"):
        load(tmp_path, g.graph, g.tensors)


def shortcut_net(shortcut: bool):
    """input_float -> relu -> concat (32 channels) -> 5 relus -> add(last, the concat's value
    when ``shortcut``) -> gap -> flatten -> dense_real: with the shortcut, the concat's value
    stays alive through the relus."""
    g = GraphBuilder((16, 64, 64), 3)
    g.op("input_float", "in")
    g.op("relu", "r0")
    g.op("concat", "cat", inputs=["r0", "r0"])
    for n in range(1, 6):
        g.op("relu", f"r{n}")
    g.op("add", "add", inputs=["r5", "cat" if shortcut else "r5"])
    g.op("global_avgpool", "gap")
    g.op("flatten", "flat")
    g.op("dense_real", "fc", in_features=32, out_features=3,
         tensors={"weight": np.ones((3, 32), np.float32), "bias": np.zeros(3, np.float32)})
    return g


def test_values_a_residual_keeps_alive_count_in_the_memory_bound(tmp_path):
    """Each op alone needs the same with or without the shortcut; alive, the shortcut's value
    adds 512 KiB to the later ops of the branch, which a bound between the two refuses."""
    chain, residual = shortcut_net(False), shortcut_net(True)
    needs = {}
    for name, g in (("chain", chain), ("residual", residual)):
        model = load(tmp_path, g.graph, g.tensors)
        image = ("image", model.input_shape)
        needs[name] = memory.op_needs(model.ops, engine_graph.sources(g.graph),
                                      model.activations, image)
    value = 64 * 64 * 32 * 4
    assert [b - a for a, b in zip(needs["chain"], needs["residual"])] == [0] * 4 + [value] * 5 + [0] * 3
    bound = max(needs["chain"]) + value // 2
    assert load(tmp_path, chain.graph, chain.tensors, max_bytes=bound).num_classes == 3
    with pytest.raises(ModelFileError, match="op 4 \\(layer 'r2'\\): relu: one sample needs about "
                       "1\\.5 MiB of working memory, over the limit of 1\\.2 MiB"):
        load(tmp_path, residual.graph, residual.tensors, max_bytes=bound)
