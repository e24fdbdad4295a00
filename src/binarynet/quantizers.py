"""Binarization functions of BNN (Courbariaux, Hubara et al. 2016, arXiv:1602.02830, §1).

Plain functions on tensors, plus a small registry so layers can name their quantizer:

- ``sign``: deterministic sign, sign(0) = +1, no gradient.
- ``ste_sign``: sign with the hard-tanh straight-through estimator (paper Eq. 4).
- ``stochastic_sign``: +1 with probability hard_sigmoid(x) in training, sign at evaluation.
- ``ap2``: approximate power of two, used by shift-based BN and AdaMax (paper Alg. 3/4).

All are single tensor ops (no Python loops over elements).
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch

__all__ = ["sign", "ste_sign", "stochastic_sign", "ap2", "hard_sigmoid", "get", "names"]


# A 0-dim CPU tensor acts as a scalar in ops on any device and dtype.
_ONE = torch.ones(())


def _binary(x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """+1 where x >= 0 else -1, same dtype (sign(0) = sign(-0.0) = +1, docs/paper.md §1.1).

    x + 0.0 turns -0.0 into +0.0; copysign(1, .) then gives +1 for x >= 0 and -1 for x < 0.
    Two passes and one allocation (none with ``out``), several times faster on CPU than
    ``torch.where`` with scalars. Never plain torch.sign, which maps 0 to 0.
    """
    z = torch.add(x, 0.0, out=out)
    return torch.copysign(_ONE, z, out=z)


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
}


def names() -> list[str]:
    """Names accepted by :func:`get` (and by the layers' ``*_quantizer`` arguments), sorted."""
    return sorted(_REGISTRY)


def get(quantizer: Union[str, Quantizer, None]) -> Optional[Quantizer]:
    """Resolve a quantizer given by name, as a callable, or None (no quantization).

    Raises ValueError for an unknown name (listing :func:`names`) and TypeError for
    anything that is neither a string, a callable nor None.
    """
    if quantizer is None:
        return None
    if isinstance(quantizer, str):
        try:
            return _REGISTRY[quantizer]
        except KeyError:
            raise ValueError(
                f"unknown quantizer {quantizer!r}; known quantizers: {', '.join(names())}"
            ) from None
    if callable(quantizer):
        return quantizer
    raise TypeError(
        f"a quantizer must be a name ({', '.join(names())}), a callable or None, "
        f"got {type(quantizer).__name__}"
    )


def name_of(quantizer: Optional[Quantizer]) -> Optional[str]:
    """Registry name of a quantizer callable; a custom callable's ``__qualname__``; None for None."""
    if quantizer is None:
        return None
    for key, fn in _REGISTRY.items():
        if fn is quantizer:
            return key
    return getattr(quantizer, "__qualname__", None) or type(quantizer).__name__
