"""bn.optim.Bop (latent-free binary weights), binary_params, Combined, and the weight-decay rule."""
import copy

import pytest
import torch
from torch import nn

import binarynet as bn
from binarynet.optim import Bop, BopError, Combined, binary_params, decay_split, named_binary_params


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), bn.nn.Sign(), bn.nn.BinaryLinear(3, 2))


def test_binary_params_are_exactly_the_binary_layers_weights():
    model = small_model()
    assert [n for n, _ in named_binary_params(model)] == ["3.weight"]
    assert binary_params(model)[0] is model[3].weight


def test_bop_first_steps_equal_a_hand_computation():
    layer = bn.nn.BinaryLinear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.3, -0.2], [0.0, -0.7]]))
    opt = Bop([layer.weight], threshold=0.1, gamma=0.5)
    w0 = [[1.0, -1.0], [1.0, -1.0]]  # sign, with sign(0) = +1
    assert layer.weight.tolist() == w0
    grads = [[[0.4, 0.1], [-0.5, -0.1]], [[0.4, -0.4], [0.2, -0.1]]]
    m, w = [[0.0, 0.0], [0.0, 0.0]], [row[:] for row in w0]
    for g in grads:
        layer.weight.grad = torch.tensor(g)
        opt.step()
        flips = 0
        for i in range(2):
            for j in range(2):
                m[i][j] = 0.5 * m[i][j] + 0.5 * g[i][j]
                if abs(m[i][j]) > 0.1 and (m[i][j] > 0) == (w[i][j] > 0):
                    w[i][j] = -w[i][j]
                    flips += 1
        assert torch.allclose(opt.state[layer.weight]["momentum"], torch.tensor(m))
        assert layer.weight.tolist() == w
        assert opt.last_flip_ratio() == flips / 4
    # step 1: m = [[.2, .05], [-.25, -.05]] flips (0,0) only; step 2: m = [[.3, -.175], [-.025, -.075]]
    # flips (0,1) (w = -1, m < 0, |m| > .1); (0,0) is -1 now and m > 0: stays.
    assert w == [[-1.0, 1.0], [1.0, -1.0]]
    assert float(opt.flip_count()) == 2


def test_bop_refuses_a_non_binary_parameter_naming_it():
    model = small_model()
    with pytest.raises(BopError, match=r"0\.weight .*not a binary layer's weight"):
        Bop(list(model.named_parameters()))
    with pytest.raises(BopError, match=r"parameter 0 \(shape \(3, 4\)\)"):
        Bop(model.parameters())
    with pytest.raises(BopError, match="gamma"):
        Bop(binary_params(model), gamma=0.0)


def combined(model, lr=1e-2):
    binary = binary_params(model)
    rest = [p for p in model.parameters() if all(p is not b for b in binary)]
    return Combined(Bop(binary, threshold=1e-6, gamma=0.1), torch.optim.Adam(rest, lr=lr))


def run_steps(model, opt, steps, start=0):
    for k in range(start, start + steps):
        g = torch.Generator().manual_seed(k)
        x, y = torch.randn(16, 4, generator=g), torch.randint(0, 2, (16,), generator=g)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_bop_touches_only_binary_weights_and_other_params_follow_their_optimizer():
    model = small_model()
    opt = combined(model, lr=0.0)
    before = copy.deepcopy(model.state_dict())
    run_steps(model, opt, 5)
    after = model.state_dict()
    for name in before:
        if name == "3.weight":
            assert set(after[name].unique().tolist()) <= {-1.0, 1.0}
            assert not torch.equal(after[name], before[name])  # something flipped (gamma .1, tau 1e-6)
        elif "running" not in name and "num_batches" not in name:
            assert torch.equal(after[name], before[name]), name


def test_combined_state_dict_round_trip_resumes_exactly():
    straight = small_model()
    opt = combined(straight)
    run_steps(straight, opt, 6)
    first = small_model()
    opt1 = combined(first)
    run_steps(first, opt1, 3)
    model_state, opt_state = copy.deepcopy(first.state_dict()), copy.deepcopy(opt1.state_dict())
    resumed = small_model()
    opt2 = combined(resumed)
    resumed.load_state_dict(model_state)
    opt2.load_state_dict(opt_state)
    run_steps(resumed, opt2, 3, start=3)
    for name, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    assert float(opt2.find(Bop).flip_count()) == float(opt.find(Bop).flip_count())
    with pytest.raises(ValueError, match="optimizer states"):
        opt2.load_state_dict({"optimizers": [opt_state["optimizers"][0]]})


def test_latent_clipping_leaves_bop_weights_alone():
    model = small_model()
    Bop(binary_params(model))
    weight = model[3].weight
    with torch.no_grad():
        weight.mul_(3.0)  # not a Bop state, but shows whether the clip reaches it
    adam = bn.optim.Adam(bn.optim.param_groups(model, lr=0.0))
    weight.grad = torch.zeros_like(weight)
    adam.step()
    assert weight.abs().max().item() == 3.0


def test_weight_decay_goes_only_to_real_valued_layer_weights():
    model = small_model()
    decayed, kept = decay_split(model)
    assert decayed == [model[0].weight]
    assert {id(p) for p in kept} == {id(model[0].bias), id(model[1].weight), id(model[1].bias), id(model[3].bias)}
    decayed, _ = decay_split(model, decay_norm_and_bias=True)
    assert len(decayed) == 5 and all(p is not model[3].weight for p in decayed)
