"""The later literature's quantizers: approx_sign (Bi-Real), swish_sign (BNN+), magnitude_aware_sign.

Each pseudo-gradient is checked against its formula (autograd of the quantizer vs the analytic
expression) at points inside, on the edge of and outside its support; outputs are exactly +-1
with sign(0) = +1."""
import functools

import pytest
import torch

from binarynet import quantizers as q

# inside (-0.7, -0.2, 0.3, 0.9), on the edges (-1, 0, 1), outside (-3, 1.5, 40)
POINTS = [-3.0, -1.0, -0.7, -0.2, -0.0, 0.0, 0.3, 0.9, 1.0, 1.5, 40.0]
SIGNS = [-1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def _grad(fn, points=POINTS, dtype=torch.float64):
    x = torch.tensor(points, dtype=dtype, requires_grad=True)
    out = fn(x)
    upstream = torch.arange(1.0, len(points) + 1, dtype=dtype)
    (out * upstream).sum().backward()
    return out.detach(), x.grad / upstream


def approx_sign_grad(x):  # Bi-Real Net Eq. 5, derivative of the piecewise quadratic
    if -1 <= x < 0:
        return 2 + 2 * x
    if 0 <= x < 1:
        return 2 - 2 * x
    return 0.0


def swish_grad(x, beta):  # autograd of BNN+'s SS_beta(x) = 2 s(bx)(1 + bx(1 - s(bx))) - 1
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    s = torch.sigmoid(beta * t)
    (2 * s * (1 + beta * t * (1 - s)) - 1).backward()
    return t.grad.item()


@pytest.mark.parametrize("fn", [q.approx_sign, q.swish_sign, functools.partial(q.swish_sign, beta=10),
                                q.get("approx_sign"), q.get("swish_sign", beta=2.0)])
def test_outputs_are_exactly_plus_minus_one_zero_to_plus_one(fn):
    out, _ = _grad(fn)
    assert out.tolist() == SIGNS
    assert fn(torch.zeros(3, dtype=torch.float16)).tolist() == [1.0, 1.0, 1.0]


def test_approx_sign_gradient_is_bireal_formula():
    _, grad = _grad(q.approx_sign)
    assert grad.tolist() == pytest.approx([approx_sign_grad(x) for x in POINTS], abs=1e-12)
    # spot values: 0 at -1 (edge of the support), 2 at 0, 0 at 1 and outside
    assert grad[1].item() == 0.0 and grad[4].item() == 2.0 and grad[8].item() == 0.0
    assert grad[0].item() == grad[-1].item() == 0.0


@pytest.mark.parametrize("beta", [5.0, 1.0, 10.0])
def test_swish_sign_gradient_is_bnn_plus_formula(beta):
    fn = q.swish_sign if beta == 5.0 else functools.partial(q.swish_sign, beta=beta)
    _, grad = _grad(fn)
    expected = [swish_grad(x, beta) for x in POINTS]
    assert grad.tolist() == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert grad[4].item() == pytest.approx(beta)  # peak beta at 0 (SS'(0) = beta * 2 / 2)
    assert abs(grad[-1].item()) < 1e-12  # far outside: vanishes


def test_swish_sign_default_beta_is_five_and_is_configurable_by_name():
    _, default = _grad(q.swish_sign)
    _, named = _grad(q.get("swish_sign", beta=5.0))
    assert torch.equal(default, named)
    _, sharper = _grad(q.get("swish_sign", beta=10.0))
    assert not torch.equal(default, sharper)
    with pytest.raises(ValueError, match="beta must be positive"):
        q.swish_sign(torch.ones(2), beta=0.0)


def test_magnitude_aware_sign_forward_and_bireal_gradient():
    w = torch.tensor([[[[0.5, -1.5]], [[-0.0, 0.25]]],        # channel 0: mean |w| = 0.5625
                      [[[-0.2, 0.2]], [[0.2, -0.6]]]],        # channel 1: mean |w| = 0.3
                     dtype=torch.float64, requires_grad=True)
    out = q.magnitude_aware_sign(w)
    alpha = torch.tensor([0.5625, 0.3], dtype=torch.float64).view(2, 1, 1, 1)
    signs = torch.tensor([[[[1.0, -1.0]], [[1.0, 1.0]]], [[[-1.0, 1.0]], [[1.0, -1.0]]]],
                         dtype=torch.float64)
    assert torch.allclose(out, alpha * signs)
    upstream = torch.arange(1.0, 9.0, dtype=torch.float64).view_as(w)
    (out * upstream).sum().backward()
    inside = (w.detach().abs() <= 1.0).double()  # |-1.5| > 1: no gradient there
    assert torch.allclose(w.grad, upstream * alpha * inside)
    assert w.grad[0, 0, 0, 1].item() == 0.0


def test_magnitude_aware_sign_of_a_dense_weight_is_per_row():
    w = torch.tensor([[1.0, -3.0], [0.5, 0.5]])
    assert q.magnitude_aware_sign(w).tolist() == [[2.0, -2.0], [0.5, 0.5]]
    assert q.channel_mean_abs(w).tolist() == [[2.0], [0.5]]


def test_get_binds_parameters_and_names_them():
    fn = q.get("ste_sign", clip=1.25)
    assert q.name_of(fn) == "ste_sign(clip=1.25)"
    assert q.name_of(q.get("swish_sign")) == "swish_sign"
    with pytest.raises(ValueError, match="no parameter.*gamma.*beta"):
        q.get("swish_sign", gamma=1.0)
    with pytest.raises(ValueError, match="name only"):
        q.get(q.sign, clip=2.0)


def test_quantizers_run_on_the_meta_device():
    x = torch.empty(4, 3, device="meta")
    for fn in (q.sign, q.ste_sign, q.approx_sign, q.swish_sign, q.magnitude_aware_sign):
        out = fn(x)
        assert out.device.type == "meta" and out.shape == x.shape


@pytest.mark.parametrize("fn", [q.approx_sign, q.swish_sign, q.magnitude_aware_sign])
def test_non_float_input_is_rejected(fn):
    with pytest.raises(TypeError, match="floating-point"):
        fn(torch.tensor([1, -2]))
