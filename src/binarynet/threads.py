"""Thread counts and the OpenMP wait policy for machines that other work shares.

torch runs its CPU kernels on an OpenMP team. By default libgomp's idle threads *spin* at the
end of each parallel region, waiting for the next one; when another process holds a core, the
spinning threads and the thread doing real work take turns on it, and every parallel region
waits for a descheduled thread. Training then collapses (6-8x slower on a shared 2-core machine,
issue 10). Two remedies, both here:

- :func:`set_passive_wait_policy`: ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep at once).
  OpenMP reads it when torch loads it, so this must run before torch is first imported: the
  command line and other entry points call it first thing.
- :func:`default_threads`: as many threads as there are cores this process may use
  (``os.sched_getaffinity``) that other work does not keep busy right now, at least one.

Pure Python, no torch (it runs before torch is imported, and the engine may use it too).
"""
from __future__ import annotations

import os
import sys
import time

WAIT_POLICY = "OMP_WAIT_POLICY"


def set_passive_wait_policy(environ=None) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a policy; True if this call set it.

    Has no effect on OpenMP once torch is imported (it read the variable when it loaded), so it
    returns False then too and leaves the environment alone.
    """
    environ = os.environ if environ is None else environ
    if WAIT_POLICY in environ or "torch" in sys.modules:
        return False
    environ[WAIT_POLICY] = "PASSIVE"
    return True


def usable_cpus() -> list:
    """The CPU numbers this process may run on (its affinity mask; all CPUs off Linux)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return list(range(os.cpu_count() or 1))


def parse_cpu_times(stat_text: str) -> dict:
    """``{cpu number: (busy jiffies, total jiffies)}`` from the text of ``/proc/stat``.

    Idle time is the ``idle`` and ``iowait`` columns; busy is everything else except guest time,
    which ``user`` and ``nice`` already include.
    """
    times = {}
    for line in stat_text.splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or not name[3:].isdigit():
            continue
        values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        total = sum(values)
        times[int(name[3:])] = (total - idle, total)
    return times


def busy_cpus(cpus=None, interval: float = 0.1) -> float:
    """How many of ``cpus`` (default :func:`usable_cpus`) other work keeps busy, in core
    equivalents, sampled over ``interval`` seconds (this process sleeps meanwhile, so the figure
    is the others' load); 0.0 where ``/proc/stat`` cannot be read."""
    cpus = usable_cpus() if cpus is None else list(cpus)
    try:
        with open("/proc/stat") as f:
            before = parse_cpu_times(f.read())
        time.sleep(interval)
        with open("/proc/stat") as f:
            after = parse_cpu_times(f.read())
    except (OSError, ValueError, IndexError):
        return 0.0
    busy = 0.0
    for cpu in cpus:
        if cpu in before and cpu in after:
            ticks = after[cpu][1] - before[cpu][1]
            if ticks > 0:
                busy += (after[cpu][0] - before[cpu][0]) / ticks
    return busy


def default_threads(cpus: int | None = None, busy: float | None = None, processes: int | None = None) -> int:
    """Threads for torch (or the engine): this process's share of the usable cores that other
    work leaves free, >= 1.

    ``cpus``: usable cores (default: :func:`usable_cpus`); ``busy``: core equivalents busy with
    other work (default: :func:`busy_cpus`, a 0.1 s sample); ``processes``: processes of this job
    sharing the machine (default: torchrun's ``LOCAL_WORLD_SIZE``, else 1). A core counts as
    taken when it is more than half busy: one thread per core that other work already uses
    would wait for it at every parallel region.
    """
    cpus = len(usable_cpus()) if cpus is None else cpus
    busy = busy_cpus() if busy is None else busy
    if processes is None:
        local = os.environ.get("LOCAL_WORLD_SIZE", "1")
        processes = int(local) if local.isdigit() and int(local) > 0 else 1
    free = cpus - int(busy + 0.5)
    return max(1, min(cpus, free) // processes)
