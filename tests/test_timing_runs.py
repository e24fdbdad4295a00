"""binarynet.timing (the one timer of benchmarks, bench and report) and binarynet.runs (the
run-folder layout)."""
import os
import re

import pytest

from binarynet import runs, timing
from binarynet.errors import CheckpointError


def test_interleaved_samples_warm_up_then_alternate_rounds():
    calls = []
    samples = timing.interleaved_samples({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                         repeats=3, min_seconds=0.0, warmup=2)
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3  # warm-up, then one call each per round
    assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for v in samples.values() for t in v)


def test_seconds_per_call_fills_the_block_and_syncs_at_its_ends():
    events = []
    t = timing.seconds_per_call(lambda: events.append("call"), min_seconds=0.005,
                                sync=lambda: events.append("sync"))
    assert events[0] == "sync" and events[-1] == "sync" and events.count("call") >= 1
    # a sync at the two ends of each block tried (1, 2, 4... calls), never between calls
    pattern = "".join("c" if e == "call" else "s" for e in events)
    assert re.fullmatch(r"(sc+s)+", pattern), pattern
    assert [len(block) for block in re.findall(r"c+", pattern)] == \
        [2 ** i for i in range(len(re.findall(r"c+", pattern)))]
    assert 0 < t <= 0.005 * 2  # a mean per call, not the block


def test_median_seconds_is_the_median_of_the_samples(monkeypatch):
    values = iter([3.0, 1.0, 2.0])
    monkeypatch.setattr(timing, "seconds_per_call", lambda fn, min_seconds, sync: next(values))
    assert timing.median_seconds({"x": lambda: None}, repeats=3, warmup=0) == {"x": 2.0}


def test_repeats_must_be_positive():
    with pytest.raises(ValueError, match="repeats"):
        timing.interleaved_samples({"x": lambda: None}, repeats=0)


def test_cpu_description_names_the_cores_this_process_may_use():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert timing.cpu_description().endswith(f", {cores} core{'s' if cores != 1 else ''}")


def test_checkpoint_path_resolves_run_folders(tmp_path):
    assert runs.checkpoint_path(tmp_path / "x.pt") == str(tmp_path / "x.pt")  # files as given
    (tmp_path / runs.LAST).write_bytes(b"")
    with pytest.raises(CheckpointError, match="without best.pt"):
        runs.checkpoint_path(tmp_path)
    assert runs.checkpoint_path(tmp_path, prefer=(runs.BEST, runs.LAST)) == str(tmp_path / runs.LAST)
    (tmp_path / runs.BEST).write_bytes(b"")
    assert runs.checkpoint_path(tmp_path, prefer=(runs.BEST, runs.LAST)) == str(tmp_path / runs.BEST)
