"""Binarization functions of BNN (Courbariaux, Hubara et al. 2016, arXiv:1602.02830, §1).

Plain functions on tensors, plus a small registry so layers can name their quantizer:

- ``sign``: deterministic sign, sign(0) = +1, no gradient.
- ``ste_sign``: sign with the hard-tanh straight-through estimator (paper Eq. 4).
- ``stochastic_sign``: +1 with probability hard_sigmoid(x) in training, sign at evaluation.
- ``ap2``: approximate power of two, used by shift-based BN and AdaMax (paper Alg. 3/4).

The later BNN literature's pseudo-gradients (docs/models.md), each sign(x) forward:

- ``approx_sign``: Bi-Real Net's piecewise-quadratic gradient (Liu et al. 2018, arXiv:1808.00278).
- ``swish_sign``: BNN+'s SwishSign gradient (Darabi et al. 2018, arXiv:1812.11800).
- ``magnitude_aware_sign``: weights sign(w) * mean|w| per output channel (Bi-Real Net).

All are single tensor ops (no Python loops over elements). ``get(name, **params)`` binds
parameters (``get("swish_sign", beta=10.0)``).
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable, Optional, Union

import torch

__all__ = ["sign", "ste_sign", "stochastic_sign", "approx_sign", "swish_sign", "magnitude_aware_sign",
           "channel_mean_abs", "ap2", "hard_sigmoid", "get", "names"]


# A 0-dim CPU tensor acts as a scalar in ops on any device and dtype.
_ONE = torch.ones(())


def _binary(x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """+1 where x >= 0 else -1, same dtype (sign(0) = sign(-0.0) = +1, docs/paper.md §1.1).

    x + 0.0 turns -0.0 into +0.0; copysign(1, .) then gives +1 for x >= 0 and -1 for x < 0.
    Two passes and one allocation (none with ``out``), several times faster on CPU than
    ``torch.where`` with scalars. Never plain torch.sign, which maps 0 to 0.
    """
    z = torch.add(x, 0.0, out=out)
    # meta tensors (shape-only tracing) refuse to mix with the CPU constant
    return torch.copysign(_ONE if x.device.type != "meta" else z.new_ones(()), z, out=z)


def _inside_mask(x: torch.Tensor, clip: float):
    """The STE mask 1{|x| <= clip}, or None when it is all ones.

    On CPU one read-only pass (aminmax) usually proves that a latent weight kept in [-1, 1] by
    the optimizer needs no mask, which saves allocating and applying one per step. On GPUs the
    check would cost a host sync, so the mask is always built there (and under torch.compile,
    which cannot branch on data).
    """
    if x.device.type == "cpu" and x.numel() > 0 and not torch.compiler.is_compiling():
        low, high = torch.aminmax(x)
        if low >= -clip and high <= clip:
            return None
    return x.abs() <= clip


class _ZeroGradSign(torch.autograd.Function):
    """Sign whose backward is exactly zero (a true derivative almost everywhere)."""

    @staticmethod
    def forward(ctx, x):
        return _binary(x)

    @staticmethod
    def backward(ctx, grad_output):
        return torch.zeros_like(grad_output)


class _SteSign(torch.autograd.Function):
    """Sign forward, g * 1{|x| <= clip} backward. The mask is computed once, in forward."""

    @staticmethod
    def forward(ctx, x, clip):
        ctx.inside = _inside_mask(x, clip) if ctx.needs_input_grad[0] else None
        return _binary(x)

    @staticmethod
    def backward(ctx, grad_output):
        inside = ctx.inside
        return (grad_output if inside is None else grad_output * inside), None


class _SteStochasticSign(torch.autograd.Function):
    """Stochastic sign forward (bits drawn outside), STE backward as ``_SteSign``."""

    @staticmethod
    def forward(ctx, x, uniform, clip):
        ctx.inside = _inside_mask(x, clip) if ctx.needs_input_grad[0] else None
        # P(+1) = P(U < hs(x)) = hs(x) for U ~ U[0, 1).
        return torch.where(uniform < hard_sigmoid(x), 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        inside = ctx.inside
        return (grad_output if inside is None else grad_output * inside), None, None


class _ApproxSign(torch.autograd.Function):
    """Sign forward; backward g * (2 - 2|x|) on [-1, 1), 0 elsewhere (Bi-Real's ApproxSign)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _binary(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        # 2 + 2x on [-1, 0) and 2 - 2x on [0, 1) are both 2 - 2|x|, which is 0 at +-1 and
        # negative outside, so clamping at 0 gives the support without a mask.
        return grad_output * (2.0 - 2.0 * x.abs()).clamp_(min=0.0)


class _SwishSign(torch.autograd.Function):
    """Sign forward; backward g * d/dx SS_beta(x) (BNN+'s SwishSign)."""

    @staticmethod
    def forward(ctx, x, beta):
        ctx.save_for_backward(x)
        ctx.beta = beta
        return _binary(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        # |beta x| beyond 40 gives a gradient below 1e-15; clamping keeps cosh finite.
        z = (ctx.beta * x).clamp(-40.0, 40.0)
        grad = ctx.beta * (2.0 - z * torch.tanh(z * 0.5)) / (1.0 + torch.cosh(z))
        return grad_output * grad, None


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Hard sigmoid sigma(x) = clip((x + 1) / 2, 0, 1) (paper §1.2, the stochastic +1 probability)."""
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


def sign(x: torch.Tensor) -> torch.Tensor:
    """Deterministic binarization x_b = +1 if x >= 0 else -1 (paper Eq. 1; sign(0) = +1).

    Same dtype as ``x``. Gradient: zero everywhere (the true derivative almost everywhere),
    so use :func:`ste_sign` where a training signal must pass through.
    """
    _check_float(x, "sign")
    return _ZeroGradSign.apply(x)


def ste_sign(x: torch.Tensor, clip: float = 1.0) -> torch.Tensor:
    """Sign with the straight-through estimator of the paper (§1.3, Eq. 4).

    Forward: +1 if x >= 0 else -1. Backward: g_x = g * 1{|x| <= clip} (inclusive), the
    gradient of Htanh(x) = clip(x, -1, 1) for clip = 1. On latent weights kept in
    [-1, 1] by clipping this is the identity STE of the paper's weights (§1.4).
    """
    _check_float(x, "ste_sign")
    return _SteSign.apply(x, clip)


def stochastic_sign(
    x: torch.Tensor,
    clip: float = 1.0,
    training: bool = True,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Stochastic binarization (paper §1.2, Eq. 2), train-time only.

    Training: +1 with probability hard_sigmoid(x) = clip((x + 1) / 2, 0, 1), else -1.
    Evaluation (``training=False``): deterministic sign, as every BNN code does at test time.
    Backward (both modes): the STE of :func:`ste_sign`, g * 1{|x| <= clip}.
    The random bits come from ``generator`` or torch's global generator, so results are
    reproducible under ``torch.manual_seed``.
    """
    _check_float(x, "stochastic_sign")
    if not training:
        return _SteSign.apply(x, clip)
    uniform = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return _SteStochasticSign.apply(x, uniform, clip)


def approx_sign(x: torch.Tensor) -> torch.Tensor:
    """Sign with Bi-Real Net's ApproxSign pseudo-gradient (Liu et al. 2018, arXiv:1808.00278).

    Forward: +1 if x >= 0 else -1. Backward: the derivative of the piecewise quadratic
    ApproxSign(x) = -1 (x < -1), 2x + x^2 (-1 <= x < 0), 2x - x^2 (0 <= x < 1), 1 (x >= 1):
    g * (2 + 2x) on [-1, 0), g * (2 - 2x) on [0, 1), 0 elsewhere. It approximates the
    derivative of sign more closely than the hard-tanh STE's box.
    """
    _check_float(x, "approx_sign")
    return _ApproxSign.apply(x)


def swish_sign(x: torch.Tensor, beta: float = 5.0) -> torch.Tensor:
    """Sign with BNN+'s SwishSign pseudo-gradient (Darabi et al. 2018, arXiv:1812.11800).

    Forward: +1 if x >= 0 else -1. Backward: g times the derivative of
    SS_beta(x) = 2 sigmoid(beta x) (1 + beta x (1 - sigmoid(beta x))) - 1, which is
    beta (2 - beta x tanh(beta x / 2)) / (1 + cosh(beta x)). Larger ``beta`` (default 5)
    sharpens the gradient around 0; it is slightly negative for |x| beyond about 2.4 / beta.
    """
    _check_float(x, "swish_sign")
    beta = float(beta)
    if not beta > 0:
        raise ValueError(f"binarynet.quantizers.swish_sign: beta must be positive, got {beta}")
    return _SwishSign.apply(x, beta)


def channel_mean_abs(w: torch.Tensor) -> torch.Tensor:
    """mean |w| per output channel (axis 0), shaped to broadcast against ``w``; no gradient.

    The magnitude of Bi-Real Net's weights (arXiv:1808.00278), shared by
    :func:`magnitude_aware_sign` and the ``scale="mean_abs"`` option of the binary layers.
    Bi-Real (and larq) treat it as a constant in the backward pass.
    """
    w = w.detach()
    if w.dim() < 2:
        return w.abs()
    return w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)


def magnitude_aware_sign(w: torch.Tensor, clip: float = 1.0) -> torch.Tensor:
    """Bi-Real Net's magnitude-aware weights (Liu et al. 2018, arXiv:1808.00278).

    Forward: alpha_o * sign(w) with alpha_o = mean |w| over output channel o (axis 0 of a
    torch weight: all of a conv filter or a dense row). Backward (Bi-Real's magnitude-aware gradient):
    g * alpha_o * 1{|w| <= clip}: alpha is a constant, sign gets the hard-tanh STE.
    The output is not +-1: for exportable models use the layers' ``scale="mean_abs"``
    option, which computes the same product but keeps alpha apart from the +-1 weights.
    """
    _check_float(w, "magnitude_aware_sign")
    return channel_mean_abs(w) * _SteSign.apply(w, clip)


def ap2(x: torch.Tensor) -> torch.Tensor:
    """Approximate power of two, AP2(x) = sign(x) * 2**round(log2|x|), AP2(0) = 0 (paper Alg. 3).

    Rounds in the log domain (T7 uses round, not floor). Multiplying by AP2(y) is a bit shift
    in fixed point. The gradient is zero (round is piecewise constant).
    """
    _check_float(x, "ap2")
    # log2(0) = -inf -> 2**-inf = 0, and torch.sign(0) = 0 here is the intended AP2(0) = 0.
    return torch.sign(x) * torch.exp2(torch.round(torch.log2(x.abs())))


def _check_float(x, fn_name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"binarynet.quantizers.{fn_name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"binarynet.quantizers.{fn_name}: expected a floating-point tensor, got dtype {x.dtype}"
        )


Quantizer = Callable[[torch.Tensor], torch.Tensor]

_REGISTRY: dict[str, Quantizer] = {
    "sign": sign,
    "ste_sign": ste_sign,
    "stochastic_sign": stochastic_sign,
    "approx_sign": approx_sign,
    "swish_sign": swish_sign,
    "magnitude_aware_sign": magnitude_aware_sign,
}


def names() -> list[str]:
    """Names accepted by :func:`get` (and by the layers' ``*_quantizer`` arguments), sorted."""
    return sorted(_REGISTRY)


def get(quantizer: Union[str, Quantizer, None], **params) -> Optional[Quantizer]:
    """Resolve a quantizer given by name, as a callable, or None (no quantization).

    ``params`` bind a named quantizer's keyword parameters, e.g. ``get("swish_sign", beta=10.0)``
    or ``get("ste_sign", clip=1.25)`` (a ``functools.partial``). Raises ValueError for an
    unknown name (listing :func:`names`) or parameter (listing the quantizer's), and TypeError
    for anything that is neither a string, a callable nor None.
    """
    if quantizer is None or callable(quantizer) and not isinstance(quantizer, str):
        if params:
            raise ValueError(f"quantizer parameters {sorted(params)} apply to a quantizer name only")
        return quantizer
    if not isinstance(quantizer, str):
        raise TypeError(
            f"a quantizer must be a name ({', '.join(names())}), a callable or None, "
            f"got {type(quantizer).__name__}"
        )
    try:
        fn = _REGISTRY[quantizer]
    except KeyError:
        raise ValueError(
            f"unknown quantizer {quantizer!r}; known quantizers: {', '.join(names())}"
        ) from None
    if not params:
        return fn
    known = [p for p in inspect.signature(fn).parameters if p not in ("x", "w", "training", "generator")]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"quantizer {quantizer!r} has no parameter(s) {', '.join(unknown)}; "
                         f"its parameters: {', '.join(known) or 'none'}")
    return functools.partial(fn, **params)


def name_of(quantizer: Optional[Quantizer]) -> Optional[str]:
    """Registry name of a quantizer callable (with its bound parameters, ``swish_sign(beta=10.0)``);
    a custom callable's ``__qualname__``; None for None."""
    if quantizer is None:
        return None
    if isinstance(quantizer, functools.partial) and not quantizer.args:
        base = name_of(quantizer.func)
        bound = ", ".join(f"{k}={v!r}" for k, v in quantizer.keywords.items())
        return f"{base}({bound})"
    for key, fn in _REGISTRY.items():
        if fn is quantizer:
            return key
    return getattr(quantizer, "__qualname__", None) or type(quantizer).__name__
