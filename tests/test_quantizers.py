"""binarynet.quantizers: exact forward values, STE gradients, stochastic statistics, AP2."""
import math

import pytest
import torch

from binarynet import quantizers as q

POINTS = torch.tensor([-2.0, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 1.5])


def test_sign_values_zero_maps_to_plus_one():
    out = q.sign(POINTS)
    assert out.tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert out.dtype == POINTS.dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_sign_keeps_dtype(dtype):
    x = POINTS.to(dtype)
    for fn in (q.sign, q.ste_sign, lambda t: q.stochastic_sign(t, training=False)):
        out = fn(x)
        assert out.dtype == dtype
        assert out.tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_sign_has_zero_gradient():
    x = POINTS.clone().requires_grad_()
    (q.sign(x) * torch.arange(8.0)).sum().backward()
    assert x.grad.tolist() == [0.0] * 8


@pytest.mark.parametrize(
    "clip, expected",
    [
        (1.0, [0, 1, 1, 1, 1, 1, 1, 0]),  # inclusive at |x| = 1
        (0.5, [0, 0, 1, 1, 1, 1, 0, 0]),
        (2.0, [1, 1, 1, 1, 1, 1, 1, 1]),
    ],
)
def test_ste_sign_gradient_is_htanh_mask(clip, expected):
    x = POINTS.clone().requires_grad_()
    upstream = torch.arange(1.0, 9.0)
    out = q.ste_sign(x, clip=clip)
    assert out.tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    (out * upstream).sum().backward()
    assert x.grad.tolist() == [u * e for u, e in zip(upstream.tolist(), expected)]


def test_ste_sign_gradient_matches_hardtanh_inside():
    # Away from the boundary the STE equals the derivative of Htanh(x) = clip(x, -1, 1).
    x = torch.tensor([-3.0, -0.7, 0.2, 0.99, 4.0], requires_grad=True)
    q.ste_sign(x).sum().backward()
    ref = x.detach().clone().requires_grad_()
    torch.nn.functional.hardtanh(ref).sum().backward()
    assert torch.equal(x.grad, ref.grad)


def test_hard_sigmoid_values():
    assert q.hard_sigmoid(torch.tensor([-3.0, -1.0, 0.0, 0.5, 1.0, 7.0])).tolist() == [0.0, 0.0, 0.5, 0.75, 1.0, 1.0]


def test_stochastic_sign_frequency_matches_hard_sigmoid():
    torch.manual_seed(1234)
    values = torch.tensor([-1.5, -1.0, -0.6, -0.2, 0.0, 0.3, 0.8, 1.0, 2.0])
    n = 40_000
    x = values.repeat(n, 1)
    out = q.stochastic_sign(x, training=True)
    assert set(out.unique().tolist()) <= {-1.0, 1.0}
    freq = (out == 1).double().mean(0)
    p = ((values.double() + 1) / 2).clamp(0, 1)
    for f, pi, v in zip(freq.tolist(), p.tolist(), values.tolist()):
        if pi in (0.0, 1.0):
            assert f == pi, v  # certain outcomes are exact
        else:
            bound = 5 * math.sqrt(pi * (1 - pi) / n)  # 5 sigma of the binomial frequency
            assert abs(f - pi) <= bound, (v, f, pi, bound)


def test_stochastic_sign_eval_is_deterministic_sign():
    x = torch.randn(1000)
    assert torch.equal(q.stochastic_sign(x, training=False), q.sign(x))


def test_stochastic_sign_reproducible_under_manual_seed_and_generator():
    x = torch.randn(5000) * 0.5
    torch.manual_seed(7)
    a = q.stochastic_sign(x)
    torch.manual_seed(7)
    b = q.stochastic_sign(x)
    assert torch.equal(a, b)
    torch.manual_seed(8)
    assert not torch.equal(a, q.stochastic_sign(x))
    g1 = torch.Generator().manual_seed(3)
    g2 = torch.Generator().manual_seed(3)
    c = q.stochastic_sign(x, generator=g1)
    torch.manual_seed(999)  # the global generator must not matter with an explicit one
    assert torch.equal(c, q.stochastic_sign(x, generator=g2))


def test_stochastic_sign_gradient_is_ste():
    torch.manual_seed(0)
    x = POINTS.clone().requires_grad_()
    q.stochastic_sign(x, clip=1.0).sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 1, 1, 1, 0]


def test_ap2_exact_values():
    x = torch.tensor([0.0, 1.0, -1.0, 3.0, 0.3, -5.0, 6.0, 2.8, 1.5, 0.75, -0.125, 1000.0, -0.0])
    expected = [0.0, 1.0, -1.0, 4.0, 0.25, -4.0, 8.0, 2.0, 2.0, 1.0, -0.125, 1024.0, 0.0]
    assert q.ap2(x).tolist() == expected
    assert q.ap2(x.double()).tolist() == expected


def test_ap2_is_power_of_two_in_log_distance():
    x = torch.rand(10_000, dtype=torch.float64) * 100 - 50
    y = q.ap2(x)
    assert torch.equal(torch.sign(y), torch.sign(x))
    log_ratio = torch.log2(y.abs()) - torch.log2(x.abs())
    assert log_ratio.abs().max() <= 0.5 + 1e-12
    assert torch.equal(torch.log2(y.abs()), torch.log2(y.abs()).round())


def test_registry():
    assert q.names() == ["approx_sign", "magnitude_aware_sign", "sign", "ste_sign", "stochastic_sign",
                         "swish_sign"]
    assert q.get("ste_sign") is q.ste_sign
    assert q.get(None) is None
    fn = lambda t: t  # noqa: E731
    assert q.get(fn) is fn
    with pytest.raises(ValueError, match="sign, ste_sign, stochastic_sign, swish_sign"):
        q.get("binary_tanh")
    with pytest.raises(TypeError):
        q.get(3)


def test_non_float_input_is_rejected():
    for fn in (q.sign, q.ste_sign, q.stochastic_sign, q.ap2):
        with pytest.raises(TypeError, match="floating-point"):
            fn(torch.tensor([1, -2]))
