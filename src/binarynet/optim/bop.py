"""Bop, the latent-free optimizer of binary weights (Helwegen et al. 2019, "Latent Weights Do Not
Exist: Rethinking Binarized Neural Network Optimization", arXiv:1906.02107).

A binary weight w in {-1, +1} has no real-valued latent copy. Bop keeps an exponential moving
average m of its gradient g and flips the weight when that average is strong and agrees in sign:

    m <- (1 - gamma) m + gamma g
    w <- -w   where |m| > tau and sign(m) = sign(w)     (else w unchanged)

(a positive m says the loss grows with w, so a weight at +1 flips to -1, and vice versa). The
binary layers keep their weight quantizer (sign), which is the identity on +-1 weights.
Only the binary layers' weights go to Bop (:func:`binary_params`); the remaining parameters
(BN, biases, real-valued first and last layers) go to any torch optimizer, combined with Bop in
one object by :class:`~binarynet.optim.combined.Combined`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import BinarynetError
from ..nn.latent import is_latent
from ..quantizers import _binary

__all__ = ["Bop", "BopError", "binary_params", "named_binary_params", "is_bop_weight"]

_BOP_TAG = "_binarynet_bop"


class BopError(BinarynetError, ValueError):
    """Bop given a parameter that is not a binary layer's weight, or a bad hyper-parameter."""


def is_bop_weight(param: torch.Tensor) -> bool:
    """True for a binary weight that a :class:`Bop` optimizer owns (kept +-1, never clipped)."""
    return getattr(param, _BOP_TAG, False) is True


def named_binary_params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, weight)`` of every binary layer of ``model`` (the tensors tagged as latent
    weights by :class:`binarynet.nn.BinaryLayer` and its subclasses), each shared tensor once."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"binary_params expects an nn.Module, got {type(model).__name__}")
    return [(name, p) for name, p in model.named_parameters() if is_latent(p)]


def binary_params(model: nn.Module) -> list[nn.Parameter]:
    """Exactly the binary layers' weights of ``model``: what :class:`Bop` takes."""
    return [p for _, p in named_binary_params(model)]


class Bop(torch.optim.Optimizer):
    """The Bop update (module docstring) of binary weights, with per-group ``threshold`` (tau)
    and ``gamma``; defaults are the paper's CIFAR-10 values (tau 1e-8, gamma 1e-4).

    ``params``: binary weights (:func:`binary_params`), or ``(name, weight)`` pairs
    (:func:`named_binary_params`) so that errors name the layer. Any other tensor raises
    :class:`BopError`. On construction each weight is set to sign(w) (sign(0) = +1) and marked as
    Bop's, so that latent-weight clipping (:class:`binarynet.optim.Adam`) leaves it alone.

    ``flip_count()`` is the number of sign flips made so far (a tensor, in the optimizer state:
    checkpoints keep it); ``last_flip_ratio()`` the fraction of weights flipped by the last step.
    The learning rate set on its groups is ignored: tau and gamma stay as given.
    """

    clips_latent_weights = True  # nothing to clip: the weights are +-1 (no warning from nn.latent)

    def __init__(self, params, threshold: float = 1e-8, gamma: float = 1e-4):
        if not threshold >= 0:
            raise BopError(f"Bop: threshold must be >= 0, got {threshold}")
        if not 0.0 < gamma <= 1.0:
            raise BopError(f"Bop: gamma must be in (0, 1], got {gamma}")
        params = list(params)
        if params and not isinstance(params[0], dict):
            params = [{"params": params}]
        for group in params:
            group["params"] = _binary_weights(group["params"])
        super().__init__(params, dict(threshold=threshold, gamma=gamma))
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    p.copy_(_binary(p))
                    setattr(p, _BOP_TAG, True)

    def _state_of(self, p: torch.Tensor) -> dict:
        state = self.state[p]
        if not state:
            state["momentum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["flips"] = torch.zeros((), dtype=torch.float64, device=p.device)
            state["last_flips"] = torch.zeros((), dtype=torch.float64, device=p.device)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        """One Bop update of every weight with a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            tau, gamma = group["threshold"], group["gamma"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Bop does not support sparse gradients")
                state = self._state_of(p)
                m = state["momentum"]
                m.mul_(1.0 - gamma).add_(p.grad, alpha=gamma)
                # w is +-1: m * w is |m| where the signs agree and -|m| (<= 0 <= tau) where
                # not, so m * w > tau is exactly |m| > tau and sign(m) = sign(w).
                flip = m * p > tau
                p.copy_(torch.where(flip, -p, p))
                flipped = flip.sum(dtype=torch.float64)
                state["last_flips"].copy_(flipped)
                state["flips"].add_(flipped)
        return loss

    def _weights(self):
        return [p for group in self.param_groups for p in group["params"]]

    def flip_count(self) -> torch.Tensor:
        """Sign flips made since the optimizer started (0-dim float64 tensor; no host sync)."""
        counts = [self.state[p]["flips"] for p in self._weights() if p in self.state]
        return torch.stack(counts).sum() if counts else torch.zeros((), dtype=torch.float64)

    def num_weights(self) -> int:
        """How many binary weights Bop updates."""
        return sum(p.numel() for p in self._weights())

    def last_flip_ratio(self) -> float:
        """Fraction of the binary weights that changed sign in the last step."""
        counts = [self.state[p]["last_flips"] for p in self._weights() if p in self.state]
        total = self.num_weights()
        return float(torch.stack(counts).sum()) / total if counts and total else 0.0


def _binary_weights(items) -> list:
    """The tensors of ``items`` (tensors or (name, tensor) pairs), each a binary weight."""
    weights = []
    for index, item in enumerate(items):
        name, p = item if isinstance(item, tuple) else (f"parameter {index}", item)
        if not isinstance(p, torch.Tensor) or not is_latent(p):
            shape = tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
            raise BopError(
                f"Bop: {name} (shape {shape}) is not a binary layer's weight; Bop takes only "
                "bn.optim.binary_params(model), give the other parameters to another optimizer")
        weights.append(p)
    return weights
