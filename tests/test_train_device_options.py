"""The GPU training options' code paths, exercised on the CPU (their device check lifted)."""
import pytest
import torch

from binarynet import optim
from binarynet.train import RunOptions, checkpoint, options, recipes, train
from binarynet.train.builders import amp_dtype, unwrap

pytestmark = pytest.mark.usefixtures("one_thread")


def conv_recipe(**overrides):
    values = {"epochs": 1, "max_train_samples": 200, "max_eval_samples": 100, "model": "cifar10_vgg",
              "model.in_channels": 1, "model.image_size": 8, "model.widths": [4, 8, 8], "model.fc": [16, 16]}
    values.update(overrides)
    return recipes.apply_overrides(recipes.get("synthetic_mlp"), values)


def test_channels_last_trains_the_same_network(tmp_path, monkeypatch):
    monkeypatch.setattr(options, "GPU_ONLY", ())
    for name, flag in (("plain", False), ("nhwc", True)):
        train(conv_recipe(), RunOptions(out=str(tmp_path / name), device="cpu", progress=False, channels_last=flag))
    plain, nhwc = (checkpoint.load(tmp_path / name / "last.pt")["model"] for name in ("plain", "nhwc"))
    assert plain.keys() == nhwc.keys()
    for key, value in plain.items():  # other kernels, other rounding: close, not equal
        assert torch.allclose(value.float(), nhwc[key].float(), atol=0.05), key


def test_unwrap_sees_through_torch_compile():
    model = torch.nn.Linear(2, 2)
    assert unwrap(torch.compile(model)) is model  # compiling happens at the first call, not here


def test_amp_is_bfloat16_on_the_cpu():
    assert amp_dtype(torch.device("cpu")) == torch.bfloat16


def test_fused_adam_clips_and_matches_the_default_step():
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.rand(5, 3) * 2 - 1) for _ in range(2)]
    fused = [torch.nn.Parameter(w.detach().clone()) for w in weights]
    for params, flag in ((weights, None), (fused, True)):
        opt = optim.Adam([{"params": params, "latent_clip": True}], lr=0.5, fused=flag)
        for p in params:
            p.grad = torch.full_like(p, -1.0)
        opt.step()
    for a, b in zip(weights, fused):
        assert torch.allclose(a, b) and b.abs().max() <= 1.0 and (b == 1.0).any()
