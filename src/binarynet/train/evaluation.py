"""Loss and error of a model on a dataset split, in eval mode, over all ranks."""
from __future__ import annotations

import torch

from .. import data
from . import distributed
from .builders import autocast
from .metrics import Totals


@torch.no_grad()
def evaluate(model, dataset, normalization, loss_fn, *, batch_size: int, device,
             ctx: distributed.Context = distributed.Context(), amp: bool = False) -> Totals:
    """Loss and error of ``model`` (eval mode) on ``dataset``, summed over all ranks' shards."""
    was_training = model.training
    model.eval()
    shard = distributed.shard_for_eval(len(dataset), ctx)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    try:
        for x, y in data.batches(dataset, batch_size, sampler_indices=shard, normalization=normalization,
                                 device=device):
            with autocast(device, amp):
                scores = model(x)
            scores = scores.float()
            sums += torch.stack([loss_fn(scores, y).double() * len(y),
                                 (scores.argmax(dim=1) == y).sum().double(),
                                 scores.new_full((), len(y), dtype=torch.float64)])  # no host copy
    finally:
        model.train(was_training)
    return Totals.from_tensor(distributed.all_reduce_sum(ctx, sums))
