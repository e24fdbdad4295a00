/* Python module binarynet.engine._core: thin bindings over the kernels.
 *
 * Arrays arrive through the buffer protocol ("y*" read-only, "w*" writable; both must be
 * C-contiguous), shapes as integers. binarynet.engine.kernels validates dtypes, shapes and values
 * with clear messages first, but this module is safe on its own, whatever it is called with:
 * every size derived from the shapes (element counts, padded extents, output sizes) is computed
 * with overflow checks and must fit Py_ssize_t (OverflowError otherwise), every buffer must hold
 * exactly what the shapes say, aligned for its items (ValueError otherwise), and bit lengths are
 * bounded so the int32 results cannot overflow; all before any kernel touches memory. Work
 * buffers the drivers size themselves are checked there (BN_EOVERFLOW). Compute runs without the
 * GIL.
 */
#include "bindings.h"

/* ---- pack / unpack -------------------------------------------------------------------------- */
static PyObject *py_pack(PyObject *self, PyObject *args) {
    Py_buffer x, out;
    int dtype;
    Py_ssize_t rows, k;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*innw*", &x, &dtype, &rows, &k, &out)) return NULL;
    PyObject *ret = NULL;
    Py_ssize_t sizes[] = {rows, k};
    if (dtype < BN_F32 || dtype > BN_U8) {
        PyErr_Format(PyExc_ValueError, "pack: unknown dtype code %d", dtype);
    } else if (!check_sizes("pack", sizes, 2) &&
               !CHECK_BUFFER("pack", "x", &x, bn_dtype_size(dtype), (size_t)rows, (size_t)k) &&
               !CHECK_BUFFER("pack", "out", &out, 8, (size_t)rows, bn_words((size_t)k))) {
        Py_BEGIN_ALLOW_THREADS
        bn_pack(x.buf, dtype, (size_t)rows, (size_t)k, (uint64_t *)out.buf);
        Py_END_ALLOW_THREADS
        ret = Py_NewRef(Py_None);
    }
    RELEASE(&x, &out);
    return ret;
}

static PyObject *py_unpack(PyObject *self, PyObject *args) {
    Py_buffer p, out;
    Py_ssize_t rows, k;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nnw*", &p, &rows, &k, &out)) return NULL;
    PyObject *ret = NULL;
    Py_ssize_t sizes[] = {rows, k};
    if (!check_sizes("unpack", sizes, 2) &&
        !CHECK_BUFFER("unpack", "p", &p, 8, (size_t)rows, bn_words((size_t)k)) &&
        !CHECK_BUFFER("unpack", "out", &out, 1, (size_t)rows, (size_t)k)) {
        Py_BEGIN_ALLOW_THREADS
        bn_unpack((const uint64_t *)p.buf, (size_t)rows, (size_t)k, (int8_t *)out.buf);
        Py_END_ALLOW_THREADS
        ret = Py_NewRef(Py_None);
    }
    RELEASE(&p, &out);
    return ret;
}

/* pad_bits_clear(p, rows, k): True when no row has a bit set beyond k in its last word. */
static PyObject *py_pad_bits_clear(PyObject *self, PyObject *args) {
    Py_buffer p;
    Py_ssize_t rows, k;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nn", &p, &rows, &k)) return NULL;
    PyObject *ret = NULL;
    Py_ssize_t sizes[] = {rows, k};
    if (!check_sizes("pad_bits_clear", sizes, 2) &&
        !CHECK_BUFFER("pad_bits_clear", "p", &p, 8, (size_t)rows, bn_words((size_t)k))) {
        int clear = 1;
        if (k % 64) {
            const uint64_t mask = ~(((uint64_t)1 << (k % 64)) - 1);
            const size_t kw = bn_words((size_t)k);
            const uint64_t *w = (const uint64_t *)p.buf;
            uint64_t any = 0;
            for (size_t r = 0; r < (size_t)rows; ++r) any |= w[r * kw + kw - 1];
            clear = (any & mask) == 0;
        }
        ret = PyBool_FromLong(clear);
    }
    PyBuffer_Release(&p);
    return ret;
}

/* ---- dense ---------------------------------------------------------------------------------- */
/* bgemm(a, w, m, n, k, out[, panels]); bgemm_threshold(a, w, m, n, k, thresh, flip, out[,
 * panels]): panels (or None) made once (get_dense_panels). */
static PyObject *py_bgemm(PyObject *self, PyObject *args) {
    Py_buffer a, w, out, panels = {0};
    PyObject *panels_obj = Py_None;
    Py_ssize_t m, n, k;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*nnnw*|O", &a, &w, &m, &n, &k, &out, &panels_obj))
        return NULL;
    PyObject *ret = NULL;
    if (!check_dense("bgemm", m, n, k, &a, &w) &&
        !CHECK_BUFFER("bgemm", "out", &out, 4, (size_t)m, (size_t)n) &&
        !get_dense_panels("bgemm", n, k, panels_obj, &panels)) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = bn_bgemm((const uint64_t *)a.buf, (const uint64_t *)w.buf,
                      (const uint64_t *)panels.buf, (size_t)m, (size_t)n, (size_t)k,
                      (int32_t *)out.buf);
        Py_END_ALLOW_THREADS
        ret = driver_result("bgemm", rc);
    }
    RELEASE(&a, &w, &out, &panels);
    return ret;
}

static PyObject *py_bgemm_threshold(PyObject *self, PyObject *args) {
    Py_buffer a, w, thresh, flip, out, panels = {0};
    PyObject *panels_obj = Py_None;
    Py_ssize_t m, n, k;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*nnny*y*w*|O", &a, &w, &m, &n, &k, &thresh, &flip, &out,
                          &panels_obj))
        return NULL;
    PyObject *ret = NULL;
    const char *op = "bgemm_threshold";
    if (!check_dense(op, m, n, k, &a, &w) && !CHECK_BUFFER(op, "thresh", &thresh, 4, (size_t)n) &&
        !CHECK_BUFFER(op, "flip", &flip, 1, (size_t)n) &&
        !CHECK_BUFFER(op, "out", &out, 8, (size_t)m, bn_words((size_t)n)) &&
        !get_dense_panels(op, n, k, panels_obj, &panels)) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = bn_bgemm_threshold((const uint64_t *)a.buf, (const uint64_t *)w.buf,
                                (const uint64_t *)panels.buf, (size_t)m, (size_t)n, (size_t)k,
                                (const int32_t *)thresh.buf, (const uint8_t *)flip.buf,
                                (uint64_t *)out.buf);
        Py_END_ALLOW_THREADS
        ret = driver_result(op, rc);
    }
    RELEASE(&a, &w, &thresh, &flip, &out, &panels);
    return ret;
}

static PyObject *py_threshold_pack(PyObject *self, PyObject *args) {
    Py_buffer x, thresh, flip, out;
    Py_ssize_t rows, n;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nny*y*w*", &x, &rows, &n, &thresh, &flip, &out)) return NULL;
    PyObject *ret = NULL;
    Py_ssize_t sizes[] = {rows, n};
    const char *op = "threshold_pack";
    if (!check_sizes(op, sizes, 2) && !CHECK_BUFFER(op, "x", &x, 4, (size_t)rows, (size_t)n) &&
        !CHECK_BUFFER(op, "thresh", &thresh, 4, (size_t)n) &&
        !CHECK_BUFFER(op, "flip", &flip, 1, (size_t)n) &&
        !CHECK_BUFFER(op, "out", &out, 8, (size_t)rows, bn_words((size_t)n))) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = bn_threshold_pack((const int32_t *)x.buf, (size_t)rows, (size_t)n,
                               (const int32_t *)thresh.buf, (const uint8_t *)flip.buf,
                               (uint64_t *)out.buf);
        Py_END_ALLOW_THREADS
        ret = driver_result(op, rc);
    }
    RELEASE(&x, &thresh, &flip, &out);
    return ret;
}

/* ---- convolution ---------------------------------------------------------------------------- */
static PyObject *py_bconv2d(PyObject *self, PyObject *args) {
    Py_buffer x, w, out;
    PyObject *geom;
    int pad_mode;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*O!iw*", &x, &w, &PyTuple_Type, &geom, &pad_mode, &out))
        return NULL;
    PyObject *ret = NULL;
    bn_conv_shape s;
    if (!parse_conv("bconv2d", geom, pad_mode, &s) && !check_conv_inputs("bconv2d", &s, &x, &w) &&
        !CHECK_BUFFER("bconv2d", "out", &out, 4, s.n, s.ho, s.wo, s.o)) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = bn_bconv2d(&s, (const uint64_t *)x.buf, (const uint64_t *)w.buf, (int32_t *)out.buf);
        Py_END_ALLOW_THREADS
        ret = driver_result("bconv2d", rc);
    }
    RELEASE(&x, &w, &out);
    return ret;
}

/* bconv2d_threshold(x, w, geometry, pad_mode, thresh, flip, out[, wpre, panels, kvec]): the
 * prepared tables (or None) from conv_prepare(w, geometry, pad_mode). */
static PyObject *py_bconv2d_threshold(PyObject *self, PyObject *args) {
    Py_buffer x, w, thresh, flip, out;
    PyObject *geom, *prep_objs[3] = {Py_None, Py_None, Py_None};
    int pad_mode;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*O!iy*y*w*|OOO", &x, &w, &PyTuple_Type, &geom, &pad_mode,
                          &thresh, &flip, &out, &prep_objs[0], &prep_objs[1], &prep_objs[2]))
        return NULL;
    PyObject *ret = NULL;
    bn_conv_shape s;
    conv_prep_bufs pb = {0};
    const bn_conv_weights *prep;
    const char *op = "bconv2d_threshold";
    if (!parse_conv(op, geom, pad_mode, &s) && !check_conv_inputs(op, &s, &x, &w) &&
        !CHECK_BUFFER(op, "thresh", &thresh, 4, s.o) && !CHECK_BUFFER(op, "flip", &flip, 1, s.o) &&
        !CHECK_BUFFER(op, "out", &out, 8, s.n, s.ho, s.wo, bn_words(s.o)) &&
        !get_conv_prep(op, &s, prep_objs, &pb, &prep)) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = bn_bconv2d_threshold(&s, (const uint64_t *)x.buf, (const uint64_t *)w.buf, prep,
                                  (const int32_t *)thresh.buf, (const uint8_t *)flip.buf,
                                  (uint64_t *)out.buf);
        Py_END_ALLOW_THREADS
        ret = driver_result(op, rc);
    }
    RELEASE_CONV_PREP(&pb);
    RELEASE(&x, &w, &thresh, &flip, &out);
    return ret;
}

/* bconv2d_threshold_maxpool(x, w, geometry, pad_mode, thresh, flip, pool, out[, wpre, panels,
 * kvec]): the prepared tables as for bconv2d_threshold. */
static PyObject *py_bconv2d_threshold_maxpool(PyObject *self, PyObject *args) {
    Py_buffer x, w, thresh, flip, out;
    PyObject *geom, *prep_objs[3] = {Py_None, Py_None, Py_None};
    int pad_mode;
    Py_ssize_t pool[4]; /* kh, kw, sh, sw */
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*O!iy*y*(nnnn)w*|OOO", &x, &w, &PyTuple_Type, &geom,
                          &pad_mode, &thresh, &flip, &pool[0], &pool[1], &pool[2], &pool[3], &out,
                          &prep_objs[0], &prep_objs[1], &prep_objs[2]))
        return NULL;
    PyObject *ret = NULL;
    bn_conv_shape s;
    conv_prep_bufs pb = {0};
    const bn_conv_weights *prep;
    const char *op = "bconv2d_threshold_maxpool";
    if (!parse_conv(op, geom, pad_mode, &s) && !check_sizes(op, pool, 4) &&
        !check_conv_inputs(op, &s, &x, &w) && !CHECK_BUFFER(op, "thresh", &thresh, 4, s.o) &&
        !CHECK_BUFFER(op, "flip", &flip, 1, s.o) && !get_conv_prep(op, &s, prep_objs, &pb, &prep)) {
        if ((size_t)pool[0] > s.ho || (size_t)pool[1] > s.wo) {
            PyErr_Format(PyExc_ValueError, "%s: pool kernel larger than the conv output", op);
        } else {
            const size_t hp = (s.ho - (size_t)pool[0]) / (size_t)pool[2] + 1;
            const size_t wp = (s.wo - (size_t)pool[1]) / (size_t)pool[3] + 1;
            if (!CHECK_BUFFER(op, "out", &out, 8, s.n, hp, wp, bn_words(s.o))) {
                int rc;
                Py_BEGIN_ALLOW_THREADS
                rc = bn_bconv2d_threshold_maxpool(
                    &s, (const uint64_t *)x.buf, (const uint64_t *)w.buf, prep,
                    (const int32_t *)thresh.buf, (const uint8_t *)flip.buf, (size_t)pool[0],
                    (size_t)pool[1], (size_t)pool[2], (size_t)pool[3], (uint64_t *)out.buf);
                Py_END_ALLOW_THREADS
                ret = driver_result(op, rc);
            }
        }
    }
    RELEASE_CONV_PREP(&pb);
    RELEASE(&x, &w, &thresh, &flip, &out);
    return ret;
}

/* ---- pooling -------------------------------------------------------------------------------- */
/* shape: (n, h, w, channels, kh, kw, sh, sw) */
static int parse_pool(const char *op, PyObject *geom, size_t g[8], size_t *ho, size_t *wo) {
    Py_ssize_t v[8];
    if (!PyArg_ParseTuple(geom, "nnnnnnnn", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
                          &v[7]))
        return -1;
    if (check_sizes(op, v, 8)) return -1;
    for (int i = 0; i < 8; ++i) g[i] = (size_t)v[i];
    if (g[4] > g[1] || g[5] > g[2]) {
        PyErr_Format(PyExc_ValueError, "%s: pool kernel larger than the input", op);
        return -1;
    }
    *ho = (g[1] - g[4]) / g[6] + 1;
    *wo = (g[2] - g[5]) / g[7] + 1;
    return 0;
}

static PyObject *py_bmaxpool2d(PyObject *self, PyObject *args) {
    Py_buffer x, and_mask, out;
    PyObject *geom;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*O!y*w*", &x, &PyTuple_Type, &geom, &and_mask, &out)) return NULL;
    PyObject *ret = NULL;
    size_t g[8], ho, wo;
    const char *op = "bmaxpool2d";
    if (!parse_pool(op, geom, g, &ho, &wo)) {
        const size_t cw = bn_words(g[3]);
        if (!CHECK_BUFFER(op, "x", &x, 8, g[0], g[1], g[2], cw) &&
            !CHECK_BUFFER(op, "and_mask", &and_mask, 8, cw) &&
            !CHECK_BUFFER(op, "out", &out, 8, g[0], ho, wo, cw)) {
            Py_BEGIN_ALLOW_THREADS
            bn_bmaxpool2d((const uint64_t *)x.buf, g[0], g[1], g[2], cw,
                          (const uint64_t *)and_mask.buf, g[4], g[5], g[6], g[7],
                          (uint64_t *)out.buf);
            Py_END_ALLOW_THREADS
            ret = Py_NewRef(Py_None);
        }
    }
    RELEASE(&x, &and_mask, &out);
    return ret;
}

static PyObject *py_maxpool2d_int(PyObject *self, PyObject *args) {
    Py_buffer x, out;
    PyObject *geom;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*O!w*", &x, &PyTuple_Type, &geom, &out)) return NULL;
    PyObject *ret = NULL;
    size_t g[8], ho, wo;
    const char *op = "maxpool2d_int";
    if (!parse_pool(op, geom, g, &ho, &wo) &&
        !CHECK_BUFFER(op, "x", &x, 4, g[0], g[1], g[2], g[3]) &&
        !CHECK_BUFFER(op, "out", &out, 4, g[0], ho, wo, g[3])) {
        Py_BEGIN_ALLOW_THREADS
        bn_maxpool2d_int((const int32_t *)x.buf, g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7],
                         (int32_t *)out.buf);
        Py_END_ALLOW_THREADS
        ret = Py_NewRef(Py_None);
    }
    RELEASE(&x, &out);
    return ret;
}

/* One axis of a float pool (PyTorch's MaxPool2d / AvgPool2d): padding at most half the kernel
 * (PyTorch refuses more), the kernel within the padded input, and with ceil_mode one more window
 * where a partial one is left, unless it would start past the input and its left padding. So
 * every window holds an input pixel. */
static int fpool_axis(const char *op, const char *axis, size_t size, size_t kernel,
                      size_t stride, size_t pad, int ceil_mode, size_t *out) {
    if (pad > kernel / 2) {
        PyErr_Format(PyExc_ValueError, "%s: padding %zu must be at most half the kernel %zu", op,
                     pad, kernel);
        return -1;
    }
    if (conv_axis(op, axis, size, kernel, stride, pad, 1, out)) return -1;
    if (ceil_mode && (size + 2 * pad - kernel) % stride && (*out) * stride < size + pad) ++*out;
    return 0;
}

/* pool2d_float(x, geometry, is_max, ceil_mode, count_include_pad, out): geometry (n, h, w, c,
 * kh, kw, sh, sw, ph, pw); x float32 (N, H, W, C), out float32 (N, Ho, Wo, C) */
static PyObject *py_pool2d_float(PyObject *self, PyObject *args) {
    Py_buffer x, out;
    Py_ssize_t g[10];
    int is_max, ceil_mode, include_pad;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*(nnnnnnnnnn)pppw*", &x, &g[0], &g[1], &g[2], &g[3], &g[4],
                          &g[5], &g[6], &g[7], &g[8], &g[9], &is_max, &ceil_mode, &include_pad,
                          &out))
        return NULL;
    PyObject *ret = NULL;
    const char *op = "pool2d_float";
    bn_fpool_shape s;
    if (check_sizes(op, g, 8)) goto done;
    if (g[8] < 0 || g[9] < 0) {
        PyErr_Format(PyExc_ValueError, "%s: padding must be >= 0", op);
        goto done;
    }
    s = (bn_fpool_shape){(size_t)g[0], (size_t)g[1], (size_t)g[2], (size_t)g[3], (size_t)g[4],
                         (size_t)g[5], (size_t)g[6], (size_t)g[7], (size_t)g[8], (size_t)g[9],
                         0, 0, is_max, include_pad};
    if (fpool_axis(op, "height", s.h, s.kh, s.sh, s.ph, ceil_mode, &s.ho) ||
        fpool_axis(op, "width", s.w, s.kw, s.sw, s.pw, ceil_mode, &s.wo) ||
        CHECK_BUFFER(op, "x", &x, 4, s.n, s.h, s.w, s.c) ||
        CHECK_BUFFER(op, "out", &out, 4, s.n, s.ho, s.wo, s.c))
        goto done;
    Py_BEGIN_ALLOW_THREADS
    bn_pool2d_float(&s, (const float *)x.buf, (float *)out.buf);
    Py_END_ALLOW_THREADS
    ret = Py_NewRef(Py_None);
done:
    RELEASE(&x, &out);
    return ret;
}

/* ---- first layer ---------------------------------------------------------------------------- */
/* x_u8 (m, k), w (n, words(k)) and out (m, n) int32 of a first-layer product. */
static int check_first_layer(const char *op, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                             const Py_buffer *x, const Py_buffer *w, const Py_buffer *out) {
    Py_ssize_t sizes[] = {m, n, k};
    if (check_sizes(op, sizes, 3) || check_length(op, "k", k, BN_FIRST_LAYER_MAX_K) ||
        CHECK_BUFFER(op, "x_u8", x, 1, (size_t)m, (size_t)k) ||
        CHECK_BUFFER(op, "w", w, 8, (size_t)n, bn_words((size_t)k)))
        return -1;
    return CHECK_BUFFER(op, "out", out, 4, (size_t)m, (size_t)n);
}

/* bitplane_gemm(x_u8, w, m, n, k, out[, wpop, panels]): wpop and panels (or None) from
 * bitplane_prepare(w, n, k). */
static PyObject *py_bitplane_gemm(PyObject *self, PyObject *args) {
    static const char op[] = "bitplane_gemm";
    Py_buffer x, w, out, wpop = {0}, panels = {0};
    PyObject *wpop_obj = Py_None, *panels_obj = Py_None;
    Py_ssize_t m, n, k;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*nnnw*|OO", &x, &w, &m, &n, &k, &out, &wpop_obj, &panels_obj))
        return NULL;
    PyObject *ret = NULL;
    if (!optional_buffer(wpop_obj, &wpop) && !optional_buffer(panels_obj, &panels) &&
        !check_first_layer(op, m, n, k, &x, &w, &out) &&
        (!wpop.obj || !CHECK_BUFFER(op, "wpop", &wpop, 4, (size_t)n)) &&
        (!panels.obj || !CHECK_BUFFER(op, "panels", &panels, 8,
                                      bn_panel_words((size_t)n, bn_words((size_t)k))))) {
        if (panels.obj && !wpop.obj) {
            PyErr_Format(PyExc_ValueError, "%s: panels need wpop", op);
        } else {
            const bn_bitplane_weights prep = {(const int32_t *)wpop.buf,
                                              (const uint64_t *)panels.buf};
            int rc;
            Py_BEGIN_ALLOW_THREADS
            rc = bn_bitplane_gemm((const uint8_t *)x.buf, (const uint64_t *)w.buf,
                                  wpop.obj ? &prep : NULL, (size_t)m, (size_t)n, (size_t)k,
                                  (int32_t *)out.buf);
            Py_END_ALLOW_THREADS
            ret = driver_result(op, rc);
        }
    }
    RELEASE(&x, &w, &out, &wpop, &panels);
    return ret;
}

/* int_gemm(x_u8, w, m, n, k, out[, lanes, quads]): lanes and quads from int_prepare(w, n, k). */
static PyObject *py_int_gemm(PyObject *self, PyObject *args) {
    static const char op[] = "int_gemm";
    Py_buffer x, w, out, quads = {0};
    PyObject *quads_obj = Py_None;
    Py_ssize_t m, n, k, lanes = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*nnnw*|nO", &x, &w, &m, &n, &k, &out, &lanes, &quads_obj))
        return NULL;
    PyObject *ret = NULL;
    if (!optional_buffer(quads_obj, &quads) && !check_first_layer(op, m, n, k, &x, &w, &out)) {
        const size_t bytes = lanes == 0 || lanes == 8 || lanes == 16
                                 ? bn_int_weight_bytes((size_t)n, (size_t)k, (size_t)lanes) : 0;
        if (quads.obj && !bytes) {
            PyErr_Format(PyExc_ValueError, "%s: bad lanes %zd", op, lanes);
        } else if (!quads.obj || !CHECK_BUFFER(op, "quads", &quads, 1, bytes)) {
            const bn_int_weights prep = {(const int8_t *)quads.buf, (size_t)lanes};
            int rc;
            Py_BEGIN_ALLOW_THREADS
            rc = bn_int_gemm((const uint8_t *)x.buf, (const uint64_t *)w.buf,
                             quads.obj ? &prep : NULL, (size_t)m, (size_t)n, (size_t)k,
                             (int32_t *)out.buf);
            Py_END_ALLOW_THREADS
            ret = driver_result(op, rc);
        }
    }
    RELEASE(&x, &w, &out, &quads);
    return ret;
}

/* New bytes of `size` (> 0) for prepared weights, or NULL with MemoryError. */
static PyObject *new_bytes(size_t size) {
    return PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
}

/* bitplane_prepare(w, n, k) -> (wpop bytes (n int32), panels bytes) for bitplane_gemm. */
static PyObject *py_bitplane_prepare(PyObject *self, PyObject *args) {
    static const char op[] = "bitplane_prepare";
    Py_buffer w;
    Py_ssize_t n, k;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nn", &w, &n, &k)) return NULL;
    PyObject *ret = NULL, *wpop = NULL, *panels = NULL;
    Py_ssize_t sizes[] = {n, k};
    size_t bytes;
    if (!check_sizes(op, sizes, 2) && !check_length(op, "k", k, BN_FIRST_LAYER_MAX_K) &&
        !CHECK_BUFFER(op, "w", &w, 8, (size_t)n, bn_words((size_t)k)) &&
        !size_product(op, "panels", (size_t[]){bn_panel_words((size_t)n, bn_words((size_t)k)), 8},
                      2, &bytes) &&
        (wpop = new_bytes((size_t)n * 4)) && (panels = new_bytes(bytes))) {
        Py_BEGIN_ALLOW_THREADS
        bn_bitplane_prepare((const uint64_t *)w.buf, (size_t)n, (size_t)k,
                            (int32_t *)PyBytes_AS_STRING(wpop), (uint64_t *)PyBytes_AS_STRING(panels));
        Py_END_ALLOW_THREADS
        ret = PyTuple_Pack(2, wpop, panels);
    }
    Py_XDECREF(wpop);
    Py_XDECREF(panels);
    RELEASE(&w);
    return ret;
}

/* int_prepare(w, n, k) -> (lanes, quads bytes): the weights unpacked for the current ISA row's
 * int_gemm kernel (int_gemm unpacks them per call when the row changed since). */
static PyObject *py_int_prepare(PyObject *self, PyObject *args) {
    static const char op[] = "int_prepare";
    Py_buffer w;
    Py_ssize_t n, k;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nn", &w, &n, &k)) return NULL;
    PyObject *ret = NULL, *quads = NULL;
    Py_ssize_t sizes[] = {n, k};
    const size_t lanes = bn_isa()->int_gemm->lanes;
    if (!check_sizes(op, sizes, 2) && !check_length(op, "k", k, BN_FIRST_LAYER_MAX_K) &&
        !CHECK_BUFFER(op, "w", &w, 8, (size_t)n, bn_words((size_t)k))) {
        const size_t bytes = bn_int_weight_bytes((size_t)n, (size_t)k, lanes);
        if (!bytes || bytes > (size_t)PY_SSIZE_T_MAX) {
            PyErr_Format(PyExc_OverflowError, "%s: the size of quads overflows", op);
        } else if ((quads = new_bytes(bytes))) {
            Py_BEGIN_ALLOW_THREADS
            bn_int_prepare((const uint64_t *)w.buf, (size_t)n, (size_t)k, lanes,
                           (int8_t *)PyBytes_AS_STRING(quads));
            Py_END_ALLOW_THREADS
            ret = Py_BuildValue("nO", (Py_ssize_t)lanes, quads);
        }
    }
    Py_XDECREF(quads);
    RELEASE(&w);
    return ret;
}

/* ---- ISA rows (dispatch.c) and threads -------------------------------------------------------- */
static PyObject *py_backend_supported(PyObject *self, PyObject *args) {
    int backend;
    (void)self;
    if (!PyArg_ParseTuple(args, "i", &backend)) return NULL;
    return PyBool_FromLong(bn_isa_supported(backend));
}

static PyObject *py_get_backend(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    return PyLong_FromLong(bn_isa_current());
}

static PyObject *py_set_backend(PyObject *self, PyObject *args) {
    int backend;
    (void)self;
    if (!PyArg_ParseTuple(args, "i", &backend)) return NULL;
    if (!bn_isa_supported(backend))
        return PyErr_Format(PyExc_ValueError, "backend %d is not supported by this CPU", backend);
    bn_isa_select(backend);
    Py_RETURN_NONE;
}

/* kernel_table(code) -> {"isa": row name, op: variant} for a supported row, else None. */
static PyObject *py_kernel_table(PyObject *self, PyObject *args) {
    int backend;
    (void)self;
    if (!PyArg_ParseTuple(args, "i", &backend)) return NULL;
    const bn_isa_row *row = bn_isa_row_of(backend);
    if (!row) Py_RETURN_NONE;
    return Py_BuildValue("{ss ss ss ss ss ss ss ss ss ss ss}", "isa", row->name, "tiles",
                         row->tiles->name, "pack", row->pack->name, "planes", row->planes->name,
                         "threshold", row->threshold->name, "int_gemm", row->int_gemm->name,
                         "transform", row->transform->name, "probe", row->probe->name,
                         "first_dense_float", row->float_dense->name,
                         "conv2d_float", row->float_conv->name, "pool_float",
                         row->float_pool->name);
}

static PyObject *py_get_num_threads(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    return PyLong_FromLong(bn_get_num_threads());
}

static PyObject *py_set_num_threads(PyObject *self, PyObject *args) {
    int n;
    (void)self;
    if (!PyArg_ParseTuple(args, "i", &n)) return NULL;
    if (n < 1) return PyErr_Format(PyExc_ValueError, "set_num_threads: n must be >= 1, got %d", n);
    bn_set_num_threads(n);
    Py_RETURN_NONE;
}

static PyObject *py_pool_selftest(PyObject *self, PyObject *args) {
    long jobs, bad;
    int threads;
    (void)self;
    if (!PyArg_ParseTuple(args, "li", &jobs, &threads)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    bad = bn_pool_selftest(jobs, threads);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(bad);
}

static PyMethodDef core_methods[] = {
    {"pack", py_pack, METH_VARARGS, "pack(x, dtype_code, rows, k, out): bit = x >= 0"},
    {"unpack", py_unpack, METH_VARARGS, "unpack(p, rows, k, out): +-1 int8"},
    {"pad_bits_clear", py_pad_bits_clear, METH_VARARGS, "pad_bits_clear(p, rows, k) -> bool"},
    {"bgemm", py_bgemm, METH_VARARGS, "bgemm(a, w, m, n, k, out[, panels])"},
    {"bgemm_threshold", py_bgemm_threshold, METH_VARARGS,
     "bgemm_threshold(a, w, m, n, k, thresh, flip, out[, panels])"},
    {"threshold_pack", py_threshold_pack, METH_VARARGS,
     "threshold_pack(x, rows, n, thresh, flip, out)"},
    {"bconv2d", py_bconv2d, METH_VARARGS, "bconv2d(x, w, geometry, pad_mode, out)"},
    {"bconv2d_threshold", py_bconv2d_threshold, METH_VARARGS,
     "bconv2d_threshold(x, w, geometry, pad_mode, thresh, flip, out[, wpre, panels, kvec])"},
    {"bconv2d_threshold_maxpool", py_bconv2d_threshold_maxpool, METH_VARARGS,
     "bconv2d_threshold_maxpool(x, w, geometry, pad_mode, thresh, flip, pool, out[, wpre, "
     "panels, kvec])"},
    {"bgemm_transform", py_bgemm_transform, METH_VARARGS,
     "bgemm_transform(a, w, m, n, k, kinds, params, residual, y, thresh, flip, bits[, panels])"},
    {"bconv2d_transform", py_bconv2d_transform, METH_VARARGS,
     "bconv2d_transform(x, w, geometry, pad_mode, kinds, params, residual, y, thresh, flip, bits"
     "[, wpre, panels, kvec])"},
    {"conv_prepare", py_conv_prepare, METH_VARARGS,
     "conv_prepare(w, geometry, pad_mode) -> (wpre, panels, kvec): a binary conv's weight tables"},
    {"sign_pack", py_sign_pack, METH_VARARGS, "sign_pack(x, rows, c, thresh, flip, bits)"},
    {"xor_popcount_probe", py_xor_popcount_probe, METH_VARARGS,
     "xor_popcount_probe(iterations, threads) -> bit-MACs done, in registers (time the call)"},
    {"bmaxpool2d", py_bmaxpool2d, METH_VARARGS, "bmaxpool2d(x, geometry, and_mask, out)"},
    {"maxpool2d_int", py_maxpool2d_int, METH_VARARGS, "maxpool2d_int(x, geometry, out)"},
    {"pool2d_float", py_pool2d_float, METH_VARARGS,
     "pool2d_float(x, geometry, is_max, ceil_mode, count_include_pad, out): float32 NHWC pools"},
    {"bitplane_gemm", py_bitplane_gemm, METH_VARARGS,
     "bitplane_gemm(x_u8, w, m, n, k, out[, wpop, panels])"},
    {"bitplane_prepare", py_bitplane_prepare, METH_VARARGS,
     "bitplane_prepare(w, n, k) -> (wpop, panels)"},
    {"int_gemm", py_int_gemm, METH_VARARGS, "int_gemm(x_u8, w, m, n, k, out[, lanes, quads])"},
    {"int_prepare", py_int_prepare, METH_VARARGS, "int_prepare(w, n, k) -> (lanes, quads)"},
    {"int_conv_threshold", py_int_conv_threshold, METH_VARARGS,
     "int_conv_threshold(x_u8, w, geometry, rows, cols, thresh, row_class, col_class, flip, out)"},
    {"first_dense_float", py_first_dense_float, METH_VARARGS,
     "first_dense_float(x, is_float64, w, m, n, k, out[, panels])"},
    {"first_dense_float_sign", py_first_dense_float_sign, METH_VARARGS,
     "first_dense_float_sign(x, w, bias, thresh, flip, m, n, k, out[, panels])"},
    {"conv2d_float", py_conv2d_float, METH_VARARGS,
     "conv2d_float(x, panels, bias, geometry, out): float32 NHWC convolution, zero padding"},
    {"conv2d_float_sign", py_conv2d_float_sign, METH_VARARGS,
     "conv2d_float_sign(x, is_float64, is_nchw, pad_value, panels, geometry, bias, thresh, flip, "
     "out): the float first conv, bits out"},
    {"fma_probe", py_fma_probe, METH_VARARGS,
     "fma_probe(iterations, threads) -> float64 multiply-adds done, in registers (time the call)"},
    {"backend_supported", py_backend_supported, METH_VARARGS, "backend_supported(code) -> bool"},
    {"get_backend", py_get_backend, METH_NOARGS, "get_backend() -> code"},
    {"set_backend", py_set_backend, METH_VARARGS, "set_backend(code)"},
    {"kernel_table", py_kernel_table, METH_VARARGS,
     "kernel_table(code) -> {'isa': name, op: kernel variant} of a supported ISA row, else None"},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "get_num_threads() -> int"},
    {"set_num_threads", py_set_num_threads, METH_VARARGS, "set_num_threads(n)"},
    {"pool_selftest", py_pool_selftest, METH_VARARGS,
     "pool_selftest(jobs, threads) -> number of misbehaving thread-pool jobs (0 expected)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "_core", "binarynet XNOR-popcount kernels", -1, core_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void) {
    PyObject *m = PyModule_Create(&core_module);
    if (!m) return NULL;
    if (PyModule_AddIntConstant(m, "PORTABLE", BN_PORTABLE) ||
        PyModule_AddIntConstant(m, "AVX2", BN_AVX2) ||
        PyModule_AddIntConstant(m, "AVX512", BN_AVX512) ||
        PyModule_AddIntConstant(m, "F32", BN_F32) || PyModule_AddIntConstant(m, "F64", BN_F64) ||
        PyModule_AddIntConstant(m, "I8", BN_I8) || PyModule_AddIntConstant(m, "U8", BN_U8) ||
        PyModule_AddIntConstant(m, "PAD_ZERO", BN_PAD_ZERO) ||
        PyModule_AddIntConstant(m, "PAD_ONE", BN_PAD_ONE) ||
        PyModule_AddIntConstant(m, "PAD_MINUS_ONE", BN_PAD_MINUS_ONE)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
