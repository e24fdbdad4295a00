"""sign(W) of a binary layer's latent weight in a storage reused from one training step to the next.

Why: on CPU a fresh weight-sized tensor costs its page faults on every step (allocations above
glibc's mmap threshold go back to the OS when freed), which for the paper's 4096 x 4096 layers
is as much as all the arithmetic of the binarization. The layer therefore writes sign(W) into
the same storage each forward, but only when no live autograd graph can still read the
previous value: the storage is marked in use by a forward with grad enabled and released by
the backward of that forward. Otherwise (two forwards before one backward, a forward whose
graph was dropped) a fresh tensor is used, as without the buffer. Only the layer's own
forward uses this; ``BinaryLayer.quantized_weight()`` always returns a new tensor.

One pattern is refused rather than served a stale value: backward(retain_graph=True), another
forward of the layer, then a second backward through the first graph raises torch's "modified
by an inplace operation" error (the storage shares its version counter with what the graph saved).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..quantizers import _binary, _inside_mask
from .latent import known_clipped


class WeightSignBuffer:
    """Holds the reusable storage and whether a live graph may still read it."""

    __slots__ = ("tensor", "in_use")

    def __init__(self) -> None:
        self.tensor: Optional[torch.Tensor] = None
        self.in_use = False

    def take(self, like: torch.Tensor, grad_enabled: bool) -> torch.Tensor:
        """A tensor shaped like ``like`` that may be overwritten now; marked in use if
        ``grad_enabled`` (a graph built by this forward may save it)."""
        t = self.tensor
        if (
            self.in_use
            or t is None
            or t.shape != like.shape
            or t.dtype != like.dtype
            or t.device != like.device
            # an inference-mode tensor cannot be saved for backward outside inference mode
            or (t.is_inference() and not torch.is_inference_mode_enabled())
        ):
            t = torch.empty_like(like, memory_format=torch.contiguous_format)
            self.tensor = t
        self.in_use = grad_enabled
        return t

    def release(self, t: torch.Tensor) -> None:
        """The graph that read ``t`` has run its backward: ``t`` may be reused."""
        if self.tensor is t:
            self.in_use = False


class _BufferedSteSign(torch.autograd.Function):
    """ste_sign(W, clip) written into a WeightSignBuffer (same values and gradient as ste_sign)."""

    @staticmethod
    def forward(ctx, weight, clip, buffer, grad_enabled):
        stored = buffer.take(weight, grad_enabled)
        out = _binary(weight, out=stored)
        ctx.buffer, ctx.stored = buffer, stored
        if not ctx.needs_input_grad[0] or (clip >= 1.0 and known_clipped(weight)):
            ctx.inside = None  # all of W is inside [-1, 1]: the STE is the identity
        else:
            ctx.inside = _inside_mask(weight, clip)
        # A new alias: autograd attaches this node to it, not to the stored tensor. It shares
        # the version counter, so a misuse (retain_graph across a reuse) raises, never lies.
        return out.detach()

    @staticmethod
    def backward(ctx, grad_output):
        ctx.buffer.release(ctx.stored)  # the consumer (the product) has already run its backward
        inside = ctx.inside
        return (grad_output if inside is None else grad_output * inside), None, None, None


def buffered_ste_sign(weight: torch.Tensor, clip: float, buffer: WeightSignBuffer) -> torch.Tensor:
    """ste_sign(weight, clip), reusing ``buffer``'s storage when no graph can still read it."""
    return _BufferedSteSign.apply(weight, clip, buffer, torch.is_grad_enabled())
