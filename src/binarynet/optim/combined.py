"""Several optimizers stepped as one: Bop for the binary weights, any torch optimizer for the rest.

The pattern the training loop uses, and that works with ``torch.compile`` (which compiles the
model, not the optimizer), DDP (gradients are all-reduced before ``step``, so every rank makes
the same flips) and checkpoints (one ``state_dict`` holding each optimizer's)::

    binary = bn.optim.binary_params(model)
    rest = [p for p in model.parameters() if not any(p is b for b in binary)]
    opt = bn.optim.Combined(bn.optim.Bop(binary, threshold=1e-8, gamma=1e-4),
                            torch.optim.Adam(rest, lr=1e-3))
    loss.backward(); opt.step(); opt.zero_grad()
"""
from __future__ import annotations

import torch

__all__ = ["Combined"]


class Combined:
    """``step``, ``zero_grad``, ``param_groups``, ``state_dict`` / ``load_state_dict`` of several
    torch optimizers over disjoint parameters, in the order given.

    ``param_groups`` is the concatenation of the optimizers' own group dicts (the same objects:
    setting a group's ``lr`` reaches the optimizer owning it), so helpers that walk
    ``optimizer.param_groups`` (learning-rate setters, ``torch.amp.GradScaler.unscale_``) work.
    """

    def __init__(self, *optimizers: torch.optim.Optimizer):
        if not optimizers:
            raise ValueError("Combined needs at least one optimizer")
        seen: set[int] = set()
        for opt in optimizers:
            for group in opt.param_groups:
                for p in group["params"]:
                    if id(p) in seen:
                        raise ValueError(f"Combined: a parameter of shape {tuple(p.shape)} is in two optimizers")
                    seen.add(id(p))
        self.optimizers = list(optimizers)

    @property
    def param_groups(self) -> list[dict]:
        return [group for opt in self.optimizers for group in opt.param_groups]

    @property
    def state(self) -> dict:
        merged = {}
        for opt in self.optimizers:
            merged.update(opt.state)
        return merged

    def step(self, closure=None):
        """Step every optimizer (a closure is evaluated once, by the first)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Inverse of :meth:`state_dict`; ValueError when the number of optimizers differs."""
        states = state_dict.get("optimizers") if isinstance(state_dict, dict) else None
        if not isinstance(states, list) or len(states) != len(self.optimizers):
            raise ValueError(f"Combined: the state holds {len(states) if isinstance(states, list) else 'no'} "
                             f"optimizer states, this object has {len(self.optimizers)} optimizers")
        for opt, state in zip(self.optimizers, states):
            opt.load_state_dict(state)

    def find(self, kind: type):
        """The first combined optimizer that is a ``kind`` (e.g. Bop), or None."""
        return next((opt for opt in self.optimizers if isinstance(opt, kind)), None)
