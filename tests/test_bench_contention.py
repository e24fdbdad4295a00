"""benchmarks/bench_contention.py: the worker's thread policies and the busy loops' clean-up."""
import pytest


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/bench_contention.py")


@pytest.mark.parametrize("policy,threads", [("passive:1", 1), ("passive:2", 2)])
def test_fixed_thread_policies_are_passive_with_the_threads_asked(bench, policy, threads):
    result = bench.timed_run(policy, steps=2, hidden=16, timeout=120, spincount=1000)
    assert result["threads"] == threads and result["wait_policy"] == "PASSIVE"
    assert 0 < result["seconds"] < 60


def test_old_policy_keeps_openmps_default(bench, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # the caller's own setting must not leak in
    result = bench.timed_run("old", steps=2, hidden=16, timeout=120)
    assert result["wait_policy"] == "(default)"


def test_busy_loops_are_stopped_even_when_the_run_fails(bench, monkeypatch):
    started = []
    real_popen = bench.subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    def fail():
        raise RuntimeError("run failed")

    monkeypatch.setattr(bench.subprocess, "Popen", popen)
    with pytest.raises(RuntimeError, match="run failed"):
        bench.with_hogs(2, 30, fail)
    assert len(started) == 2 and all(hog.poll() is not None for hog in started)
