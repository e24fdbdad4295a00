"""PackedModel on the GPU backend (PackedModel.to("cuda")) against the CPU engine, bit for bit.

Without a CUDA GPU the runner's "cuda" path (binarynet.gpu.backend ops on torch tensors) runs on
CPU tensors in Triton's interpreter (this module sets TRITON_INTERPRET=1 before triton is first
imported: tests/gpu_setup.py); with a GPU the same models run on the real device too.
Models and batches are tiny because the interpreter executes every program in numpy.
"""

import numpy as np
import pytest

from gpu_setup import torch_and_triton

torch, ON_GPU = torch_and_triton()

import binarynet as bn  # noqa: E402
from binarynet import engine  # noqa: E402
from binarynet.errors import BinarynetError  # noqa: E402
from binarynet.export import export  # noqa: E402
from binarynet.gpu import triton_kernels  # noqa: E402
from binarynet.gpu.engine_backend import on_torch_device  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning:triton"),
    pytest.mark.skipif(not ON_GPU and not triton_kernels.INTERPRETED,
                       reason="no CUDA GPU, and TRITON_INTERPRET was set to 0 before the tests"),
]
needs_gpu = pytest.mark.skipif(not ON_GPU, reason="no CUDA GPU")


def _randomise_bn(model):
    """Spread the batch-norm statistics so thresholds differ per channel and some flip."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-4, 4)
                m.weight.uniform_(-1, 1)
    return model


@pytest.fixture(scope="module")
def cnn():
    """Conv (odd widths, fused conv + max-pool) + dense layers on 4x4 images, uint8 input."""
    torch.manual_seed(0)
    model = _randomise_bn(bn.models.get("cifar10_vgg", widths=(5, 70), fc=(33,), image_size=4,
                                        num_classes=7).eval())
    x = torch.randint(0, 256, (3, 3, 4, 4), dtype=torch.uint8)
    packed = export(model, x, input_scale=2 / 255, input_offset=-1.0)
    return packed, x.numpy()


@pytest.fixture(scope="module")
def mlp():
    """Dense layers of odd widths (first layer thresholded in float on float input)."""
    torch.manual_seed(1)
    model = _randomise_bn(bn.models.get("mnist_mlp", hidden=70, depth=2, in_shape=(1, 5, 5),
                                        num_classes=9).eval())
    x_u8 = torch.randint(0, 256, (6, 1, 5, 5), dtype=torch.uint8)
    packed = export(model, x_u8, input_scale=1 / 64, input_offset=-2.0)
    return packed, x_u8.numpy()


def _device_models(packed):
    """The model on the torch backends this machine has: the interpreter (CPU tensors) without a
    GPU, the real device with one."""
    if ON_GPU:
        return [packed.to("cuda")]
    return [on_torch_device(packed, "cpu")]


def test_gpu_engine_cnn_logits_equal_cpu_engine(cnn):
    packed, x = cnn
    kinds = [op["op"] for op in packed.ops]
    assert {"first_conv", "conv", "maxpool", "flatten", "dense", "dense_logits"} <= set(kinds)
    want = packed.predict(x)
    for model in _device_models(packed):
        got = model.predict(x)
        assert isinstance(got, np.ndarray) and got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
        # the layer-by-layer trace too (first-conv border classes, pool, flatten repack)
        for (name, kind, a), (_, _, b) in zip(model.trace(x[:1]), packed.trace(x[:1])):
            np.testing.assert_array_equal(a, b, err_msg=f"{kind} ({name})")


def test_gpu_engine_mlp_float_and_uint8_inputs_equal_cpu_engine(mlp):
    packed, x_u8 = mlp
    x_f = x_u8.astype(np.float32) / 64 - 2  # exact in float32: both first-layer paths agree
    for model in _device_models(packed):
        for x in (x_u8, x_f):
            np.testing.assert_array_equal(model.predict(x), packed.predict(x))


def test_gpu_engine_torch_input_gives_torch_logits(mlp):
    packed, x_u8 = mlp
    want = packed.predict(x_u8)
    for model in _device_models(packed):
        got = model.predict(torch.from_numpy(x_u8), batch_size=4)  # two internal batches
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
        assert str(got.device) == model.device
        np.testing.assert_array_equal(got.cpu().numpy(), want)


def test_gpu_engine_to_cpu_and_bad_devices(mlp):
    packed, x_u8 = mlp
    assert packed.to("cpu") is packed and packed.device == "cpu"
    moved = _device_models(packed)[0]
    back = moved.to("cpu")
    assert back.device == "cpu"
    np.testing.assert_array_equal(back.predict(x_u8), packed.predict(x_u8))
    with pytest.raises(ValueError, match="device must be one of 'cpu', 'cuda', optionally with"):
        packed.to("tpu")
    with pytest.raises(TypeError, match="uint8 images or floats"):
        moved.predict(torch.zeros((1, 1, 5, 5), dtype=torch.int32))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 1, 5, 5\)"):
        moved.predict(np.zeros((1, 25), np.uint8))


@pytest.mark.skipif(ON_GPU, reason="checks the error on a machine without a CUDA GPU")
def test_gpu_engine_to_cuda_without_gpu_raises_clearly(mlp):
    packed, _ = mlp
    with pytest.raises(BinarynetError, match="no CUDA GPU is available"):
        packed.to("cuda")


@needs_gpu
def test_gpu_engine_real_device_saved_model(cnn, tmp_path):
    """On the real GPU: a saved and loaded model, default dense engine (tensor cores where the
    GPU has them), a batch larger than one internal batch."""
    packed, x = cnn
    packed.save(tmp_path / "m.bnn")
    model = engine.load(tmp_path / "m.bnn").to("cuda")
    assert model.device.startswith("cuda:")
    rng = np.random.default_rng(0)
    xs = rng.integers(0, 256, (300, *x.shape[1:]), dtype=np.uint8)
    np.testing.assert_array_equal(model.predict(xs, batch_size=128), packed.predict(xs))
    with pytest.raises(ValueError, match="CUDA device"):
        packed.to(f"cuda:{torch.cuda.device_count()}")
