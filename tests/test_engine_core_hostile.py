"""The compiled core on its own is safe whatever it is called with: sizes whose products overflow,
conv geometry whose padded extent or dilated kernel overflows, bit lengths too long for int32
sums, and unaligned buffers raise OverflowError / ValueError before any memory is touched.

The wrapping cases pick sizes whose true products exceed 2**64 but wrap to exactly the small
buffers passed, so a wrapping size check accepts them (the old core then read or wrote far out of
bounds, or returned wrong logits)."""
import numpy as np
import pytest

from binarynet.engine import _core, kernels, reference

from engine_fixtures import pm1

WRAP_ROWS = (2**61 + 1) // 3  # x 3 words x 8 bytes = 2**64 + 8: wraps to one word
BIG = 2**62 - 1  # the dilation = padding


pytestmark = pytest.mark.usefixtures("kernel_settings_restored")  # conftest




def conv_geometry(n=1, h=5, w=5, c=5, o=2, kh=3, kw=3, s=1, p=0, d=1):
    return (n, h, w, c, o, kh, kw, s, s, p, p, d, d)


def test_conv_with_huge_dilation_and_padding_is_refused_not_wrong():
    """dilation = padding = 2**62 - 1: Python finds a 5x5 output (only the centre tap is inside
    the input), but h + 2 * padding overflows int64 in C: the old core returned wrong sums (and
    AddressSanitizer saw a heap-buffer-overflow read)."""
    rng = np.random.default_rng(0)
    x, w = reference.pack(pm1(rng, (1, 5, 5, 5))), reference.pack(pm1(rng, (2, 3, 3, 5)))
    thresh, flip = np.zeros(2, np.int32), np.zeros(2, bool)
    for backend in kernels.available_backends():
        kernels.set_backend(backend)
        with pytest.raises(OverflowError, match=r"^bconv2d: the padded input height \(height "
                           r"\+ 2 \* padding\) overflows$"):
            kernels.bconv2d(x, w, 5, 1, BIG, BIG)
        with pytest.raises(OverflowError, match=r"bconv2d_threshold: the padded input height"):
            kernels.bconv2d_threshold(x, w, 5, thresh, flip, 1, BIG, BIG, "one")
        with pytest.raises(OverflowError, match=r"bconv2d_threshold_maxpool: the padded input"):
            kernels.bconv2d_threshold_maxpool(x, w, 5, thresh, flip, 2, 2, 1, BIG, BIG)
    out = np.empty((1, 5, 5, 2), np.int32)
    with pytest.raises(OverflowError, match=r"^bconv2d: the dilated kernel width \(dilation \* "
                       r"\(kernel - 1\) \+ 1\) overflows$"):
        _core.bconv2d(x, w, conv_geometry()[:11] + (1, 2**62), _core.PAD_ZERO, out)


def test_conv_with_large_dilation_and_padding_that_fit_is_exact():
    """dilation = padding = 2**40: only the centre tap of a 3x3 kernel is inside the input, so the
    result is a 1x1 conv with the centre weights ("zero" padding)."""
    rng = np.random.default_rng(1)
    x, w = reference.pack(pm1(rng, (2, 4, 6, 70))), reference.pack(pm1(rng, (5, 3, 3, 70)))
    want = reference.bconv2d(x, np.ascontiguousarray(w[:, 1:2, 1:2]), 70)
    for backend in kernels.available_backends():
        kernels.set_backend(backend)
        np.testing.assert_array_equal(kernels.bconv2d(x, w, 70, 1, 2**40, 2**40), want)


def test_kernel_taps_times_channels_must_fit_int32():
    """kh = kw = 2**32: kh * kw wraps to 0, which made an empty weight buffer look right."""
    geometry = conv_geometry(h=1, w=1, c=1, o=1, kh=2**32, kw=2**32, p=2**31)
    with pytest.raises(OverflowError, match=r"^bconv2d: the size of kernel taps x channels "
                       r"overflows$"):
        _core.bconv2d(np.zeros(1, np.uint64), b"", geometry, _core.PAD_ONE,
                      np.empty(4, np.int32))


@pytest.mark.parametrize("call,message", [
    (lambda: _core.pack(np.zeros(64, np.int8), _core.I8, WRAP_ROWS, 192, np.empty(1, np.uint64)),
     r"^pack: the size of x overflows$"),
    (lambda: _core.unpack(np.zeros(1, np.uint64), WRAP_ROWS, 192, np.empty(64, np.int8)),
     r"^unpack: the size of p overflows$"),
    (lambda: _core.pad_bits_clear(np.zeros(1, np.uint64), WRAP_ROWS, 192),
     r"^pad_bits_clear: the size of p overflows$"),
    (lambda: _core.bgemm(np.zeros(1, np.uint64), np.zeros(18, np.uint64), WRAP_ROWS, 6, 192,
                         np.empty(2, np.int32)), r"^bgemm: the size of a overflows$"),
    (lambda: _core.threshold_pack(np.zeros(64, np.int32), WRAP_ROWS, 192, np.zeros(192, np.int32),
                                  np.zeros(192, np.uint8), np.empty(1, np.uint64)),
     r"^threshold_pack: the size of x overflows$"),
    (lambda: _core.bmaxpool2d(np.zeros(1, np.uint64), (WRAP_ROWS, 1, 1, 192, 1, 1, 1, 1),
                              np.zeros(3, np.uint64), np.empty(1, np.uint64)),
     r"^bmaxpool2d: the size of x overflows$"),
    (lambda: _core.maxpool2d_int(np.zeros(2, np.int32), (WRAP_ROWS, 1, 1, 6, 1, 1, 1, 1),
                                 np.empty(2, np.int32)), r"^maxpool2d_int: the size of x overflows$"),
    # k = 2**63 - 1: 2**57 words a row, times 128 rows times 8 bytes wraps to 0
    (lambda: _core.bgemm(b"", b"", 128, 128, 2**63 - 1, np.empty(128 * 128, np.int32)),
     r"^bgemm: k = 9223372036854775807 is too large, the int32 sums need k <= 2147483647$"),
], ids=["pack", "unpack", "pad_bits_clear", "bgemm", "threshold_pack", "bmaxpool2d",
        "maxpool2d_int", "bgemm_k"])
def test_sizes_whose_products_wrap_are_refused(call, message):
    with pytest.raises(OverflowError, match=message):
        call()


def test_first_layer_k_must_keep_the_int32_sums_exact():
    """255 * k > 2**31 - 1: all-255 inputs against all +1 weights wrapped to a negative sum."""
    k = 2**31 // 255 + 1
    x = np.full((1, k), 255, np.uint8)
    w = reference.pack(np.ones((1, k)))
    for fn in [_core.bitplane_gemm, _core.int_gemm]:
        with pytest.raises(OverflowError, match=r"k = 8421505 is too large, the int32 sums need "
                           r"k <= 8421504$"):
            fn(x, w, 1, 1, k, np.empty(1, np.int32))


def test_fused_pool_window_larger_than_memory_is_refused():
    """A 1x1 input padded by 2**31 gives a (2**32 + 1)^2 conv map; one pool window over all of it
    needs (2**32 + 1)^2 im2col rows, which wraps size_t."""
    side = 2**32 + 1
    geometry = conv_geometry(h=1, w=1, c=1, o=1, kh=1, kw=1, p=2**31)
    with pytest.raises(OverflowError, match=r"^bconv2d_threshold_maxpool: the work buffers' "
                       r"size overflows$"):
        _core.bconv2d_threshold_maxpool(np.zeros(1, np.uint64), np.zeros(1, np.uint64), geometry,
                                        _core.PAD_ONE, np.zeros(1, np.int32), np.zeros(1, np.uint8),
                                        (side, side, 1, 1), np.empty(1, np.uint64))


def test_unaligned_buffers_are_refused_by_the_core_and_copied_by_kernels():
    rng = np.random.default_rng(2)
    a = reference.pack(pm1(rng, (3, 100)))
    raw = np.zeros(a.nbytes + 1, np.uint8)
    raw[1:] = a.view(np.uint8).ravel()
    unaligned = np.frombuffer(raw.data, np.uint64, offset=1).reshape(a.shape)
    assert not unaligned.flags.aligned
    with pytest.raises(ValueError, match=r"^bgemm: buffer a is not aligned to 8 bytes$"):
        _core.bgemm(unaligned, a, 3, 3, 100, np.empty(9, np.int32))
    np.testing.assert_array_equal(kernels.bgemm(unaligned, unaligned, 100),
                                  reference.bgemm(a, a, 100))


def test_buffers_must_match_the_shapes_exactly():
    a = np.zeros((3, 2), np.uint64)
    with pytest.raises(ValueError, match=r"^bgemm: buffer out holds 32 bytes, expected 36$"):
        _core.bgemm(a, a, 3, 3, 100, np.empty(8, np.int32))
    with pytest.raises(ValueError, match=r"^bconv2d: buffer w holds 8 bytes, expected 144$"):
        _core.bconv2d(np.zeros(25, np.uint64), np.zeros(1, np.uint64), conv_geometry(), 0,
                      np.empty(50, np.int32))
    with pytest.raises(ValueError, match=r"^bconv2d: kernel does not fit the input$"):
        _core.bconv2d(np.zeros(25, np.uint64), np.zeros(18, np.uint64), conv_geometry(d=3), 0,
                      np.empty(50, np.int32))


def test_any_nonzero_flip_byte_means_flipped():
    """flip arrives as bytes: a 2 must act as 1 (the scalar epilogues set the next channel's
    bit for it), in every fused threshold op and on every backend."""
    rng = np.random.default_rng(3)
    m, n, k = 5, 70, 130
    a, w = reference.pack(pm1(rng, (m, k))), reference.pack(pm1(rng, (n, k)))
    thresh = rng.integers(-9, 10, n).astype(np.int32)
    flip = rng.random(n) < 0.5
    sums = rng.integers(-9, 10, (m, n), dtype=np.int32)
    x, wc = reference.pack(pm1(rng, (1, 4, 4, 3))), reference.pack(pm1(rng, (n, 3, 3, 3)))
    geometry = (1, 4, 4, 3, n, 3, 3, 1, 1, 1, 1, 1, 1)
    ones = flip.view(np.uint8)
    twos = ones * np.uint8(2)
    for backend in kernels.available_backends():
        kernels.set_backend(backend)
        got = [np.empty((m, 2), np.uint64) for _ in range(2)]
        _core.bgemm_threshold(a, w, m, n, k, thresh, ones, got[0])
        _core.bgemm_threshold(a, w, m, n, k, thresh, twos, got[1])
        np.testing.assert_array_equal(got[1], got[0])
        _core.threshold_pack(sums, m, n, thresh, ones, got[0])
        _core.threshold_pack(sums, m, n, thresh, twos, got[1])
        np.testing.assert_array_equal(got[1], got[0])
        conv = [np.empty((1, 4, 4, 2), np.uint64) for _ in range(2)]
        _core.bconv2d_threshold(x, wc, geometry, _core.PAD_ZERO, thresh, ones, conv[0])
        _core.bconv2d_threshold(x, wc, geometry, _core.PAD_ZERO, thresh, twos, conv[1])
        np.testing.assert_array_equal(conv[1], conv[0])


# ---- fused output transforms: kinds, params, residual, y, thresh, flip, bits ----------------
def transform_buffers(rows=2, o=3, kinds=b"\x00", **over):
    bufs = {"kinds": kinds, "params": np.zeros((2, o), np.float32), "residual": None,
            "y": np.empty((rows, o), np.float32), "thresh": np.zeros(o, np.float32),
            "flip": np.zeros(o, np.uint8), "bits": np.empty((rows, 1), np.uint64)}
    bufs.update(over)
    return list(bufs.values())


def dense_transform(**over):
    a = np.zeros((2, 1), np.uint64)
    _core.bgemm_transform(a, np.zeros((3, 1), np.uint64), 2, 3, 50, *transform_buffers(**over))


@pytest.mark.parametrize("over,error,message", [
    ({"kinds": b"\x07"}, ValueError, r"unknown step kind 7"),
    ({"kinds": b"\x01" * 65}, ValueError, r"at most 64 steps, got 65"),
    ({"kinds": b"\x00\x02"}, ValueError, r"buffer params holds 24 bytes, expected 60"),
    ({"kinds": b""}, ValueError, r"params must be empty without steps"),
    ({"kinds": b"\x00\x03"}, ValueError, r"a residual goes with exactly one add step"),
    ({"residual": np.zeros((2, 3), np.float32)}, ValueError, r"a residual goes with exactly one"),
    ({"kinds": b"\x03\x03", "params": b"", "residual": np.zeros((2, 3), np.float32)}, ValueError,
     r"a residual goes with exactly one add step"),
    ({"kinds": b"\x03", "params": b"", "residual": np.zeros((1, 3), np.float32)}, ValueError,
     r"buffer residual holds 12 bytes, expected 24"),
    ({"bits": None}, ValueError, r"give y, or thresh, flip and bits, or both"),
    ({"y": None, "thresh": None, "flip": None, "bits": None}, ValueError, r"give y, or thresh"),
    ({"y": np.empty((2, 2), np.float32)}, ValueError, r"buffer y holds 16 bytes, expected 24"),
    ({"flip": np.zeros(2, np.uint8)}, ValueError, r"buffer flip holds 2 bytes, expected 3"),
    ({"bits": np.empty((1, 1), np.uint64)}, ValueError, r"buffer bits holds 8 bytes, expected 16"),
    ({"thresh": np.frombuffer(bytes(13), np.float32, offset=1)}, ValueError,
     r"buffer thresh is not aligned to 4 bytes"),
], ids=lambda v: str(v)[:30] if not isinstance(v, dict) else "-".join(v))
def test_transform_buffers_are_checked(over, error, message):
    with pytest.raises(error, match=r"^bgemm_transform: " + message):
        dense_transform(**over)


def test_transform_outputs_must_be_writable_and_sizes_must_not_wrap():
    with pytest.raises((BufferError, TypeError)):
        dense_transform(y=bytes(24))
    with pytest.raises(OverflowError, match=r"^bgemm_transform: the size of a overflows$"):
        _core.bgemm_transform(np.zeros(1, np.uint64), np.zeros(3, np.uint64), WRAP_ROWS, 1, 192,
                              *transform_buffers(o=1))
    with pytest.raises(OverflowError, match=r"^sign_pack: the size of x overflows$"):
        _core.sign_pack(np.zeros(64, np.float32), WRAP_ROWS, 192, np.zeros(192, np.float32),
                        np.zeros(192, np.uint8), np.empty(3, np.uint64))
    # a 1x1 input padded by 2**31: (2**32 + 1)**2 output pixels overflow
    geometry = conv_geometry(h=1, w=1, c=1, o=1, kh=1, kw=1, p=2**31)
    with pytest.raises(OverflowError, match=r"^bconv2d_transform: the size of the output "
                       r"overflows$"):
        _core.bconv2d_transform(np.zeros(1, np.uint64), np.zeros(1, np.uint64),
                                geometry, _core.PAD_ONE,
                                *transform_buffers(o=1))


def test_transform_flip_bytes_other_than_one_mean_flipped():
    rng = np.random.default_rng(4)
    m, n, k = 40, 70, 130  # the AVX-512 panel path and the tiles
    a, w = reference.pack(pm1(rng, (m, k))), reference.pack(pm1(rng, (n, k)))
    flip = rng.random(n) < 0.5
    thresh = rng.integers(-9, 10, n).astype(np.float32)
    params = np.stack([np.ones(n, np.float32), np.zeros(n, np.float32)])
    for backend in kernels.available_backends():
        kernels.set_backend(backend)
        got = [np.empty((m, 2), np.uint64) for _ in range(2)]
        for out, f in zip(got, [flip.view(np.uint8), flip.view(np.uint8) * np.uint8(2)]):
            _core.bgemm_transform(a, w, m, n, k, b"\x00", params, None, None, thresh, f, out)
        np.testing.assert_array_equal(got[1], got[0])
        xs = rng.standard_normal((3, n)).astype(np.float32)
        packed = [np.empty((3, 2), np.uint64) for _ in range(2)]
        for out, f in zip(packed, [flip.view(np.uint8), flip.view(np.uint8) * np.uint8(2)]):
            _core.sign_pack(xs, 3, n, thresh, f, out)
        np.testing.assert_array_equal(packed[1], packed[0])


def test_first_dense_float_buffers_are_checked():
    w = np.zeros((3, 2), np.uint64)
    with pytest.raises(ValueError, match=r"^first_dense_float: buffer x holds 800 bytes, "
                                         r"expected 1600$"):  # float64 x read as float32 size
        _core.first_dense_float(np.zeros((2, 100), np.float32), True, w, 2, 3, 100,
                                np.empty(6, np.float64))
    with pytest.raises(ValueError, match=r"^first_dense_float: buffer out holds 40 bytes"):
        _core.first_dense_float(np.zeros((2, 100), np.float32), False, w, 2, 3, 100,
                                np.empty(5, np.float64))
    with pytest.raises(OverflowError, match=r"^first_dense_float: the size of x overflows$"):
        _core.first_dense_float(np.zeros(64, np.float32), False, np.zeros(3, np.uint64),
                                WRAP_ROWS, 1, 192, np.empty(1, np.float64))


def test_int_conv_threshold_class_indices_are_checked_by_the_core():
    """The classes index the threshold table: out-of-range values would read past it."""
    x, w = np.zeros((1, 3, 5, 5), np.uint8), np.zeros((4, 1), np.uint64)
    geometry = (1, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1)
    rows, cols = np.zeros(5, np.int32), np.zeros(5, np.int32)
    rows[2] = 2
    with pytest.raises(ValueError, match=r"^int_conv_threshold: row_class values must be in "
                                         r"\[0, 2\)$"):
        _core.int_conv_threshold(x, w, geometry, 2, 1, np.zeros(8, np.int32), rows, cols,
                                 np.zeros(4, np.uint8), np.empty((25, 1), np.uint64))
    cols[0] = -1
    with pytest.raises(ValueError, match=r"^int_conv_threshold: col_class values must be in"):
        _core.int_conv_threshold(x, w, geometry, 3, 1, np.zeros(12, np.int32), rows, cols,
                                 np.zeros(4, np.uint8), np.empty((25, 1), np.uint64))
    with pytest.raises(OverflowError, match=r"^int_conv_threshold: kh \* kw \* c = 8421507 is "
                                            r"too large"):
        _core.int_conv_threshold(np.zeros((1, 8421507, 1, 1), np.uint8), w,
                                 (1, 8421507, 1, 1, 4, 1, 1, 1, 1, 0, 0, 1, 1), 1, 1,
                                 np.zeros(4, np.int32), rows[:1], cols[:1],
                                 np.zeros(4, np.uint8), np.empty((1, 1), np.uint64))
