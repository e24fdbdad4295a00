"""Training beside busy processes: the old thread policy vs binarynet.threads (issue 10, item 2).

One short training run (``--steps`` steps of a small binary MLP on random data, batch 100, the
library's Adam and squared hinge) is timed in a fresh process for each policy:

- old: OpenMP's default wait policy (idle threads spin) and torch's default thread count (one
  per core);
- new: ``binarynet.threads.set_passive_wait_policy()`` before torch is imported, and
  ``binarynet.threads.default_threads()`` threads for ops of a hidden layer's size at batch 100
  (the cores other work leaves free, or every core for large layers beside no more busy threads
  than cores).

first on the machine as it is ("quiet"), then beside ``--hogs`` busy-loop processes that this
script starts and always stops (each also ends by itself after ``--hog-seconds``). It prints
seconds per run, the loaded / quiet ratio of each policy, the load average and the CPU.

``--matrix``: instead, the passive policy with 1 and with 2 threads, quiet and beside 1, 2 and 6
busy loops, each cell the median of ``--repeats`` runs, against the best quiet time and against
the fair-share floor: one thread's quiet time divided by the cores' worth the threads get when
every runnable thread has an equal share of a core (perfect scaling). ``--spincount N`` adds
``GOMP_SPINCOUNT=N`` (libgomp: spin N rounds, about N/100 microseconds, before sleeping).

    python benchmarks/bench_contention.py [--steps 200] [--hogs 2]
    python benchmarks/bench_contention.py --matrix [--hidden 1024 --steps 60] [--spincount N]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HOG = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"

# One timed run in a fresh process: the policy must be in place before torch is imported.
WORKER = """
import json, os, sys
policy, steps, hidden = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
from binarynet import threads, timing
if policy == "new":
    threads.set_passive_wait_policy()
    count = threads.default_threads(op_macs=hidden * hidden * 100)  # a hidden layer's batch
elif policy.startswith("passive:"):  # the passive policy with a fixed thread count (--matrix)
    threads.set_passive_wait_policy()
    count = int(policy.split(":")[1])
import torch
import binarynet as bn
if policy != "old":
    torch.set_num_threads(count)
torch.manual_seed(0)
model = bn.models.mnist_mlp(hidden=hidden, depth=3, dropout_in=0.0, dropout_hidden=0.0)
optimizer = bn.optim.Adam(bn.optim.param_groups(model, 3e-3))
x, y = torch.rand(100, 1, 28, 28) * 2 - 1, torch.randint(0, 10, (100,))
def step():
    optimizer.zero_grad(set_to_none=True)
    bn.losses.squared_hinge(model(x), y).backward()
    optimizer.step()
for _ in range(5):
    step()
def run():
    for _ in range(steps):
        step()
seconds = timing.seconds_per_call(run, min_seconds=0.0)  # one block of `steps` steps
print(json.dumps({"seconds": seconds, "threads": torch.get_num_threads(),
                  "wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)")}))
"""


def timed_run(policy: str, steps: int, hidden: int, timeout: float, spincount=None) -> dict:
    """One worker run of ``policy`` ("old", "new" or "passive:THREADS"); its JSON result."""
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)  # every policy starts from OpenMP's default
    env.pop("GOMP_SPINCOUNT", None)
    if spincount is not None:
        env["GOMP_SPINCOUNT"] = str(spincount)
    try:
        done = subprocess.run([sys.executable, "-c", WORKER, policy, str(steps), str(hidden)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:  # a collapse this bad is a result too
        return {"seconds": float("inf"), "threads": "?", "wait_policy": f"{policy}; timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        raise SystemExit(f"worker ({policy}) failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def with_hogs(count: int, seconds: float, fn):
    """``fn()`` while ``count`` busy-loop processes run; they are stopped whatever happens."""
    hogs = [subprocess.Popen([sys.executable, "-c", HOG.format(seconds=seconds)]) for _ in range(count)]
    try:
        time.sleep(0.5)  # let them reach their loops
        return fn()
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="timed training steps per run")
    parser.add_argument("--hidden", type=int, default=256, help="width of the MLP's 3 hidden layers")
    parser.add_argument("--hogs", type=int, default=2, help="busy-loop processes beside the loaded runs")
    parser.add_argument("--hog-seconds", type=float, default=300.0, help="a busy loop ends by itself after this")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one run may take")
    parser.add_argument("--matrix", action="store_true",
                        help="passive policy, 1 and 2 threads, beside 0, 1, 2 and 6 busy loops")
    parser.add_argument("--spincount", type=int, help="with --matrix: also set GOMP_SPINCOUNT")
    parser.add_argument("--repeats", type=int, default=3, help="with --matrix: runs per cell (median)")
    args = parser.parse_args()

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    from binarynet.timing import cpu_description

    print(f"{cpu_description()}; {args.steps} steps of a 3x{args.hidden} binary MLP, batch 100")
    if args.matrix:
        return matrix(args)
    results = {}
    for load in ("quiet", "loaded"):
        for policy in ("old", "new"):
            load_avg = os.getloadavg()[0]
            run = lambda: timed_run(policy, args.steps, args.hidden, args.timeout)  # noqa: E731
            result = run() if load == "quiet" else with_hogs(args.hogs, args.hog_seconds, run)
            results[load, policy] = result
            print(f"{load:>6} {policy}: {result['seconds']:7.2f} s  ({result['threads']} threads, "
                  f"OMP_WAIT_POLICY={result['wait_policy']}, load average {load_avg:.2f} before)", flush=True)
    for policy in ("old", "new"):
        ratio = results["loaded", policy]["seconds"] / results["quiet", policy]["seconds"]
        print(f"{policy}: beside {args.hogs} busy loops {_times(ratio)} the quiet time")
    print(f"loaded, old / new: {_times(results['loaded', 'old']['seconds'] / results['loaded', 'new']['seconds'])}")


def matrix(args) -> None:
    """--matrix: the passive policy's thread counts beside 0, 1, 2 and 6 busy loops, each cell the
    median of --repeats runs (a loaded machine's timings vary from run to run)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    spin = "" if args.spincount is None else f", GOMP_SPINCOUNT={args.spincount}"

    def run(n, hogs):
        once = lambda: timed_run(f"passive:{n}", args.steps, args.hidden, args.timeout,  # noqa: E731
                                 args.spincount)["seconds"]
        return statistics.median(once() if hogs == 0 else with_hogs(hogs, args.hog_seconds, once)
                                 for _ in range(args.repeats))

    quiet = {n: run(n, 0) for n in (1, 2)}
    best = min(quiet.values())
    print(f"OMP_WAIT_POLICY=PASSIVE{spin}, median of {args.repeats} runs; quiet: 1 thread "
          f"{quiet[1]:.2f} s, 2 threads {quiet[2]:.2f} s", flush=True)
    for hogs in (1, 2, 6):
        for n in (1, 2):
            seconds = run(n, hogs)
            # the floor: one thread's quiet time spread over the cores' worth that n threads get
            # when every runnable thread has an equal share of a core (perfect scaling)
            floor = quiet[1] / (n * min(1.0, cores / (hogs + n)))
            print(f"  beside {hogs} busy loop(s), {n} thread(s): {seconds:6.2f} s = "
                  f"{_times(seconds / best)} the best quiet time, {_times(seconds / floor)} the "
                  f"fair-share floor", flush=True)


def _times(ratio: float) -> str:
    return f"{ratio:.2f}x" if ratio != float("inf") else "more than --timeout allows (run timed out)"


if __name__ == "__main__":
    main()
