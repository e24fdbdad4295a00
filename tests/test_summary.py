"""binarynet.summary: per-layer bits, packed memory, MACs, energy estimate; `binarynet summary`."""
import json
import math
import os

import pytest
import torch
from torch import nn

import binarynet as bn
from binarynet.summary import (DRAM_ACCESS_PJ, MAC_ENERGY_PJ, SRAM_ACCESS_PJ, energy_estimate,
                               summary)


def small_mlp():
    """Hand-countable MLP: 20 -> 70 (binary, BN, sign) -> 3 (binary, BN)."""
    return nn.Sequential(nn.Flatten(), bn.nn.BinaryLinear(20, 70), nn.BatchNorm1d(70),
                         bn.nn.Sign(), bn.nn.BinaryLinear(70, 3), nn.BatchNorm1d(3))


def small_convnet():
    """Hand-countable convnet on 3x6x6 images in the paper order (pool before BN)."""
    return nn.Sequential(
        bn.nn.BinaryConv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), bn.nn.Sign(),
        bn.nn.BinaryConv2d(8, 4, 3, padding=1), nn.MaxPool2d(2), nn.BatchNorm2d(4), bn.nn.Sign(),
        nn.Flatten(), bn.nn.BinaryLinear(36, 5), nn.BatchNorm1d(5))


def column(s, field):
    return [getattr(layer, field) for layer in s.layers]


def test_mlp_counts_by_hand():
    s = summary(small_mlp(), (20,), input_bits=8)
    assert column(s, "kind") == ["Flatten", "BinaryLinear", "BatchNorm1d", "Sign",
                                 "BinaryLinear", "BatchNorm1d"]
    assert column(s, "output_shape") == [(20,), (70,), (70,), (70,), (3,), (3,)]
    assert column(s, "input_bits") == [8, 8, 32, 32, 1, 32]
    assert column(s, "binary_params") == [0, 1400, 0, 0, 210, 0]
    # bias 70; BN gamma, beta, running mean, running var = 4 x 70; ...
    assert column(s, "float_params") == [0, 70, 280, 0, 3, 12]
    # packed: 70 rows x 1 word + float32 bias | float threshold + flip + int32 threshold |
    # 3 rows x 2 words | float64 scale + shift per class
    assert column(s, "packed_bits") == [0, 70 * 64 + 70 * 32, 70 * (32 + 8 + 32), 0, 3 * 128,
                                        3 * 128]
    assert column(s, "binary_macs") == [0, 0, 0, 0, 210, 0]
    assert column(s, "multibit_macs") == [0, 1400, 0, 0, 0, 0]
    assert s.binary_params == 1610 and s.float_params == 365
    assert s.float32_bytes == (1610 + 365) * 4
    assert s.packed_bytes == (6720 + 5040 + 384 + 384) // 8
    assert s.compression_ratio == pytest.approx(7900 / 1566)


def test_float_input_has_no_integer_thresholds_and_float_macs():
    s = summary(small_mlp(), (20,))  # default: float32 input
    assert s.input_bits == 32
    assert column(s, "packed_bits")[2] == 70 * (32 + 8)
    assert column(s, "input_bits")[1] == 32


def test_convnet_counts_by_hand():
    s = summary(small_convnet(), (3, 6, 6), input_bits=8)
    assert column(s, "output_shape") == [(8, 6, 6), (8, 6, 6), (8, 6, 6), (4, 6, 6), (4, 3, 3),
                                         (4, 3, 3), (4, 3, 3), (36,), (5,), (5,)]
    assert column(s, "binary_params") == [216, 0, 0, 288, 0, 0, 0, 0, 180, 0]
    # first conv: whole 27-value patches in one word per filter, float bias; its BN becomes
    # float thresholds + flips + int32 thresholds per (3 row classes x 3 column classes x 8)
    # and the int32 class of each of the 6 rows and 6 columns; max-pool reuses the conv's flips
    assert column(s, "packed_bits") == [8 * 64 + 8 * 32, 8 * 40 + 32 * (3 * 3 * 8 + 6 + 6), 0,
                                        4 * 9 * 64, 0, 4 * 40, 0, 0, 5 * 64, 5 * 128]
    assert column(s, "multibit_macs") == [8 * 36 * 27, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert column(s, "binary_macs") == [0, 0, 0, 4 * 36 * 72, 0, 0, 0, 0, 180, 0]
    assert column(s, "input_bits")[3] == 1 and column(s, "input_bits")[8] == 1


def test_paper_mnist_mlp_totals():
    model = bn.models.get("mnist_mlp")
    s = summary(model, (1, 28, 28), input_bits=8)
    binary = 784 * 4096 + 2 * 4096 * 4096 + 4096 * 10
    assert s.binary_params == binary
    assert s.float_params == 3 * 5 * 4096 + 5 * 10  # bias + 4 BN values per unit
    assert s.binary_macs == 2 * 4096 * 4096 + 4096 * 10
    assert s.multibit_macs == 784 * 4096
    assert s.float32_bytes == 4 * (binary + s.float_params)
    assert 29 < s.compression_ratio < 32


def test_energy_estimate_by_hand():
    s = summary(small_mlp(), (20,), input_bits=8)
    e = energy_estimate(s)
    float_mac = MAC_ENERGY_PJ["float32"]["mul"] + MAC_ENERGY_PJ["float32"]["add"]
    assert float_mac == pytest.approx(4.6)
    assert e["float32"]["compute_pj"] == pytest.approx(1610 * 4.6)
    # 210 binary MACs at 3 x 0.2 pJ per 64, 1400 8-bit MACs at 0.23 pJ
    assert e["bnn"]["compute_pj"] == pytest.approx(210 / 64 * 0.6 + 1400 * 0.23)
    words = math.ceil(1566 / 8)
    assert e["bnn"]["memory"]["words64"] == words
    assert e["bnn"]["memory"]["dram_pj"] == pytest.approx((words * 1300.0, words * 2600.0))
    assert e["bnn"]["memory"]["sram_bytes"] == 8 * 1024  # 1566 B fits the 8 KB SRAM: 10 pJ
    assert e["bnn"]["memory"]["sram_pj"] == pytest.approx(words * 10.0)
    assert e["float32"]["memory"]["sram_bytes"] == 8 * 1024  # 7900 B
    assert "ESTIMATE" in e["label"]
    assert DRAM_ACCESS_PJ == (1300.0, 2600.0) and SRAM_ACCESS_PJ[0] == (8192, 10.0)


def test_sram_choice_follows_table3():
    s = summary(bn.models.get("mnist_mlp", hidden=1024), (1, 28, 28))
    assert s.packed_bytes < 1024 * 1024 < s.float32_bytes
    e = s.energy()
    assert e["bnn"]["memory"]["sram_bytes"] == 1024 * 1024
    assert e["float32"]["memory"]["sram_bytes"] is None


def test_text_markdown_and_dict_forms():
    s = summary(small_mlp(), (20,), input_bits=8)
    text = str(s)
    assert "BinaryLinear" in text and "ESTIMATE" in text and "compression" in text
    assert "1,400" in text  # thousands separators
    md = s.to_markdown()
    lines = md.splitlines()
    assert lines[0].startswith("| layer | type |") and lines[1].startswith("|---|")
    assert sum(line.startswith("| ") for line in lines) == 1 + len(s.layers) + 1  # + total
    data = json.loads(json.dumps(s.to_dict()))
    assert data["totals"]["packed_bytes"] == 1566
    assert len(data["layers"]) == 6 and data["layers"][1]["binary_params"] == 1400


def test_restores_training_mode_and_does_not_update_bn():
    model = small_mlp().train()
    before = model[2].running_mean.clone()
    summary(model, (20,))
    assert all(m.training for m in model.modules())
    assert torch.equal(model[2].running_mean, before)


def test_input_shape_inferred_for_mlp_required_for_convnet():
    assert summary(small_mlp()).input_shape == (20,)
    with pytest.raises(ValueError, match="input_shape"):
        summary(small_convnet())


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match=r"does not accept one sample of shape \(5, 6, 6\)"):
        summary(small_convnet(), (5, 6, 6))
    with pytest.raises(TypeError, match="expects a torch.nn.Module"):
        summary(42)
    with pytest.raises(ValueError, match="input_bits"):
        summary(small_mlp(), (20,), input_bits=4)


def test_float_layers_count_as_32_bit():
    model = nn.Sequential(nn.Linear(10, 4), nn.ReLU(), bn.nn.BinaryLinear(4, 2))
    s = summary(model, (10,))
    assert column(s, "float_params") == [44, 0, 2]
    assert column(s, "packed_bits") == [44 * 32, 0, 2 * 64 + 2 * 128]
    assert column(s, "multibit_macs") == [40, 0, 8]


# -- against real exports --------------------------------------------------------------------
def randomise_batchnorm(model, seed=0):
    """Random running statistics and affine parameters so thresholds land anywhere."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 3)
            m.running_var.copy_(torch.rand(n, generator=g) * 4 + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))
    return model.eval()


def export_u8(model, shape):
    from binarynet.export import export

    channels = shape[0] if len(shape) == 3 else 1
    x = torch.randint(0, 256, (4, *shape), dtype=torch.uint8)
    return export(model, x, input_scale=[2 / 255] * channels, input_offset=[-1.0] * channels)


def input_quantized_mlp():
    return nn.Sequential(nn.Flatten(), bn.nn.BinaryLinear(20, 16, input_quantizer="ste_sign"),
                         nn.BatchNorm1d(16), bn.nn.Sign(), bn.nn.BinaryLinear(16, 3),
                         nn.BatchNorm1d(3))


def input_quantized_convnet():
    return nn.Sequential(bn.nn.BinaryConv2d(3, 8, 3, padding=1, input_quantizer="ste_sign"),
                         nn.BatchNorm2d(8), bn.nn.Sign(), nn.Flatten(),
                         bn.nn.BinaryLinear(8 * 36, 3), nn.BatchNorm1d(3))


def no_batchnorm_mlp():
    return nn.Sequential(nn.Flatten(), bn.nn.BinaryLinear(20, 16), bn.nn.Sign(),
                         bn.nn.BinaryLinear(16, 3))


@pytest.mark.parametrize("make, shape", [
    (small_mlp, (20,)), (small_convnet, (3, 6, 6)), (input_quantized_mlp, (20,)),
    (input_quantized_convnet, (3, 6, 6)), (no_batchnorm_mlp, (20,))])
def test_torch_figure_equals_export_tensor_bytes(make, shape):
    from binarynet.export import export

    model = randomise_batchnorm(make())
    packed_u8 = export_u8(model, shape)
    assert summary(model, shape, input_bits=8).packed_bytes == packed_u8.nbytes
    packed_float = export(model, torch.randn(4, *shape))
    assert summary(model, shape, input_bits=32).packed_bytes == packed_float.nbytes


def test_reduced_cifar_net_figure_equals_export():
    model = randomise_batchnorm(bn.models.get("cifar10_vgg", widths=(8, 16, 16), fc=(32, 32)))
    packed = export_u8(model, (3, 32, 32))
    s = summary(model, (3, 32, 32), input_bits=8)
    assert s.packed_bytes == packed.nbytes
    p = summary(packed)
    assert [layer.kind for layer in p.layers] == [
        "first_conv", "conv", "maxpool", "conv", "conv", "maxpool", "conv", "conv", "maxpool",
        "flatten", "dense", "dense", "dense_logits"]
    assert (p.binary_params, p.binary_macs, p.multibit_macs, p.float32_bytes) == (
        s.binary_params, s.binary_macs, s.multibit_macs, s.float32_bytes)
    assert p.layers[0].output_shape == (8, 32, 32)  # torch order, not the engine's NHWC


def test_paper_mnist_mlp_packed_figure_matches_file_on_disk(tmp_path):
    model = randomise_batchnorm(bn.models.get("mnist_mlp"))  # full width: 3 x 4096
    packed = export_u8(model, (1, 28, 28))
    path = tmp_path / "model.bnn"
    packed.save(path)
    on_disk = os.path.getsize(path)
    estimate = summary(model, (1, 28, 28), input_bits=8).packed_bytes
    assert abs(estimate - on_disk) / on_disk < 0.02
    assert estimate == packed.nbytes  # the difference is the JSON header only
    from_file = summary(str(path))
    assert from_file.file_bytes == on_disk
    assert from_file.packed_bytes == packed.nbytes
    assert from_file.header_bytes == on_disk - packed.nbytes
    assert from_file.input_bits == 8
    assert "Packed file on disk" in str(from_file)
    # the packed file is >= 30x smaller than the float32 weights it stands for
    assert from_file.float32_bytes / on_disk > 30


# -- the command line ------------------------------------------------------------------------
def cli(capsys, *args):
    from binarynet.cli import main

    code = main(["summary", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_recipe_and_model_names(capsys):
    code, out, _ = cli(capsys, "mnist_mlp_quick")
    assert code == 0
    assert "Summary of recipe mnist_mlp_quick (model mnist_mlp) (input 1x28x28, 8-bit)" in out
    assert "2,910,208 1-bit weights" in out  # 784x1024 + 2 x 1024x1024 + 1024x10
    code, out, _ = cli(capsys, "mnist_mlp", "--set", "model.hidden=64", "--format", "json")
    assert code == 0
    totals = json.loads(out)["totals"]
    assert totals["binary_params"] == 784 * 64 + 2 * 64 * 64 + 64 * 10
    code, out, _ = cli(capsys, "cifar10_vgg", "--set", "model.widths=[8,16,16]",
                       "--set", "model.fc=[32,32]", "--format", "markdown")
    assert code == 0 and out.startswith("| layer | type |")
    assert "| 0 | BinaryConv2d | 8-bit | 8x32x32 |" in out


def test_cli_registered_model_name(capsys):
    name = "test_summary_tiny_convnet"
    if name not in bn.models.names():
        bn.models.register(name)(lambda in_channels=3, image_size=6: small_convnet())
    code, _, err = cli(capsys, name)  # a user's builder: binarynet cannot know its input
    assert code == 2 and "--input-shape C,H,W" in err
    code, out, _ = cli(capsys, name, "--input-shape", "3x6x6")
    assert code == 0 and f"Summary of model {name} (input 3x6x6, 32-bit float)" in out
    assert "684 1-bit weights" in out
    code, _, err = cli(capsys, name, "--set", "epochs=3")
    assert code == 2 and "model.<option>" in err


def test_cli_bad_targets(capsys, tmp_path):
    code, _, err = cli(capsys, "no_such_thing")
    assert code == 2 and "neither a file nor a folder" in err and "mnist_mlp_quick" in err
    code, _, err = cli(capsys, "mnist_mlp", "--set", "no_such_field=3")
    assert code == 2 and "unknown recipe field 'no_such_field'" in err
    code, _, err = cli(capsys, "mnist_mlp", "--input-shape", "1,x")
    assert code == 2 and "--input-shape" in err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    code, _, err = cli(capsys, str(junk))
    assert code == 2 and "cannot be read" in err
    code, _, err = cli(capsys, str(tmp_path))
    assert code == 2 and "without best.pt or last.pt" in err


def test_cli_checkpoint_run_folder_and_packed_file(capsys, tmp_path):
    from binarynet import train
    from binarynet.train.checkpoint import load_model

    recipe = train.recipes.apply_overrides(train.recipes.get("synthetic_mlp"), {
        "epochs": 1, "model.hidden": 32, "max_train_samples": 200, "max_eval_samples": 100})
    threads = torch.get_num_threads()
    train.train(recipe, train.RunOptions(out=str(tmp_path), threads=1, progress=False))
    torch.set_num_threads(threads)
    code, out, _ = cli(capsys, str(tmp_path / "best.pt"))
    assert code == 0 and "Summary of best.pt (synthetic_mlp) (input 1x8x8, 8-bit)" in out
    binary = 64 * 32 + 32 * 32 + 32 * 10
    assert f"{binary:,} 1-bit weights" in out
    code, out_dir, _ = cli(capsys, str(tmp_path))  # a run folder means its best.pt
    assert code == 0 and out_dir == out
    model, _, norm = load_model(tmp_path / "best.pt")
    packed = export_u8(model, (1, 8, 8))
    packed.save(tmp_path / "model.bnn")
    code, out, _ = cli(capsys, str(tmp_path / "model.bnn"), "--format", "json")
    result = json.loads(out)
    assert code == 0 and result["source"] == "model.bnn"
    assert result["totals"]["file_bytes"] == os.path.getsize(tmp_path / "model.bnn")
    assert result["totals"]["binary_params"] == binary
    assert [layer["kind"] for layer in result["layers"]] == ["first_dense", "dense",
                                                             "dense_logits"]
    code, _, err = cli(capsys, str(tmp_path / "model.bnn"), "--set", "model.hidden=2")
    assert code == 2 and "not to files" in err


def test_package_level_call():
    s = bn.summary.summary(small_mlp(), (20,), input_bits=8)
    assert s.packed_bytes == 1566 and s.binary_params == 1610


def test_energy_prices_each_layers_multibit_macs_at_its_own_precision():
    """8-bit pixels into the first layer, a float nn.Linear head: 1400 MACs at the int8 price,
    70 x 4 = 280 float32 MACs at 4.6 pJ (a model-wide input precision priced both at int8)."""
    model = nn.Sequential(nn.Flatten(), bn.nn.BinaryLinear(20, 70), nn.BatchNorm1d(70),
                          bn.nn.Sign(), bn.nn.BinaryLinear(70, 70), nn.BatchNorm1d(70),
                          nn.ReLU(), nn.Linear(70, 4))
    e = energy_estimate(summary(model, (20,), input_bits=8))
    assert e["bnn"]["compute_pj"] == pytest.approx(4900 / 64 * 0.6 + 1400 * 0.23 + 280 * 4.6)
