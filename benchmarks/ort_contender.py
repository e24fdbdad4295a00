"""ONNX Runtime as a contender of the engine (``bench_int8.py``): sessions that do not spin,
int8 quantization (dynamic, or static QDQ with calibration), and peak memory of a session in a
fresh process (run this file: ``python ort_contender.py ort-memory MODEL BATCH THREADS C H W``).

Torch-free, so the memory child holds only what onnxruntime and numpy need. Why the options
are as they are: :mod:`contenders`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np


def ort_session(path: str, threads: int):
    """An ORT CPU session on ``threads`` intra-op threads whose idle threads sleep."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3  # warnings about unused initializers etc. are noise here
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def ort_run(session):
    """``f(x) -> logits`` of an ORT session."""
    return lambda x: session.run(None, {"x": x})[0]


class _Batches:
    """ORT's CalibrationDataReader protocol over a list of float32 batches."""

    def __init__(self, batches):
        self._it = iter(batches)

    def get_next(self):
        batch = next(self._it, None)
        return None if batch is None else {"x": batch}


def quantize_ort(fp32_path: str, int8_path: str, calibration=None) -> None:
    """ORT int8 of an fp32 ONNX file: dynamic without ``calibration`` (MLPs), else static QDQ
    calibrated on ``calibration`` (a list of float32 input batches)."""
    from onnxruntime import quantization as q

    # ORT's recommended pre-processing first (shape inference, graph optimisation such as
    # folding batch norms into the convolutions before them)
    prepared = int8_path + ".pre.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q.quant_pre_process(fp32_path, prepared)
        try:
            if calibration is None:
                q.quantize_dynamic(prepared, int8_path, weight_type=q.QuantType.QInt8)
            else:
                q.quantize_static(prepared, int8_path, _Batches(calibration),
                                  quant_format=q.QuantFormat.QDQ,
                                  activation_type=q.QuantType.QUInt8,
                                  weight_type=q.QuantType.QInt8)
        finally:
            os.remove(prepared)


def ort_peak_memory(path: str, input_shape, batch: int, threads: int) -> dict:
    """Peak RSS of a fresh process that opens an ORT session on ``path`` and runs one batch of
    float32 input: ``{"rss_peak_kib", "rss_after_imports_kib"}`` (as
    :func:`binarynet.speed.peak_memory`)."""
    args = [sys.executable, os.path.abspath(__file__), "ort-memory", os.fspath(path), str(batch),
            str(threads), *map(str, input_shape)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"ORT memory measurement failed: {last}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _ort_memory_child(path: str, batch: int, threads: int, shape) -> dict:
    from binarynet._memory_probe import high_water_kib

    base = high_water_kib()
    run = ort_run(ort_session(path, threads))
    run(np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32))
    return {"rss_peak_kib": high_water_kib(), "rss_after_imports_kib": base}


if __name__ == "__main__" and sys.argv[1:2] == ["ort-memory"]:
    import onnxruntime  # noqa: F401  (counted as an import, as torch is for the torch side)

    path_arg, batch_arg, threads_arg, *shape_args = sys.argv[2:]
    print(json.dumps(_ort_memory_child(path_arg, int(batch_arg), int(threads_arg),
                                       tuple(map(int, shape_args)))))
