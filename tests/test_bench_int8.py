"""benchmarks/bench_int8.py and its contenders: the float form computes the model's function
exactly, its ONNX file runs the same in ONNX Runtime, the int8 files are what the method says,
sessions do not spin, and the benchmark prints a full table (or one line for a model export
refuses) on tiny networks. Skipped without onnxruntime (the ``bench`` extra; the ``test`` extra installs it too)."""
import json
import os
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

import binarynet as bn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
import onnx  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import contenders  # noqa: E402
import ort_contender  # noqa: E402


@pytest.fixture
def bench(load_script):
    return load_script("benchmarks/bench_int8.py")


def tiny_quicknet():
    return bn.models.get("quicknet", blocks=(1, 1), widths=(8, 16), num_classes=5).eval()


def tiny_reactnet():
    model = bn.models.get("reactnet18", width=8, blocks=(1, 1, 1, 1), num_classes=5)
    with torch.no_grad():  # nonzero RSign shifts, so a float form that dropped them would differ
        for m in model.modules():
            if isinstance(m, bn.nn.RSign):
                m.shift.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("build", [tiny_quicknet, tiny_reactnet])
def test_float_form_is_the_same_function_and_runs_the_same_in_onnx_runtime(build, tmp_path):
    torch.manual_seed(0)
    model = build()
    net = contenders.float_form(model)
    assert not any(isinstance(m, (bn.nn.Sign, bn.nn.RSign)) for m in net.modules())
    x = torch.randn(3, 3, 32, 32)
    contenders.check_same_function(model, net, x)
    path = str(tmp_path / "net.onnx")
    contenders.export_onnx(net, x, path)
    y_ort = ort_contender.ort_run(ort_contender.ort_session(path, 1))(x.numpy())
    with torch.inference_mode():
        y = model(x).numpy()
    np.testing.assert_allclose(y_ort, y, rtol=1e-4, atol=1e-4 * np.abs(y).max())
    # the dynamic batch axis
    assert ort_contender.ort_run(ort_contender.ort_session(path, 1))(x[:1].numpy()).shape == (1, 5)


def test_float_form_keeps_the_mean_abs_scale_of_the_latent_weight():
    torch.manual_seed(1)
    layer = bn.nn.BinaryConv2d(4, 6, 3, padding=1, input_quantizer="approx_sign", scale="mean_abs")
    model = torch.nn.Sequential(layer, torch.nn.Flatten()).eval()
    x = torch.randn(2, 4, 5, 5)
    contenders.check_same_function(model, contenders.float_form(model), x)


def test_float_form_refuses_a_quantizer_that_is_not_a_sign():
    layer = bn.nn.BinaryLinear(4, 3, input_quantizer=lambda x: x.clamp(-1, 1))
    with pytest.raises(contenders.ContenderError, match="not a sign"):
        contenders.float_form(torch.nn.Sequential(layer))


def test_check_same_function_sees_a_difference():
    a = torch.nn.Linear(3, 2)
    b = contenders.float_form(a)
    with torch.no_grad():
        b.bias += 1e-6
    with pytest.raises(contenders.ContenderError, match="differs"):
        contenders.check_same_function(a, b, torch.randn(2, 3))


def test_ort_sessions_use_the_threads_asked_and_do_not_spin(tmp_path):
    path = str(tmp_path / "lin.onnx")
    contenders.export_onnx(torch.nn.Linear(4, 2).eval(), torch.randn(1, 4), path)
    options = ort_contender.ort_session(path, 3).get_session_options()
    assert options.intra_op_num_threads == 3
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def _op_types(path):
    return {node.op_type for node in onnx.load(path).graph.node}


def test_int8_static_is_qdq_and_dynamic_quantizes_at_run_time(tmp_path):
    torch.manual_seed(0)
    net = contenders.float_form(tiny_quicknet())
    x = torch.randn(2, 3, 32, 32)
    fp32, static = str(tmp_path / "q.onnx"), str(tmp_path / "q8.onnx")
    contenders.export_onnx(net, x, fp32)
    ort_contender.quantize_ort(fp32, static, [x.numpy(), -x.numpy()])
    assert {"QuantizeLinear", "DequantizeLinear"} <= _op_types(static)
    mlp = contenders.float_form(bn.models.get("mnist_mlp", hidden=32, depth=1).eval())
    fp32, dynamic = str(tmp_path / "m.onnx"), str(tmp_path / "m8.onnx")
    contenders.export_onnx(mlp, torch.randn(1, 1, 28, 28), fp32)
    ort_contender.quantize_ort(fp32, dynamic)
    assert "DynamicQuantizeLinear" in _op_types(dynamic)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m8.onnx", "q.onnx", "q8.onnx"]


def test_ort_peak_memory_runs_in_a_fresh_process(tmp_path):
    path = str(tmp_path / "lin.onnx")
    contenders.export_onnx(torch.nn.Flatten().eval(), torch.randn(1, 2, 3), path)
    m = ort_contender.ort_peak_memory(path, (2, 3), 4, 1)
    assert m["rss_peak_kib"] >= m["rss_after_imports_kib"] > 0


def _tiny_workloads(bench):
    def mlp():
        return bench.trained_like(bn.models.get("mnist_mlp", hidden=64, depth=1))

    def convnet():
        return bench.trained_like(bn.models.get("cifar10_vgg", widths=(8, 8, 8), fc=(16,)))

    return {
        "mlp": bench.Workload(mlp, (1, 28, 28), (1, 4), True, None, False,
                              {bench.ORT_INT8: 6.0, bench.TORCH_INT8: 6.0}),
        "convnet": bench.Workload(convnet, (3, 32, 32), (2,), False, None, False,
                                  {bench.ORT_INT8: 4.0, bench.TORCH: 20.0}),
        "zoo": bench.Workload(tiny_quicknet, (3, 32, 32), (1,), False, None, True, {},
                              one_thread_ms=4.0),
    }


def test_tables_for_every_contender_and_one_line_for_a_refused_model(bench, monkeypatch, capsys,
                                                                     tmp_path):
    monkeypatch.setattr(bench, "WORKLOADS", _tiny_workloads(bench))
    monkeypatch.setattr(bench.kernels, "xor_popcount_probe", None, raising=False)
    refuse = bench.BinarynetError
    real_export = bench.export

    def export(model, *a, **kw):  # the zoo model: refused, as export refuses residual graphs today
        if any(isinstance(m, bn.nn.Residual) for m in model.modules()):
            raise refuse("module 'x' (Residual) is not supported")
        return real_export(model, *a, **kw)

    monkeypatch.setattr(bench, "export", export)
    out_json = tmp_path / "int8.json"
    bench.main(["--quick", "--threads", "1", "--networks", "mlp,convnet,zoo", "--no-memory",
                "--json", str(out_json)])
    out = capsys.readouterr().out
    assert out.startswith(f"CPU: {bench.timing.cpu_description()}; 1 thread for every contender")
    assert "onnxruntime " in out and f"torch {torch.__version__}" in out
    assert "peak: not measured" in out
    assert "zoo: skipped, the engine's export refuses it: module 'x' (Residual)" in out
    report = json.loads(out_json.read_text())
    assert report["skipped"] == {"zoo": "export refuses it: module 'x' (Residual) is not supported"}
    assert report["onnxruntime"] and report["torch"] == torch.__version__
    mlp, convnet = report["workloads"]["mlp"], report["workloads"]["convnet"]
    assert set(mlp["seconds"]["4"]) == {"engine", "torch fp32", "ORT fp32", "ORT int8",
                                        "torch int8"}
    assert set(convnet["seconds"]["2"]) == {"engine", "torch fp32", "ORT fp32", "ORT int8"}
    for result in (mlp, convnet):
        n = result["agreement_images"]
        # the engine and ORT fp32 compute torch fp32's function
        assert result["agreement"]["engine"] == result["agreement"]["ORT fp32"] == n
        assert 0 < result["file_bytes"]["engine"] < result["file_bytes"]["ORT int8"]
    assert mlp["binary_macs_per_sample"] == 64 * 10  # the first layer's are not binary
    for name in ("engine", "torch fp32", "ORT fp32", "ORT int8", "torch int8"):
        assert f"\n{name:<11} " in out


def test_a_zoo_network_runs_its_float_form_against_the_engine(bench, monkeypatch, capsys):
    # export cannot pack a residual network yet: a stand-in packed model with the same input
    # shape and classes lets the zoo path (float form as torch fp32, static QDQ) run end to end
    monkeypatch.setattr(bench, "WORKLOADS", {"zoo": _tiny_workloads(bench)["zoo"]})
    stand_in = bench.trained_like(bn.models.get("cifar10_vgg", widths=(8, 8, 8), fc=(16,),
                                                num_classes=5))
    real_export = bench.export
    monkeypatch.setattr(bench, "export", lambda model, *a, **kw: real_export(stand_in, *a, **kw))
    report = bench.main(["--quick", "--threads", "1", "--networks", "zoo", "--no-memory"])
    zoo = report["workloads"]["zoo"]
    assert set(zoo["seconds"][1]) == {"engine", "torch fp32", "ORT fp32", "ORT int8"}
    assert zoo["agreement"]["ORT fp32"] == zoo["agreement_images"]
    assert "one-thread target: engine" in capsys.readouterr().out


def test_binary_macs_are_not_guessed_for_a_graph_the_summary_cannot_count(bench, monkeypatch):
    model = bench.trained_like(bn.models.get("mnist_mlp", hidden=32, depth=2))
    packed = bench.export(model, torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8),
                          input_scale=2 / 255, input_offset=-1.0)
    assert bench.binary_macs(packed) == 32 * 32 + 32 * 10
    real = bench.summarise_packed

    def one_op_uncounted(p, bits):  # as for an op kind the summary does not know
        s = real(p, bits)
        s.layers[1].binary_macs = 0
        return s

    monkeypatch.setattr(bench, "summarise_packed", one_op_uncounted)
    assert bench.binary_macs(packed) is None


def test_percent_of_peak_uses_the_probe(bench, monkeypatch, capsys):
    calls = []

    def probe(iterations, threads):
        calls.append((iterations, threads))
        return 1000 * iterations

    monkeypatch.setattr(bench.kernels, "xor_popcount_probe", probe, raising=False)
    assert bench.popcount_peak(2, 1) > 0
    assert {t for _, t in calls} == {2}
    monkeypatch.setattr(bench.kernels, "xor_popcount_probe", None, raising=False)
    assert bench.popcount_peak(2, 1) is None


def test_memory_of_the_engine_and_ort_in_fresh_processes(bench, tmp_path):
    model = bench.trained_like(bn.models.get("mnist_mlp", hidden=32, depth=1))
    packed = bench.export(model, torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8),
                          input_scale=2 / 255, input_offset=-1.0)
    packed_path, onnx_path = str(tmp_path / "m.bnn"), str(tmp_path / "m.onnx")
    packed.save(packed_path)
    contenders.export_onnx(contenders.float_form(bench.to_torch(packed)),
                           torch.randn(1, 1, 28, 28), onnx_path)
    # zoo=True: the torch side is not run in a child (the zoo's float form is not the file's)
    memory = bench.memory(packed_path, packed, {bench.ORT: onnx_path}, True, 2, 1)
    assert set(memory) == {bench.ENGINE, bench.ORT}
    for m in memory.values():
        assert m["rss_peak_kib"] >= m["rss_after_imports_kib"] > 0


def test_onnxruntime_is_a_bench_extra_and_the_library_never_imports_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if "onnx" in d]
    bench_extra = {d.split(">")[0] for d in project["optional-dependencies"]["bench"]}
    assert bench_extra >= {"onnxruntime", "onnx"}
    for path in (ROOT / "src").rglob("*.py"):
        text = path.read_text()
        assert "import onnx" not in text and "from onnx" not in text, path
