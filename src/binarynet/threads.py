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
  (``os.sched_getaffinity``) that other work does not keep busy right now, at least one; when
  none is free, a job of large operations beside no more runnable threads than cores takes one
  per core.

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


# Multiply-adds from which an operation counts as large (a few milliseconds of one core's
# work): the 3x512 MLP's layers at batch 100 (26 M) trained faster on 2 threads than on 1 beside
# two busy loops on 2 cores, the 3x256 one's (6.5 M) slower (results/contention.log).
LARGE_OP_MACS = 16e6


def running_others(stat_text: str | None = None) -> int:
    """Threads of other work runnable right now: ``procs_running`` of ``/proc/stat`` less the
    one reading it; 0 where it cannot be read."""
    try:
        if stat_text is None:
            with open("/proc/stat") as f:
                stat_text = f.read()
        for line in stat_text.splitlines():
            if line.startswith("procs_running "):
                return max(0, int(line.split()[1]) - 1)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def default_threads(cpus: int | None = None, busy: float | None = None,
                    processes: int | None = None, op_macs: float = 0.0,
                    others: int | None = None) -> int:
    """Threads for torch (or the engine): this process's share of the usable cores that other
    work leaves free, >= 1; when other work keeps every core busy, a job of large operations
    takes its share of all usable cores as long as that work has no more runnable threads than
    there are cores.

    ``cpus``: usable cores (default: :func:`usable_cpus`); ``busy``: core equivalents busy with
    other work (default: :func:`busy_cpus`, a 0.1 s sample); ``processes``: processes of this job
    sharing the machine (default: torchrun's ``LOCAL_WORLD_SIZE``, else 1); ``op_macs``: the
    multiply-adds of the job's typical operation, e.g. a layer over one batch (0: not known);
    ``others``: runnable threads of other work (default: :func:`running_others`).

    A core counts as taken when it is more than half busy: threads of small operations would
    wait at every parallel region for one that shares a busy core and is descheduled. When no
    core is free, the one thread that rule leaves gets a fair share of a busy core; an operation
    of ``LARGE_OP_MACS`` or more lasts long enough for the scheduler to even out the threads'
    turns within it, so there a thread per core gets a fair share of each (beside two busy loops
    on 2 cores the 3x1024 MLP trained 1.2-1.4x faster on 2 threads than on 1; beside one, with a
    core free, 2 threads were no faster). With more runnable threads of others than cores, turns
    come too seldom for that (beside six busy loops, 2 threads were slower), and one thread it is.
    """
    cpus = len(usable_cpus()) if cpus is None else cpus
    busy = busy_cpus() if busy is None else busy
    if processes is None:
        local = os.environ.get("LOCAL_WORLD_SIZE", "1")
        processes = int(local) if local.isdigit() and int(local) > 0 else 1
    free = cpus - int(busy + 0.5)
    if (free < 1 and op_macs >= LARGE_OP_MACS
            and (running_others() if others is None else others) <= cpus):
        return max(1, cpus // processes)
    return max(1, min(cpus, free) // processes)
