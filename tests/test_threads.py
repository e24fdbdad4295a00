"""binarynet.threads: the passive OpenMP wait policy before torch loads, and the thread count."""
import os
import subprocess
import sys

import pytest

from binarynet import threads

# Prints what libgomp (torch's OpenMP) actually read; GOMP_SPINCOUNT 0 means idle threads sleep.
SHOW_OPENMP = "{prelude}; import torch; torch.ones(8).sum()"


def openmp_settings(prelude: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["OMP_DISPLAY_ENV"] = "VERBOSE"
    done = subprocess.run([sys.executable, "-c", SHOW_OPENMP.format(prelude=prelude)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_passive_policy_before_torch_reaches_openmp():
    default = openmp_settings("pass")
    if "GOMP_SPINCOUNT" not in default:
        pytest.skip("torch does not use libgomp here")
    assert "GOMP_SPINCOUNT = '0'" not in default  # OpenMP spins unless told otherwise
    chosen = openmp_settings("from binarynet import threads; assert threads.set_passive_wait_policy()")
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in chosen and "GOMP_SPINCOUNT = '0'" in chosen


def test_a_users_policy_is_kept_and_too_late_is_refused():
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert not threads.set_passive_wait_policy(env) and env == {"OMP_WAIT_POLICY": "ACTIVE"}
    import torch  # noqa: F401  (once torch is loaded, OpenMP has read its settings)
    env = {}
    assert not threads.set_passive_wait_policy(env) and env == {}


@pytest.mark.parametrize("cpus, busy, expected", [(2, 0.0, 2), (2, 0.4, 2), (2, 1.0, 1), (2, 2.0, 1),
                                                  (2, 7.0, 1), (8, 2.6, 5), (1, 0.0, 1)])
def test_default_threads_leave_the_cores_others_use(cpus, busy, expected):
    assert threads.default_threads(cpus=cpus, busy=busy) == expected


@pytest.mark.parametrize("op_macs, busy, others, expected", [
    (105e6, 2.0, 2, 2),   # 3x1024 MLP layers beside two busy loops: a thread per core
    (105e6, 2.0, 6, 1),   # beside six: the free cores (none, so one thread)
    (105e6, 1.0, 1, 1),   # beside one: the free core
    (6.5e6, 2.0, 2, 1),   # small layers (3x256): the free cores
    (threads.LARGE_OP_MACS, 1.6, 2, 2),
    (threads.LARGE_OP_MACS - 1, 1.6, 2, 1),
    (0.0, 0.0, 9, 2),     # unknown size on a quiet machine: every core
])
def test_large_operations_take_a_thread_per_core_when_none_is_free(op_macs, busy, others,
                                                                     expected):
    assert threads.default_threads(cpus=2, busy=busy, processes=1, op_macs=op_macs,
                                   others=others) == expected


def test_large_operations_of_torchrun_processes_share_the_cores():
    assert threads.default_threads(cpus=8, busy=8.0, processes=2, op_macs=1e9, others=4) == 4


def test_running_others_reads_procs_running():
    assert threads.running_others("cpu  1 2 3 4\nprocs_running 3\nprocs_blocked 0\n") == 2
    assert threads.running_others("procs_running 1\n") == 0
    assert threads.running_others("cpu  1 2 3 4\n") == 0
    assert 0 <= threads.running_others()


def test_torchrun_processes_share_the_cores(monkeypatch):
    assert threads.default_threads(cpus=8, busy=0.0, processes=2) == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    assert threads.default_threads(cpus=8, busy=1.0) == 2
    assert threads.default_threads(cpus=2, busy=0.0) == 1


def test_default_threads_measures_this_machine():
    assert 1 <= threads.default_threads() <= len(threads.usable_cpus())
    assert 0.0 <= threads.busy_cpus(interval=0.02) <= len(threads.usable_cpus()) + 0.5


def test_parse_cpu_times():
    text = ("cpu  10 0 5 100 3 0 0 0 0 0\n"
            "cpu0 4 1 2 50 1 0 1 0 0 0\n"
            "cpu1 6 0 3 50 2 0 0 1 0 0\n"
            "intr 1 2 3\n")
    assert threads.parse_cpu_times(text) == {0: (8, 59), 1: (10, 62)}
