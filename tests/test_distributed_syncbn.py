"""Synchronised batch norm under DDP (2 Gloo processes on 127.0.0.1) equals one process on the
global batch: outputs, every parameter gradient and the running statistics, for standard and
shift-based BN, dense and convolutional."""
import datetime
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import binarynet.nn as bnn
from binarynet import losses
from binarynet.train import convert_sync_batchnorm
from binarynet.train.distributed import Context, barrier
from binarynet.train.syncbn import SyncBatchNorm1d, SyncShiftBatchNorm2d

WORLD = 2
GLOBAL_BATCH = 8
CASES = ("dense-standard", "dense-shift", "conv-standard", "conv-shift")


def build(case: str) -> nn.Module:
    torch.manual_seed(0)
    kind = case.split("-")[1]
    if case.startswith("dense"):
        bn = nn.BatchNorm1d(16) if kind == "standard" else bnn.ShiftBatchNorm1d(16)
        model = nn.Sequential(bnn.BinaryLinear(12, 16), bn, bnn.Sign(), bnn.BinaryLinear(16, 4), nn.BatchNorm1d(4))
    else:
        bn = nn.BatchNorm2d(4) if kind == "standard" else bnn.ShiftBatchNorm2d(4)
        model = nn.Sequential(bnn.BinaryConv2d(2, 4, 3, padding=1), bn, bnn.Sign(), nn.Flatten(),
                              bnn.BinaryLinear(4 * 5 * 5, 4), nn.BatchNorm1d(4))
    with torch.no_grad():  # non-trivial affine parameters and running statistics
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, bnn.ShiftBatchNorm1d, bnn.ShiftBatchNorm2d)):
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)
    return model


def batch(case: str):
    g = torch.Generator().manual_seed(1)
    shape = (GLOBAL_BATCH, 12) if case.startswith("dense") else (GLOBAL_BATCH, 2, 5, 5)
    return torch.randn(shape, generator=g) * 3 + 1, torch.randint(0, 4, (GLOBAL_BATCH,), generator=g)


def step(model: nn.Module, x, y) -> dict:
    model.train()
    out = model(x)
    losses.squared_hinge(out, y).backward()
    inner = model.module if hasattr(model, "module") else model
    return {"out": out.detach(), "grads": {n: p.grad.clone() for n, p in inner.named_parameters()},
            "buffers": {n: b.clone() for n, b in inner.named_buffers()}}


def worker(rank: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        results = {}
        for case in CASES:
            model = nn.parallel.DistributedDataParallel(convert_sync_batchnorm(build(case)))
            x, y = batch(case)
            share = slice(rank * GLOBAL_BATCH // WORLD, (rank + 1) * GLOBAL_BATCH // WORLD)
            results[case] = step(model, x[share], y[share])
        torch.save(results, os.path.join(folder, f"rank{rank}.pt"))
        barrier(Context(rank=rank, world_size=WORLD))  # lets Gloo's workers finish before exit
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("syncbn")
    mp.spawn(worker, args=(free_port(), str(folder)), nprocs=WORLD, join=True)
    return [torch.load(folder / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("case", CASES)
def test_ddp_sync_batchnorm_equals_one_process_on_the_global_batch(case, ranks):
    x, y = batch(case)
    single = step(build(case), x, y)
    out = torch.cat([r[case]["out"] for r in ranks])
    torch.testing.assert_close(out, single["out"], rtol=1e-5, atol=1e-5)
    for rank in ranks:  # DDP leaves the averaged gradient on every rank
        assert rank[case]["grads"].keys() == single["grads"].keys()
        for name, grad in single["grads"].items():
            # atol covers the biases feeding a standard BN, whose exact gradient is 0 (round-off ~1e-9)
            torch.testing.assert_close(rank[case]["grads"][name], grad, rtol=1e-5, atol=1e-7, msg=name)
        for name, buf in single["buffers"].items():
            torch.testing.assert_close(rank[case]["buffers"][name], buf, rtol=1e-5, atol=1e-6, msg=name)


def test_gradients_are_not_trivially_equal(ranks):
    # Guards the test above: a per-rank (unsynchronised) BN would give other statistics.
    x, y = batch("dense-standard")
    model = build("dense-standard")
    half = step(model, x[: GLOBAL_BATCH // 2], y[: GLOBAL_BATCH // 2])
    assert not torch.allclose(half["buffers"]["1.running_var"], ranks[0]["dense-standard"]["buffers"]["1.running_var"])


def test_conversion_keeps_state_and_single_process_behaviour():
    model = build("conv-shift")
    model[1].running_mean.fill_(0.25)
    converted = convert_sync_batchnorm(build("conv-shift"))
    converted.load_state_dict(model.state_dict())
    assert isinstance(converted[1], SyncShiftBatchNorm2d) and isinstance(converted[5], SyncBatchNorm1d)
    assert converted.state_dict().keys() == model.state_dict().keys()
    x, y = batch("conv-shift")
    a, b = step(model, x, y), step(converted, x, y)  # no process group: exactly the plain layers
    assert torch.equal(a["out"], b["out"])
    assert all(torch.equal(a["grads"][n], b["grads"][n]) for n in a["grads"])
    assert all(torch.equal(a["buffers"][n], b["buffers"][n]) for n in a["buffers"])
