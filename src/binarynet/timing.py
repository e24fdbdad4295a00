"""Timing for benchmarks, ``binarynet bench`` and the report: warm-up, interleaved rounds,
medians; and the CPU that a figure was measured on.

One sample is the mean seconds per call over a block of calls at least ``min_seconds`` long (so
that clock resolution and per-call jitter vanish); a measurement is the median of ``repeats``
samples. Several contenders are measured *interleaved* (round r times every contender once) so
that load from other work on the machine falls on all of them alike, and their ratio stays
meaningful on a shared machine.

Pure Python (no numpy, no torch): the engine's benchmarks use it too.
"""
from __future__ import annotations

import os
import platform
import statistics
import time


def seconds_per_call(fn, min_seconds: float = 0.02, sync=None) -> float:
    """Mean seconds per call of ``fn()`` over a block of calls lasting at least ``min_seconds``
    (at least one call; a block too short is timed again twice as long). ``sync``: called at the
    two ends of a block only (e.g. ``torch.cuda.synchronize`` for asynchronous devices), so the
    calls inside a block run as they would in a program that never waits."""
    calls = 1
    while True:
        if sync is not None:
            sync()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        if sync is not None:
            sync()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls
        calls *= 2


def interleaved_samples(contenders: dict, repeats: int = 15, min_seconds: float = 0.02,
                        warmup: int = 1, sync=None) -> dict:
    """``{name: [seconds per call] * repeats}`` for each ``name: fn`` in ``contenders``.

    Each contender is first called ``warmup`` times (thread pools, page faults, lazy
    compilation); then ``repeats`` rounds each take one :func:`seconds_per_call` sample of every
    contender in turn.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    if sync is not None:
        sync()
    samples = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            samples[name].append(seconds_per_call(fn, min_seconds, sync))
    return samples


def median_seconds(contenders: dict, repeats: int = 15, min_seconds: float = 0.02,
                   warmup: int = 1, sync=None) -> dict:
    """``{name: median seconds per call}`` of :func:`interleaved_samples`."""
    samples = interleaved_samples(contenders, repeats, min_seconds, warmup, sync)
    return {name: statistics.median(times) for name, times in samples.items()}


def cpu_description() -> str:
    """The CPU model (with its family and model numbers, which tell CPU generations apart where
    the model name is generic, as on cloud VMs), the clock the kernel reports and the cores this
    process may use, for printing beside every figure, e.g.
    ``AMD EPYC (family 25, model 17) @ 2.60 GHz reported, 2 cores``.

    The reported clock is the nominal one on many VMs; boost clocks can be higher.
    """
    model, mhz, family, number = platform.processor() or platform.machine(), [], None, None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name":
                    model = value
                elif key == "cpu MHz":
                    mhz.append(float(value))
                elif key == "cpu family" and family is None:
                    family = value
                elif key == "model" and number is None:
                    number = value
    except (OSError, ValueError):
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    generation = f" (family {family}, model {number})" if family and number else ""
    clock = f" @ {statistics.median(mhz) / 1000:.2f} GHz reported" if mhz else ""
    return f"{model}{generation}{clock}, {cores} core{'s' if cores != 1 else ''}"
