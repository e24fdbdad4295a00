"""Data-parallel training with torchrun: process group, data sharding, reductions.

``torchrun --nproc_per_node N -m binarynet train ...`` starts N processes with RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT set; :func:`setup` joins them into one process group
(``env://``; NCCL on CUDA, Gloo on CPU) with a timeout, so a rank that dies makes the others fail
with an error instead of waiting forever.

Sharding: every epoch has one global order of the training set (a permutation seeded by the
run seed and the epoch, like ``DistributedSampler.set_epoch``). Global step k consumes positions
[k*G, (k+1)*G) of that order, G = per-process batch x world size; rank r takes the r-th slice
of b positions. The union over ranks is exactly the single-process batch of size G, so with
gradients averaged by DDP and batch-norm statistics synchronised (:mod:`.syncbn`) a step equals
a single-process step on the global batch. Progress is saved as a position in the global order,
not per-rank state, so a run resumes with any world size.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import BinarynetError


@dataclass(frozen=True)
class Context:
    """Where this process runs: ``rank`` of ``world_size`` processes, on ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        """True when running under torchrun with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, metrics and the progress bar."""
        return self.rank == 0

    @property
    def is_node_main(self) -> bool:
        """Local rank 0 fetches datasets for its machine (nodes need not share a file system)."""
        return self.local_rank == 0


def launched_by_torchrun() -> bool:
    """True when torchrun's environment variables are present."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def resolve_device(kind: str, local_rank: int = 0) -> torch.device:
    """``"cpu"``, ``"cuda"`` (this process's GPU: ``cuda:LOCAL_RANK``) or ``"auto"``."""
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise BinarynetError("--device cuda was requested but CUDA is not available; use --device cpu")
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    raise ValueError(f"unknown device {kind!r}; use cpu, cuda or auto")


def setup(device: str = "auto", timeout_s: float = 300.0) -> Context:
    """Join torchrun's process group if launched by torchrun, else a single-process context.

    Backend: NCCL for CUDA, Gloo for CPU. ``timeout_s`` bounds every collective, so a dead or
    stuck rank ends the job with an error after at most that long.
    """
    if not launched_by_torchrun():
        return Context(device=resolve_device(device))
    try:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise BinarynetError("RANK / WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun)") from None
    torch_device = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        timeout = datetime.timedelta(seconds=timeout_s)
        dist.init_process_group(backend=backend, init_method="env://", timeout=timeout,
                                **({"device_id": torch_device} if backend == "nccl" else {}))
    return Context(rank=rank, world_size=world_size, local_rank=local_rank, device=torch_device)


def teardown(ctx: Context) -> None:
    """Leave the process group (if this process joined one)."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(ctx: Context, values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks, as a new CPU tensor; ``values`` is left as it is."""
    if not ctx.distributed:
        return values.to("cpu", copy=True)
    # NCCL reduces device tensors only; Gloo reduces CPU tensors. The copy keeps the caller's
    # running sums this rank's own (a mid-epoch checkpoint reduces them and training goes on).
    on_device = values.to(ctx.device, copy=True)
    dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
    return on_device.cpu()


def any_rank(ctx: Context, flag: bool) -> bool:
    """True if ``flag`` is true on any rank (so that all ranks stop at the same step)."""
    if not ctx.distributed:
        return flag
    return bool(all_reduce_sum(ctx, torch.tensor([1.0 if flag else 0.0])).item() > 0)


# The work object of the latest barrier, kept alive on purpose (see barrier()).
_latest_barrier_work = None


def barrier(ctx: Context) -> None:
    """Wait for all ranks.

    Gloo's barrier work holds references to the collectives still in flight when it was queued,
    and the worker thread that ran it frees it just after ``wait()`` returns. When that is the
    last reference, the worker frees those collectives' tensors, which needs the GIL; if the main
    thread has meanwhile reached interpreter shutdown, the worker is terminated and the process
    aborts ("terminate called without an active exception", seen on ~5% of 2-process runs).
    Holding the latest barrier's work here means it is freed by the main thread instead, and
    waiting in the barrier (GIL released) lets the workers free the collectives they ran last.
    So a process ends with a barrier before it leaves the process group.
    """
    global _latest_barrier_work
    if ctx.distributed:
        work = dist.barrier(async_op=True)
        work.wait()
        _latest_barrier_work = work


def broadcast_object(ctx: Context, obj):
    """Rank 0's ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def epoch_order(num_samples: int, order_seed: int, epoch: int) -> torch.Tensor:
    """The global sample order of ``epoch``: a permutation seeded by (order_seed, epoch)."""
    generator = torch.Generator().manual_seed(mix_seed(order_seed, epoch))
    return torch.randperm(num_samples, generator=generator)


def shard_of_step(order: torch.Tensor, position: int, batch_size: int, ctx: Context) -> torch.Tensor:
    """Indices this rank trains on in the global batch that starts at ``position`` of ``order``.

    The global batch is ``order[position : position + batch_size * world_size]``; rank r takes
    its r-th slice of ``batch_size``.
    """
    start = position + ctx.rank * batch_size
    return order[start:start + batch_size]


def shard_for_eval(num_samples: int, ctx: Context) -> torch.Tensor:
    """Indices this rank evaluates: r, r + W, r + 2W, ... (each sample exactly once overall)."""
    return torch.arange(ctx.rank, num_samples, ctx.world_size)


_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from integers (SplitMix64 finaliser applied in sequence).

    Used for independent, reproducible streams: the epoch order (seed, epoch) and the
    per-step randomness (seed, step, rank) of dropout, stochastic sign and augmentation.
    """
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & _MASK64)) & _MASK64
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state >> 1
