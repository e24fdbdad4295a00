/* Python bindings of the fused kernels (the rest are in module.c, the shared checks in
 * bindings.h): bgemm_transform / bconv2d_transform / sign_pack (transform.c), int_conv_threshold
 * (first_layer.c), first_dense_float (float_layer.c), xor_popcount_probe (probe.c) and
 * conv_prepare (conv_plan.c: a binary conv's weight tables made once); conv2d_float's are in
 * bind_float_conv.c. */
#include "bindings.h"

#include <stdlib.h>

/* ---- output transform (transform.c) ---------------------------------------------------------- */
/* The transform's buffers: kinds (bytes), params (float32 rows), then optional (None) residual,
 * y, thresh, flip and bits. */
typedef struct {
    Py_buffer kinds, params, residual, y, thresh, flip, bits;
} transform_bufs;

static int opt_buffer(PyObject *obj, Py_buffer *b, int flags) {
    b->obj = NULL;
    b->buf = NULL;
    return obj == Py_None ? 0 : PyObject_GetBuffer(obj, b, flags);
}

static void release_transform(transform_bufs *b) {
    Py_buffer *all[] = {&b->kinds, &b->params, &b->residual, &b->y, &b->thresh, &b->flip, &b->bits};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); ++i)
        if (all[i]->obj) PyBuffer_Release(all[i]);
}

/* Gets the buffers of objs[7] (kinds, params, residual, y, thresh, flip, bits); on failure the
 * ones already got are released by release_transform (unset ones have obj NULL). */
static int get_transform_buffers(PyObject *const objs[7], transform_bufs *b) {
    Py_buffer *all[] = {&b->kinds, &b->params, &b->residual, &b->y, &b->thresh, &b->flip, &b->bits};
    for (int i = 0; i < 7; ++i) all[i]->obj = NULL;
    for (int i = 0; i < 7; ++i) {
        const int writable = i == 3 || i == 6;
        if (i < 2 && objs[i] == Py_None) {
            PyErr_SetString(PyExc_TypeError, "transform: kinds and params are required");
            return -1;
        }
        if (opt_buffer(objs[i], all[i], writable ? PyBUF_WRITABLE : PyBUF_SIMPLE)) return -1;
    }
    return 0;
}

/* Checks the transform's buffers for `rows` output rows of o channels and fills t. */
static int check_transform(const char *op, transform_bufs *b, size_t rows, size_t o,
                           bn_transform *t) {
    const size_t nsteps = (size_t)b->kinds.len;
    const uint8_t *kinds = (const uint8_t *)b->kinds.buf;
    size_t prows = 0, adds = 0;
    if (nsteps > BN_MAX_STEPS) {
        PyErr_Format(PyExc_ValueError, "%s: at most %d steps, got %zu", op, BN_MAX_STEPS, nsteps);
        return -1;
    }
    for (size_t i = 0; i < nsteps; ++i) {
        if (kinds[i] >= BN_NUM_STEP_KINDS) {
            PyErr_Format(PyExc_ValueError, "%s: unknown step kind %d", op, (int)kinds[i]);
            return -1;
        }
        prows += (size_t)bn_step_params(kinds[i]);
        adds += kinds[i] == BN_STEP_ADD;
    }
    if (adds > 1 || (adds == 1) != (b->residual.obj != NULL)) {
        PyErr_Format(PyExc_ValueError, "%s: a residual goes with exactly one add step", op);
        return -1;
    }
    if ((b->thresh.obj != NULL) != (b->flip.obj != NULL) ||
        (b->thresh.obj != NULL) != (b->bits.obj != NULL) || (!b->y.obj && !b->bits.obj)) {
        PyErr_Format(PyExc_ValueError, "%s: give y, or thresh, flip and bits, or both", op);
        return -1;
    }
    if ((prows && CHECK_BUFFER(op, "params", &b->params, 4, prows, o)) ||
        (!prows && b->params.len != 0) ||
        (b->residual.obj && CHECK_BUFFER(op, "residual", &b->residual, 4, rows, o)) ||
        (b->y.obj && CHECK_BUFFER(op, "y", &b->y, 4, rows, o)) ||
        (b->thresh.obj && (CHECK_BUFFER(op, "thresh", &b->thresh, 4, o) ||
                           CHECK_BUFFER(op, "flip", &b->flip, 1, o) ||
                           CHECK_BUFFER(op, "bits", &b->bits, 8, rows, bn_words(o))))) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "%s: params must be empty without steps", op);
        return -1;
    }
    memset(t, 0, sizeof(*t));
    t->o = o;
    t->nsteps = (int)nsteps;
    t->kinds = kinds;
    t->params = (const float *)b->params.buf;
    t->residual = (const float *)b->residual.buf;
    t->y = (float *)b->y.buf;
    t->thresh = (const float *)b->thresh.buf;
    t->flip = (const uint8_t *)b->flip.buf;
    t->bits = (uint64_t *)b->bits.buf;
    return 0;
}

/* bgemm_transform(a, w, m, n, k, <transform arguments>[, panels]): panels (or None) made once
 * (get_dense_panels). */
PyObject *py_bgemm_transform(PyObject *self, PyObject *args) {
    Py_buffer a, w, panels = {0};
    Py_ssize_t m, n, k;
    PyObject *objs[7], *panels_obj = Py_None;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*nnnOOOOOOO|O", &a, &w, &m, &n, &k, &objs[0], &objs[1],
                          &objs[2], &objs[3], &objs[4], &objs[5], &objs[6], &panels_obj))
        return NULL;
    PyObject *ret = NULL;
    const char *op = "bgemm_transform";
    transform_bufs b;
    bn_transform t;
    if (!get_transform_buffers(objs, &b) && !check_dense(op, m, n, k, &a, &w) &&
        !check_transform(op, &b, (size_t)m, (size_t)n, &t) &&
        !get_dense_panels(op, n, k, panels_obj, &panels)) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = bn_bgemm_transform((const uint64_t *)a.buf, (const uint64_t *)w.buf,
                                (const uint64_t *)panels.buf, (size_t)m, (size_t)n, (size_t)k, &t);
        Py_END_ALLOW_THREADS
        ret = driver_result(op, rc);
    }
    release_transform(&b);
    RELEASE(&a, &w, &panels);
    return ret;
}

/* bconv2d_transform(x, w, geometry, pad_mode, <transform arguments>[, wpre, panels, kvec]): the
 * prepared tables (or None) from conv_prepare(w, geometry, pad_mode). */
PyObject *py_bconv2d_transform(PyObject *self, PyObject *args) {
    Py_buffer x, w;
    PyObject *geom, *objs[7], *prep_objs[3] = {Py_None, Py_None, Py_None};
    int pad_mode;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*O!iOOOOOOO|OOO", &x, &w, &PyTuple_Type, &geom, &pad_mode,
                          &objs[0], &objs[1], &objs[2], &objs[3], &objs[4], &objs[5], &objs[6],
                          &prep_objs[0], &prep_objs[1], &prep_objs[2]))
        return NULL;
    PyObject *ret = NULL;
    const char *op = "bconv2d_transform";
    transform_bufs b;
    bn_conv_shape s;
    bn_transform t;
    size_t count;
    conv_prep_bufs pb = {0};
    const bn_conv_weights *prep;
    if (!get_transform_buffers(objs, &b) && !parse_conv(op, geom, pad_mode, &s) &&
        !check_conv_inputs(op, &s, &x, &w) &&
        !size_product(op, "the output", (size_t[]){s.n, s.ho, s.wo, s.o}, 4, &count) &&
        !check_transform(op, &b, s.n * s.ho * s.wo, s.o, &t) &&
        !get_conv_prep(op, &s, prep_objs, &pb, &prep)) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = bn_bconv2d_transform(&s, (const uint64_t *)x.buf, (const uint64_t *)w.buf, prep, &t);
        Py_END_ALLOW_THREADS
        ret = driver_result(op, rc);
    }
    RELEASE_CONV_PREP(&pb);
    release_transform(&b);
    RELEASE(&x, &w);
    return ret;
}

/* New bytes holding `len` items of `itemsize` bytes copied from src, or None where src is NULL. */
static PyObject *table_bytes(const void *src, size_t len, size_t itemsize) {
    if (!src) return Py_NewRef(Py_None);
    return PyBytes_FromStringAndSize((const char *)src, (Py_ssize_t)(len * itemsize));
}

/* conv_prepare(w, geometry, pad_mode) -> (wpre, panels, kvec), each bytes or None: the weight
 * tables a binary conv with this geometry makes per call on the current ISA row, made once. */
PyObject *py_conv_prepare(PyObject *self, PyObject *args) {
    static const char op[] = "conv_prepare";
    Py_buffer w;
    PyObject *geom;
    int pad_mode;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*O!i", &w, &PyTuple_Type, &geom, &pad_mode)) return NULL;
    PyObject *ret = NULL;
    bn_conv_shape s;
    if (!parse_conv(op, geom, pad_mode, &s) &&
        !CHECK_BUFFER(op, "w", &w, 8, s.o, s.kh, s.kw, s.cw)) {
        bn_conv_tables t;
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = bn_conv_prepare(&s, (const uint64_t *)w.buf, &t);
        Py_END_ALLOW_THREADS
        if (rc) {
            driver_result(op, rc);
        } else {
            PyObject *wpre = table_bytes(t.wpre, t.wpre_len, 4);
            PyObject *panels = table_bytes(t.panels, t.panels_len, 8);
            PyObject *kvec = table_bytes(t.kvec, t.kvec_len, 4);
            if (wpre && panels && kvec) ret = PyTuple_Pack(3, wpre, panels, kvec);
            Py_XDECREF(wpre);
            Py_XDECREF(panels);
            Py_XDECREF(kvec);
        }
        free(t.wpre);
        free(t.panels);
        free(t.kvec);
    }
    RELEASE(&w);
    return ret;
}

/* sign_pack(x, rows, c, thresh, flip, bits): float32 rows -> packed signs */
PyObject *py_sign_pack(PyObject *self, PyObject *args) {
    Py_buffer x, thresh, flip, out;
    Py_ssize_t rows, c;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nny*y*w*", &x, &rows, &c, &thresh, &flip, &out)) return NULL;
    PyObject *ret = NULL;
    Py_ssize_t sizes[] = {rows, c};
    const char *op = "sign_pack";
    if (!check_sizes(op, sizes, 2) && !CHECK_BUFFER(op, "x", &x, 4, (size_t)rows, (size_t)c) &&
        !CHECK_BUFFER(op, "thresh", &thresh, 4, (size_t)c) &&
        !CHECK_BUFFER(op, "flip", &flip, 1, (size_t)c) &&
        !CHECK_BUFFER(op, "out", &out, 8, (size_t)rows, bn_words((size_t)c))) {
        bn_transform t;
        memset(&t, 0, sizeof(t));
        t.thresh = (const float *)thresh.buf;
        t.flip = (const uint8_t *)flip.buf;
        t.bits = (uint64_t *)out.buf;
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = bn_sign_pack((const float *)x.buf, (size_t)rows, (size_t)c, &t);
        Py_END_ALLOW_THREADS
        ret = driver_result(op, rc);
    }
    RELEASE(&x, &thresh, &flip, &out);
    return ret;
}

/* int_conv_threshold(x, w, (n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw), R, C, thresh,
 * row_class, col_class, flip, out): the fused uint8 first conv (first_layer.c) */
static int check_classes(const char *op, const char *name, const Py_buffer *b, size_t size,
                         size_t bound) {
    if (CHECK_BUFFER(op, name, b, 4, size)) return -1;
    const int32_t *v = (const int32_t *)b->buf;
    for (size_t i = 0; i < size; ++i) {
        if (v[i] < 0 || (size_t)v[i] >= bound) {
            PyErr_Format(PyExc_ValueError, "%s: %s values must be in [0, %zu)", op, name, bound);
            return -1;
        }
    }
    return 0;
}

PyObject *py_int_conv_threshold(PyObject *self, PyObject *args) {
    Py_buffer x, w, thresh, rows, cols, flip, out;
    Py_ssize_t g[13], nr, nc;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*(nnnnnnnnnnnnn)nny*y*y*y*w*", &x, &w, &g[0], &g[1], &g[2],
                          &g[3], &g[4], &g[5], &g[6], &g[7], &g[8], &g[9], &g[10], &g[11], &g[12],
                          &nr, &nc, &thresh, &rows, &cols, &flip, &out))
        return NULL;
    PyObject *ret = NULL;
    const char *op = "int_conv_threshold";
    Py_ssize_t sizes[] = {g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[11], g[12], nr, nc};
    bn_first_conv s;
    size_t k;
    if (check_sizes(op, sizes, 13)) goto done;
    if (g[9] < 0 || g[10] < 0) {
        PyErr_Format(PyExc_ValueError, "%s: padding must be >= 0", op);
        goto done;
    }
    s = (bn_first_conv){(const uint8_t *)x.buf, (size_t)g[0], (size_t)g[1], (size_t)g[2],
                        (size_t)g[3], (size_t)g[4], (size_t)g[5], (size_t)g[6], (size_t)g[7],
                        (size_t)g[8], (size_t)g[9], (size_t)g[10], (size_t)g[11], (size_t)g[12],
                        0, 0, (const int32_t *)thresh.buf, (size_t)nr, (size_t)nc, (const int32_t *)rows.buf,
                        (const int32_t *)cols.buf, (const uint8_t *)flip.buf};
    if (size_product(op, "kernel taps x channels", (size_t[]){s.kh, s.kw, s.c}, 3, &k) ||
        check_length(op, "kh * kw * c", (Py_ssize_t)k, BN_FIRST_LAYER_MAX_K) ||
        conv_axis(op, "height", s.h, s.kh, s.sh, s.ph, s.dh, &s.ho) ||
        conv_axis(op, "width", s.w, s.kw, s.sw, s.pw, s.dw, &s.wo) ||
        CHECK_BUFFER(op, "x_u8", &x, 1, s.n, s.c, s.h, s.w) ||
        CHECK_BUFFER(op, "w", &w, 8, s.o, bn_words(k)) ||
        CHECK_BUFFER(op, "thresh", &thresh, 4, (size_t)nr, (size_t)nc, s.o) ||
        check_classes(op, "row_class", &rows, s.ho, (size_t)nr) ||
        check_classes(op, "col_class", &cols, s.wo, (size_t)nc) ||
        CHECK_BUFFER(op, "flip", &flip, 1, s.o) ||
        CHECK_BUFFER(op, "out", &out, 8, s.n, s.ho, s.wo, bn_words(s.o)))
        goto done;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = bn_int_conv_threshold(&s, (const uint64_t *)w.buf, (uint64_t *)out.buf);
    Py_END_ALLOW_THREADS
    ret = driver_result(op, rc);
done:
    RELEASE(&x, &w, &thresh, &rows, &cols, &flip, &out);
    return ret;
}

/* first_dense_float(x, f64, w, m, n, k, out[, panels]): float64 sums of float32/64 rows x +-1
 * weights; panels (or None) from bitplane_prepare(w, n, k) */
PyObject *py_first_dense_float(PyObject *self, PyObject *args) {
    Py_buffer x, w, out, panels = {0};
    PyObject *panels_obj = Py_None;
    Py_ssize_t m, n, k;
    int f64;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*py*nnnw*|O", &x, &f64, &w, &m, &n, &k, &out, &panels_obj))
        return NULL;
    PyObject *ret = NULL;
    Py_ssize_t sizes[] = {m, n, k};
    const char *op = "first_dense_float";
    if (!optional_buffer(panels_obj, &panels) && !check_sizes(op, sizes, 3) &&
        !check_length(op, "k", k, INT32_MAX) &&
        !CHECK_BUFFER(op, "x", &x, f64 ? 8 : 4, (size_t)m, (size_t)k) &&
        !CHECK_BUFFER(op, "w", &w, 8, (size_t)n, bn_words((size_t)k)) &&
        !CHECK_BUFFER(op, "out", &out, 8, (size_t)m, (size_t)n) &&
        (!panels.obj || !CHECK_BUFFER(op, "panels", &panels, 8,
                                      bn_panel_words((size_t)n, bn_words((size_t)k))))) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = bn_first_dense_float(x.buf, f64, (const uint64_t *)w.buf,
                                  (const uint64_t *)panels.buf, (size_t)m, (size_t)n, (size_t)k,
                                  (double *)out.buf);
        Py_END_ALLOW_THREADS
        ret = driver_result(op, rc);
    }
    RELEASE(&x, &w, &out, &panels);
    return ret;
}

/* first_dense_float_sign(x, w, bias, thresh, flip, m, n, k, out[, panels]): the sign bits of
 * float32 rows x times +-1 weights, float32(sum) + bias against thresh (flip: <=), equal to
 * the float64 sums' (float_layer.c); out (m, words(n)) uint64; panels as first_dense_float's */
PyObject *py_first_dense_float_sign(PyObject *self, PyObject *args) {
    Py_buffer x, w, bias, thresh, flip, out, panels = {0};
    PyObject *panels_obj = Py_None;
    Py_ssize_t m, n, k;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*nnnw*|O", &x, &w, &bias, &thresh, &flip, &m, &n, &k,
                          &out, &panels_obj))
        return NULL;
    PyObject *ret = NULL;
    Py_ssize_t sizes[] = {m, n, k};
    const char *op = "first_dense_float_sign";
    if (!optional_buffer(panels_obj, &panels) && !check_sizes(op, sizes, 3) &&
        !check_length(op, "k", k, INT32_MAX) &&
        !CHECK_BUFFER(op, "x", &x, 4, (size_t)m, (size_t)k) &&
        !CHECK_BUFFER(op, "w", &w, 8, (size_t)n, bn_words((size_t)k)) &&
        !CHECK_BUFFER(op, "bias", &bias, 4, (size_t)n) &&
        !CHECK_BUFFER(op, "thresh", &thresh, 4, (size_t)n) &&
        !CHECK_BUFFER(op, "flip", &flip, 1, (size_t)n) &&
        !CHECK_BUFFER(op, "out", &out, 8, (size_t)m, bn_words((size_t)n)) &&
        (!panels.obj || !CHECK_BUFFER(op, "panels", &panels, 8,
                                      bn_panel_words((size_t)n, bn_words((size_t)k))))) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = bn_first_dense_float_sign((const float *)x.buf, (const uint64_t *)w.buf,
                                       (const uint64_t *)panels.buf, (const float *)bias.buf,
                                       (const float *)thresh.buf, (const uint8_t *)flip.buf,
                                       (size_t)m, (size_t)n, (size_t)k, (uint64_t *)out.buf);
        Py_END_ALLOW_THREADS
        ret = driver_result(op, rc);
    }
    RELEASE(&x, &w, &bias, &thresh, &flip, &out, &panels);
    return ret;
}

/* xor_popcount_probe(iterations, threads) -> bit-MACs done (the caller times the call) */
#define PROBE_MAX_ITERATIONS ((Py_ssize_t)1 << 40) /* x 6144 bit-MACs x 256 threads < 2**63 */
PyObject *py_xor_popcount_probe(PyObject *self, PyObject *args) {
    Py_ssize_t iterations;
    int threads;
    (void)self;
    if (!PyArg_ParseTuple(args, "ni", &iterations, &threads)) return NULL;
    if (iterations < 1 || iterations > PROBE_MAX_ITERATIONS)
        return PyErr_Format(PyExc_ValueError, "xor_popcount_probe: iterations must be in [1, %zd], "
                            "got %zd", PROBE_MAX_ITERATIONS, iterations);
    if (threads < 1 || threads > BN_MAX_THREADS)
        return PyErr_Format(PyExc_ValueError, "xor_popcount_probe: threads must be in [1, %d], "
                            "got %d", BN_MAX_THREADS, threads);
    uint64_t done;
    Py_BEGIN_ALLOW_THREADS
    done = bn_xor_popcount_probe((uint64_t)iterations, threads);
    Py_END_ALLOW_THREADS
    return PyLong_FromUnsignedLongLong(done);
}
