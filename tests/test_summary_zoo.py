"""binarynet summary of the zoo's networks: RSign, RPReLU, scaled binary convolutions, real-valued
shortcut convolutions, the adds that merge them and average pools, counted per layer."""
import math

import pytest
import torch
from torch import nn

import binarynet as bn
from binarynet.summary import summary, summary_of_target

SMALL = {
    "birealnet18": {"width": 8, "blocks": (1, 1)},
    "reactnet18": {"width": 8, "blocks": (1, 1)},
    "reactnet_a": {"widths": (8, 16, 32)},
    "quicknet": {"blocks": (1, 1), "widths": (8, 16)},
}


def _model(name):
    torch.manual_seed(0)
    return bn.models.get(name, num_classes=10, input_size=16, **SMALL[name])


def _rows(s, kind):
    return [r for r in s.layers if r.kind == kind]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_totals_split_every_parameter_into_binary_and_float(name):
    model = _model(name)
    s = summary(model, (3, 16, 16))
    binary = [m for m in model.modules() if isinstance(m, bn.nn.BinaryLayer)]
    assert s.binary_params == sum(m.weight.numel() for m in binary)
    everything = sum(t.numel() for t in (*model.parameters(), *model.buffers()) if t.is_floating_point())
    assert s.binary_params + s.float_params == everything
    assert s.layers[-1].output_shape == (10,)
    # each binary convolution reads binary activations: all its MACs are XNOR-popcounts
    for row in s.layers:
        if row.binary_params:
            assert row.input_bits == 1 and row.multibit_macs == 0 and row.binary_macs > 0


def test_reactnet18_rows_by_hand():
    s = summary(_model("reactnet18"), (3, 16, 16))
    rsign = _rows(s, "RSign")
    assert [r.float_params for r in rsign] == [8, 8] and all(r.note == "-> thresholds" for r in rsign)
    assert all(r.packed_bits == 32 * r.float_params for r in rsign)
    convs = _rows(s, "BinaryConv2d")
    # stage 1: 8 -> 8 on 16x16; stage 2: 8 -> 16 with stride 2 on 8x8
    assert [c.binary_macs for c in convs] == [8 * 16 * 16 * 8 * 9, 16 * 8 * 8 * 8 * 9]
    assert [c.packed_bits for c in convs] == [8 * 9 * 64, 16 * 9 * 64]  # one word per tap and output
    assert all("scale mean_abs" in c.note for c in convs) and all(c.float_params == 0 for c in convs)
    adds = _rows(s, "Residual")
    assert len(adds) == 2 and all(r.note == "+ real shortcut" and r.float_params == 0 for r in adds)
    assert [r.float_params for r in _rows(s, "RPReLU")] == [3 * 8, 3 * 16]
    # the down-sampling shortcut: average pool, real 1x1 conv (multi-bit MACs), batch norm
    pool, = _rows(s, "AvgPool2d")
    assert pool.output_shape == (8, 8, 8) and pool.float_params == 0
    conv1x1 = [r for r in _rows(s, "Conv2d") if r.name.endswith("shortcut.1")]
    assert conv1x1[0].multibit_macs == 16 * 8 * 8 * 8 and conv1x1[0].float_params == 8 * 16
    assert not any(r.kind == "Identity" for r in s.layers)  # identity shortcuts are no rows


def test_reactnet_a_doubled_pointwise_is_one_merge_row():
    s = summary(_model("reactnet_a"), (3, 16, 16))
    merges = [r for r in s.layers if r.note == "+ real shortcut"]
    assert [r.kind for r in merges] == ["Residual", "DoubledPointwise", "Residual", "DoubledPointwise"]
    assert merges[1].output_shape == (16, 8, 8)  # 8 -> 16 channels, the 3x3 halved the map


def test_quicknet_binary_conv_binarizes_its_input_and_padding_stays_binary():
    s = summary(_model("quicknet"), (3, 16, 16))
    convs = _rows(s, "BinaryConv2d")
    assert len(convs) == 2 and all("binarizes its input" in c.note for c in convs)
    assert all(c.binary_macs == math.prod(c.output_shape) * c.output_shape[0] * 9 for c in convs)


def test_learned_scale_is_a_32_bit_parameter():
    model = torch.nn.Sequential(bn.nn.BinaryConv2d(4, 6, 3, bias=False, scale="learned"),
                                torch.nn.BatchNorm2d(6), bn.nn.Sign())
    row = summary(model, (4, 5, 5)).layers[0]
    assert row.binary_params == 6 * 4 * 9 and row.float_params == 6
    assert "scale learned" in row.note


def test_cli_target_builds_a_zoo_model_at_its_default_cifar_size():
    s = summary_of_target("reactnet18", overrides={"model.width": "8", "model.blocks": "[1, 1]"})
    assert s.input_shape == (3, 32, 32)
    assert s.source == "model reactnet18"
    s = summary_of_target("quicknet", overrides={"model.size": "small", "model.blocks": "[1, 1]",
                                                  "model.widths": "[8, 16]", "model.input_size": "64"})
    assert s.input_shape == (3, 64, 64)


SMALL_OVERRIDES = {
    "mnist_mlp": {"model.hidden": "16"},
    "cifar10_vgg": {"model.widths": "[8, 16, 16]", "model.fc": "[32]"},
    "svhn_vgg": {"model.widths": "[8, 8, 16]", "model.fc": "[32]"},
    "birealnet18": {"model.width": "8"},
    "reactnet18": {"model.width": "8", "model.blocks": "[2, 1, 1, 1]"},
    "reactnet_a": {"model.widths": "[8, 16, 16, 32]"},
    "quicknet": {"model.widths": "[8, 16, 16, 32]"},
}


@pytest.mark.parametrize("name", sorted(SMALL_OVERRIDES))
def test_named_models_traced_on_meta_give_the_in_memory_summary(name, monkeypatch):
    import binarynet.summary.targets as targets

    on_meta = summary_of_target(name, None, SMALL_OVERRIDES[name])
    monkeypatch.setattr(targets, "_meta_model", lambda build: None)  # forces the real build
    in_memory = summary_of_target(name, None, SMALL_OVERRIDES[name])
    assert on_meta.to_dict() == in_memory.to_dict()


def test_recipe_traced_on_meta_gives_the_in_memory_summary(monkeypatch):
    import binarynet.summary.targets as targets
    from binarynet.train import recipes

    name = "synthetic_mlp" if "synthetic_mlp" in recipes.names() else recipes.names()[0]
    on_meta = summary_of_target(name)
    monkeypatch.setattr(targets, "_meta_model", lambda build: None)
    assert summary_of_target(name).to_dict() == on_meta.to_dict()


def test_large_input_costs_nothing_on_meta():
    s = summary_of_target("reactnet_a", (3, 2048, 2048), {"model.input_size": "2048"})
    assert s.layers[-1].output_shape == (10,)
    assert s.binary_macs > 4e11  # a real forward of this would take minutes and gigabytes


def test_forward_that_meta_cannot_run_is_traced_in_memory():
    class ReadsValues(nn.Module):
        def forward(self, x):
            return x * float(x.abs().max().item() + 1)  # .item() fails on meta tensors

    name = "test_summary_zoo_reads_values"
    if name not in bn.models.names():
        bn.models.register(name)(lambda: nn.Sequential(ReadsValues(), bn.nn.BinaryLinear(4, 2)))
    s = summary_of_target(name, (4,))
    assert s.binary_params == 8
