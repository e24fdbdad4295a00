"""Bounded fuzzing of the packed model reader (the generator of scripts/fuzz_models.py).

A few thousand mutated files from small exported models: each must be refused with
ModelFileError, or load unchanged (a non-semantic edit) and predict the same, or, when the
mutation recomputed the hashes, load as a valid model whose compiled kernels agree with the numpy
reference. Longer runs, with crashes and hangs caught in subprocesses: ``scripts/fuzz_models.py``.
"""
import collections
import copy
import struct

import numpy as np
import pytest

from binarynet import engine
from binarynet.errors import ModelFileError

CASES = 3000
SEED = 20261130


@pytest.fixture(scope="module")
def fuzz(load_script):
    return load_script("scripts/fuzz_models.py")


@pytest.fixture(scope="module")
def bases(fuzz):
    return fuzz.base_models()


def test_mutated_model_files_are_refused_or_load_unchanged(fuzz, bases, tmp_path):
    counts = fuzz.run_cases(bases, SEED, range(CASES), tmp_path)
    assert {key: n for key, n in counts.items() if ": error" in key} == {}
    assert sum(counts.values()) == CASES
    # the generator reaches every outcome, so the oracle above is exercised each way
    for key, at_least in (("plain: refused", 1000), ("plain: loaded unchanged", 10),
                          ("rehashed: refused", 200), ("rehashed: loaded valid", 100)):
        assert sum(n for k, n in counts.items() if k.startswith(key)) >= at_least, counts
    # refusals are told apart by the check that made them (the report's "errors by type")
    assert counts["plain: refused (data checksum)"] > 0 and counts["plain: refused (header JSON)"] > 0


def test_the_oracle_catches_a_silently_changed_file(fuzz, bases, tmp_path):
    """Swapped offsets of two same-size tensors with the table hash recomputed load (the file
    is valid) but are a different model: judged as an error in "plain" mode."""
    originals = fuzz.prepared(bases)
    blob, original, x = originals[3]  # tiny_dense: fc.scale and fc.shift are both 3 x F64
    header, data = fuzz.split(blob)
    header["fc.scale"]["data_offsets"], header["fc.shift"]["data_offsets"] = (
        header["fc.shift"]["data_offsets"], header["fc.scale"]["data_offsets"])
    unhashed = fuzz.join(header, data)
    fuzz.rehash(header, data)
    rehashed = fuzz.join(header, data)
    assert fuzz.judge("plain", unhashed, original, x, 0, 0, tmp_path) == "refused (table checksum)"
    assert fuzz.judge("plain", rehashed, original, x, 0, 0, tmp_path) == \
        "error: changed file accepted silently"
    assert fuzz.judge("rehashed", rehashed, original, x, 0, 0, tmp_path) == "loaded valid"
    # and a header the writer could not produce: 100k-deep nesting, as raw JSON text
    header["fc.scale"]["shape"] = "@@NEST@@"
    deep = fuzz.join(header, data, {"@@NEST@@": "[" * 100_000 + "]" * 100_000})
    assert struct.unpack_from("<Q", deep)[0] > 200_000
    assert fuzz.judge("plain", deep, original, x, 0, 0, tmp_path) == "refused (header nesting)"


def test_script_reports_counts_crashes_and_hangs(fuzz, monkeypatch, capsys):
    """Batches run in subprocesses: a planted crash and hang are reported with their case and
    the batch goes on past them."""
    monkeypatch.setenv(fuzz.SELFTEST_ENV, "crash:3,hang:6")
    assert fuzz.main(["--files", "10", "--batch", "10", "--timeout", "4", "--seed", "1"]) == 1
    out = capsys.readouterr().out
    assert "fuzzed 10 files (seed 1" in out
    assert "case 3 (--case 3 --seed 1): crash (signal 11)" in out
    assert "case 6 (--case 6 --seed 1): hang (over 4 s)" in out
    outcomes = out.split("refusals by the check")[0]  # the per-outcome lines, before the breakdown
    counted = sum(int(line.split()[0]) for line in outcomes.splitlines()
                  if line.strip() and line.split()[0].isdigit())
    assert counted == 10 and "errors: 2" in out


def test_edge_edits_reach_every_check_of_the_dag(fuzz):
    """The format-3 bases are DAGs; the generator's edits of their edges (inputs, names) are
    refused by each of the DAG's checks, or load as another valid DAG."""
    graph, tensors = fuzz.random_dag(3, uint8=False)
    engine.PackedModel(graph, tensors)  # the base itself is valid
    outcomes = collections.Counter()
    for case in range(400):
        rng = np.random.default_rng([SEED, case])
        edited = copy.deepcopy(graph)
        fuzz.edit_edges(rng, edited["ops"], edited["ops"][int(rng.integers(len(edited["ops"])))])
        try:
            engine.PackedModel(edited, tensors)
            outcomes["valid"] += 1
        except ModelFileError as err:
            phrase = next((p for p in DAG_CHECKS if p in str(err)), str(err))
            outcomes[phrase] += 1
    assert set(DAG_CHECKS) | {"valid"} <= set(outcomes), outcomes


DAG_CHECKS = ("is a forward reference", "is ambiguous", "names no earlier op",
              "must be a string other than 'input'", "is not read by any later op",
              "values, takes", "takes float", "takes bits")
