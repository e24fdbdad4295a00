"""Checkpoints: atomic writes, weights_only loading, clear errors, RNG states."""
import os
import random

import numpy as np
import pytest
import torch

from binarynet.errors import CheckpointError
from binarynet.train import checkpoint as ckpt


def _minimal(**changes):
    state = {
        "format": ckpt.FORMAT_NAME, "format_version": ckpt.FORMAT_VERSION, "binarynet_version": "0.1.0",
        "config": {"recipe": {"name": "x"}}, "model": {"w": torch.arange(6.0).view(2, 3)},
        "optimizer": {"state": {}, "param_groups": []}, "normalization": {"scale": [2 / 255], "offset": [-1.0]},
        "progress": dict.fromkeys(ckpt.PROGRESS_KEYS, 0) | {"epoch": 3, "epoch_position": 200, "global_step": 32},
        "rng": ckpt.capture_rng(),
    }
    state.update(changes)
    return state


def test_round_trip(tmp_path):
    path = tmp_path / "run" / "last.pt"
    ckpt.save(path, _minimal())
    loaded = ckpt.load(path)
    assert torch.equal(loaded["model"]["w"], torch.arange(6.0).view(2, 3))
    assert (loaded["progress"]["epoch"], loaded["progress"]["epoch_position"]) == (3, 200)
    assert os.listdir(tmp_path / "run") == ["last.pt"]  # no temp file left behind


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "last.pt"
    ckpt.save(path, _minimal())
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        ckpt.save(path, _minimal(extra=Unpicklable()))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]


class Payload:
    """A class instance: torch.save pickles it, weights_only loading must refuse it."""

    def __init__(self):
        self.value = 1


def test_arbitrary_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save(_minimal(extra=Payload()), path)
    with pytest.raises(CheckpointError, match="weights_only loading refuses.*Payload"):
        ckpt.load(path)


def test_truncated_and_garbage_files(tmp_path):
    path = tmp_path / "last.pt"
    ckpt.save(path, _minimal())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot be read"):
        ckpt.load(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot be read"):
        ckpt.load(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.load(tmp_path / "missing.pt")


def test_other_format_version_and_foreign_files(tmp_path):
    path = tmp_path / "c.pt"
    ckpt.save(path, _minimal(format_version=ckpt.FORMAT_VERSION + 1, binarynet_version="9.0"))
    with pytest.raises(CheckpointError, match=r"format version 2, this binarynet reads version 1.*9\.0"):
        ckpt.load(path)
    torch.save({"weight": torch.zeros(2)}, path)  # e.g. a bare state_dict
    with pytest.raises(CheckpointError, match="not a binarynet training checkpoint"):
        ckpt.load(path)
    state = _minimal()
    del state["rng"]
    ckpt.save(path, state)
    with pytest.raises(CheckpointError, match="lacks rng"):
        ckpt.load(path)
    state = _minimal()
    del state["progress"]["global_step"]
    ckpt.save(path, state)
    with pytest.raises(CheckpointError, match="lacks progress.global_step"):
        ckpt.load(path)


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    torch.manual_seed(5), np.random.seed(6), random.seed(7)
    np.random.normal()  # leaves a cached Gaussian in numpy's state
    path = tmp_path / "c.pt"
    ckpt.save(path, _minimal(rng=ckpt.capture_rng()))
    expected = (torch.rand(4), np.random.normal(size=3), np.random.normal(), random.random(), random.gauss(0, 1))
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    ckpt.restore_rng(ckpt.load(path)["rng"])
    got = (torch.rand(4), np.random.normal(size=3), np.random.normal(), random.random(), random.gauss(0, 1))
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
    assert expected[2:] == got[2:]


def test_invalid_rng_state_is_a_checkpoint_error():
    with pytest.raises(CheckpointError, match="random-generator state"):
        ckpt.restore_rng({"torch": torch.zeros(3, dtype=torch.uint8)})
