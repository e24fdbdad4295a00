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
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "core.h"

#include <string.h>

/* ---- helpers -------------------------------------------------------------------------------- */
/* *out = v[0] * ... * v[n-1]; OverflowError when it does not fit Py_ssize_t. */
static int size_product(const char *op, const char *what, const size_t *v, int n, size_t *out) {
    size_t p = 1;
    for (int i = 0; i < n; ++i) {
        if (__builtin_mul_overflow(p, v[i], &p) || p > (size_t)PY_SSIZE_T_MAX) {
            PyErr_Format(PyExc_OverflowError, "%s: the size of %s overflows", op, what);
            return -1;
        }
    }
    *out = p;
    return 0;
}

/* The buffer holds exactly dims[0] * ... * dims[n-1] items of `itemsize` bytes, aligned. */
static int check_buffer(const char *op, const char *name, const Py_buffer *b, size_t itemsize,
                        const size_t *dims, int n) {
    size_t count, bytes;
    if (size_product(op, name, dims, n, &count) || size_product(op, name, (size_t[]){count, itemsize}, 2, &bytes))
        return -1;
    if ((size_t)b->len != bytes) {
        PyErr_Format(PyExc_ValueError, "%s: buffer %s holds %zd bytes, expected %zu", op, name,
                     b->len, bytes);
        return -1;
    }
    if ((uintptr_t)b->buf % itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: buffer %s is not aligned to %zu bytes", op, name,
                     itemsize);
        return -1;
    }
    return 0;
}
#define CHECK_BUFFER(op, name, b, itemsize, ...)                                                 \
    check_buffer(op, name, b, itemsize, (const size_t[]){__VA_ARGS__},                           \
                 (int)(sizeof((const size_t[]){__VA_ARGS__}) / sizeof(size_t)))

static int check_sizes(const char *op, Py_ssize_t const *v, int n) {
    for (int i = 0; i < n; ++i) {
        if (v[i] < 1) {
            PyErr_Format(PyExc_ValueError, "%s: sizes must be >= 1, got %zd", op, v[i]);
            return -1;
        }
    }
    return 0;
}

/* A bit length whose +-1 sums must fit the int32 results: k <= max. */
static int check_length(const char *op, const char *name, Py_ssize_t k, Py_ssize_t max) {
    if (k > max) {
        PyErr_Format(PyExc_OverflowError, "%s: %s = %zd is too large, the int32 sums need "
                     "%s <= %zd", op, name, k, name, max);
        return -1;
    }
    return 0;
}

/* NULL with MemoryError or OverflowError for a driver's error code, else None. */
static PyObject *driver_result(const char *op, int rc) {
    if (rc == BN_EOVERFLOW)
        return PyErr_Format(PyExc_OverflowError, "%s: the work buffers' size overflows", op);
    if (rc)
        return PyErr_Format(PyExc_MemoryError, "%s: out of memory for work buffers", op);
    return Py_NewRef(Py_None);
}

#define RELEASE(...)                                                                             \
    for (Py_buffer *bufs_[] = {__VA_ARGS__}, **b_ = bufs_;                                       \
         b_ < bufs_ + sizeof(bufs_) / sizeof(bufs_[0]); ++b_)                                    \
    PyBuffer_Release(*b_)

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
/* m, n, k >= 1, k small enough for int32 dot products, a and w rows of ceil(k/64) words. */
static int check_dense(const char *op, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                       const Py_buffer *a, const Py_buffer *w) {
    Py_ssize_t sizes[] = {m, n, k};
    const size_t kw = bn_words((size_t)k);
    if (check_sizes(op, sizes, 3) || check_length(op, "k", k, INT32_MAX)) return -1;
    if (CHECK_BUFFER(op, "a", a, 8, (size_t)m, kw)) return -1;
    return CHECK_BUFFER(op, "w", w, 8, (size_t)n, kw);
}

static PyObject *py_bgemm(PyObject *self, PyObject *args) {
    Py_buffer a, w, out;
    Py_ssize_t m, n, k;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*nnnw*", &a, &w, &m, &n, &k, &out)) return NULL;
    PyObject *ret = NULL;
    if (!check_dense("bgemm", m, n, k, &a, &w) &&
        !CHECK_BUFFER("bgemm", "out", &out, 4, (size_t)m, (size_t)n)) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = bn_bgemm((const uint64_t *)a.buf, (const uint64_t *)w.buf, (size_t)m, (size_t)n,
                      (size_t)k, (int32_t *)out.buf);
        Py_END_ALLOW_THREADS
        ret = driver_result("bgemm", rc);
    }
    RELEASE(&a, &w, &out);
    return ret;
}

static PyObject *py_bgemm_threshold(PyObject *self, PyObject *args) {
    Py_buffer a, w, thresh, flip, out;
    Py_ssize_t m, n, k;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*nnny*y*w*", &a, &w, &m, &n, &k, &thresh, &flip, &out))
        return NULL;
    PyObject *ret = NULL;
    const char *op = "bgemm_threshold";
    if (!check_dense(op, m, n, k, &a, &w) && !CHECK_BUFFER(op, "thresh", &thresh, 4, (size_t)n) &&
        !CHECK_BUFFER(op, "flip", &flip, 1, (size_t)n) &&
        !CHECK_BUFFER(op, "out", &out, 8, (size_t)m, bn_words((size_t)n))) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = bn_bgemm_threshold((const uint64_t *)a.buf, (const uint64_t *)w.buf, (size_t)m,
                                (size_t)n, (size_t)k, (const int32_t *)thresh.buf,
                                (const uint8_t *)flip.buf, (uint64_t *)out.buf);
        Py_END_ALLOW_THREADS
        ret = driver_result(op, rc);
    }
    RELEASE(&a, &w, &thresh, &flip, &out);
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
/* Output size of one axis, (size + 2 pad - (dil (kernel - 1) + 1)) / stride + 1, every step
 * checked: the padded extent and the dilated kernel span must fit Py_ssize_t, which keeps every
 * tap coordinate conv.c computes (in int64) in range. */
static int conv_axis(const char *op, const char *axis, size_t size, size_t kernel, size_t stride,
                     size_t pad, size_t dil, size_t *out) {
    size_t padded, span;
    if (__builtin_mul_overflow(pad, 2, &padded) || __builtin_add_overflow(padded, size, &padded) ||
        padded > (size_t)PY_SSIZE_T_MAX) {
        PyErr_Format(PyExc_OverflowError, "%s: the padded input %s (%s + 2 * padding) overflows",
                     op, axis, axis);
        return -1;
    }
    if (__builtin_mul_overflow(dil, kernel - 1, &span) || __builtin_add_overflow(span, 1, &span) ||
        span > (size_t)PY_SSIZE_T_MAX) {
        PyErr_Format(PyExc_OverflowError, "%s: the dilated kernel %s (dilation * (kernel - 1) + 1) "
                     "overflows", op, axis);
        return -1;
    }
    if (padded < span) {
        PyErr_Format(PyExc_ValueError, "%s: kernel does not fit the input", op);
        return -1;
    }
    *out = (padded - span) / stride + 1;
    return 0;
}

/* geometry: (n, h, w, c, o, kh, kw, sh, sw, ph, pw, dh, dw) */
static int parse_conv(const char *op, PyObject *geom, int pad_mode, bn_conv_shape *s) {
    Py_ssize_t g[13];
    if (!PyArg_ParseTuple(geom, "nnnnnnnnnnnnn", &g[0], &g[1], &g[2], &g[3], &g[4], &g[5], &g[6],
                          &g[7], &g[8], &g[9], &g[10], &g[11], &g[12]))
        return -1;
    if (check_sizes(op, g, 9) || check_sizes(op, g + 11, 2)) return -1;
    if (g[9] < 0 || g[10] < 0 || pad_mode < BN_PAD_ZERO || pad_mode > BN_PAD_MINUS_ONE) {
        PyErr_Format(PyExc_ValueError, "%s: bad padding or pad mode", op);
        return -1;
    }
    s->n = (size_t)g[0]; s->h = (size_t)g[1]; s->w = (size_t)g[2]; s->c = (size_t)g[3];
    s->o = (size_t)g[4]; s->kh = (size_t)g[5]; s->kw = (size_t)g[6];
    s->sh = (size_t)g[7]; s->sw = (size_t)g[8]; s->ph = (size_t)g[9]; s->pw = (size_t)g[10];
    s->dh = (size_t)g[11]; s->dw = (size_t)g[12];
    s->cw = bn_words(s->c);
    s->pad_mode = pad_mode;
    size_t k;
    if (size_product(op, "kernel taps x channels", (size_t[]){s->kh, s->kw, s->c}, 3, &k) ||
        check_length(op, "kh * kw * c", (Py_ssize_t)k, INT32_MAX))
        return -1;
    return conv_axis(op, "height", s->h, s->kh, s->sh, s->ph, s->dh, &s->ho) ||
           conv_axis(op, "width", s->w, s->kw, s->sw, s->pw, s->dw, &s->wo);
}

static int check_conv_inputs(const char *op, const bn_conv_shape *s, const Py_buffer *x,
                             const Py_buffer *w) {
    if (CHECK_BUFFER(op, "x", x, 8, s->n, s->h, s->w, s->cw)) return -1;
    return CHECK_BUFFER(op, "w", w, 8, s->o, s->kh, s->kw, s->cw);
}

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

static PyObject *py_bconv2d_threshold(PyObject *self, PyObject *args) {
    Py_buffer x, w, thresh, flip, out;
    PyObject *geom;
    int pad_mode;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*O!iy*y*w*", &x, &w, &PyTuple_Type, &geom, &pad_mode, &thresh,
                          &flip, &out))
        return NULL;
    PyObject *ret = NULL;
    bn_conv_shape s;
    const char *op = "bconv2d_threshold";
    if (!parse_conv(op, geom, pad_mode, &s) && !check_conv_inputs(op, &s, &x, &w) &&
        !CHECK_BUFFER(op, "thresh", &thresh, 4, s.o) && !CHECK_BUFFER(op, "flip", &flip, 1, s.o) &&
        !CHECK_BUFFER(op, "out", &out, 8, s.n, s.ho, s.wo, bn_words(s.o))) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = bn_bconv2d_threshold(&s, (const uint64_t *)x.buf, (const uint64_t *)w.buf,
                                  (const int32_t *)thresh.buf, (const uint8_t *)flip.buf,
                                  (uint64_t *)out.buf);
        Py_END_ALLOW_THREADS
        ret = driver_result(op, rc);
    }
    RELEASE(&x, &w, &thresh, &flip, &out);
    return ret;
}

static PyObject *py_bconv2d_threshold_maxpool(PyObject *self, PyObject *args) {
    Py_buffer x, w, thresh, flip, out;
    PyObject *geom;
    int pad_mode;
    Py_ssize_t pool[4]; /* kh, kw, sh, sw */
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*O!iy*y*(nnnn)w*", &x, &w, &PyTuple_Type, &geom, &pad_mode,
                          &thresh, &flip, &pool[0], &pool[1], &pool[2], &pool[3], &out))
        return NULL;
    PyObject *ret = NULL;
    bn_conv_shape s;
    const char *op = "bconv2d_threshold_maxpool";
    if (!parse_conv(op, geom, pad_mode, &s) && !check_sizes(op, pool, 4) &&
        !check_conv_inputs(op, &s, &x, &w) && !CHECK_BUFFER(op, "thresh", &thresh, 4, s.o) &&
        !CHECK_BUFFER(op, "flip", &flip, 1, s.o)) {
        if ((size_t)pool[0] > s.ho || (size_t)pool[1] > s.wo) {
            PyErr_Format(PyExc_ValueError, "%s: pool kernel larger than the conv output", op);
        } else {
            const size_t hp = (s.ho - (size_t)pool[0]) / (size_t)pool[2] + 1;
            const size_t wp = (s.wo - (size_t)pool[1]) / (size_t)pool[3] + 1;
            if (!CHECK_BUFFER(op, "out", &out, 8, s.n, hp, wp, bn_words(s.o))) {
                int rc;
                Py_BEGIN_ALLOW_THREADS
                rc = bn_bconv2d_threshold_maxpool(
                    &s, (const uint64_t *)x.buf, (const uint64_t *)w.buf,
                    (const int32_t *)thresh.buf, (const uint8_t *)flip.buf, (size_t)pool[0],
                    (size_t)pool[1], (size_t)pool[2], (size_t)pool[3], (uint64_t *)out.buf);
                Py_END_ALLOW_THREADS
                ret = driver_result(op, rc);
            }
        }
    }
    RELEASE(&x, &w, &thresh, &flip, &out);
    return ret;
}

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

static PyObject *py_bgemm_transform(PyObject *self, PyObject *args) {
    Py_buffer a, w;
    Py_ssize_t m, n, k;
    PyObject *objs[7];
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*nnnOOOOOOO", &a, &w, &m, &n, &k, &objs[0], &objs[1],
                          &objs[2], &objs[3], &objs[4], &objs[5], &objs[6]))
        return NULL;
    PyObject *ret = NULL;
    const char *op = "bgemm_transform";
    transform_bufs b;
    bn_transform t;
    if (!get_transform_buffers(objs, &b) && !check_dense(op, m, n, k, &a, &w) &&
        !check_transform(op, &b, (size_t)m, (size_t)n, &t)) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = bn_bgemm_transform((const uint64_t *)a.buf, (const uint64_t *)w.buf, (size_t)m,
                                (size_t)n, (size_t)k, &t);
        Py_END_ALLOW_THREADS
        ret = driver_result(op, rc);
    }
    release_transform(&b);
    RELEASE(&a, &w);
    return ret;
}

static PyObject *py_bconv2d_transform(PyObject *self, PyObject *args) {
    Py_buffer x, w;
    PyObject *geom, *objs[7];
    int pad_mode;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*O!iOOOOOOO", &x, &w, &PyTuple_Type, &geom, &pad_mode,
                          &objs[0], &objs[1], &objs[2], &objs[3], &objs[4], &objs[5], &objs[6]))
        return NULL;
    PyObject *ret = NULL;
    const char *op = "bconv2d_transform";
    transform_bufs b;
    bn_conv_shape s;
    bn_transform t;
    size_t count;
    if (!get_transform_buffers(objs, &b) && !parse_conv(op, geom, pad_mode, &s) &&
        !check_conv_inputs(op, &s, &x, &w) &&
        !size_product(op, "the output", (size_t[]){s.n, s.ho, s.wo, s.o}, 4, &count) &&
        !check_transform(op, &b, s.n * s.ho * s.wo, s.o, &t)) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = bn_bconv2d_transform(&s, (const uint64_t *)x.buf, (const uint64_t *)w.buf, &t);
        Py_END_ALLOW_THREADS
        ret = driver_result(op, rc);
    }
    release_transform(&b);
    RELEASE(&x, &w);
    return ret;
}

/* sign_pack(x, rows, c, thresh, flip, bits): float32 rows -> packed signs */
static PyObject *py_sign_pack(PyObject *self, PyObject *args) {
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

/* ---- first layer ---------------------------------------------------------------------------- */
typedef int (*first_layer_fn)(const uint8_t *, const uint64_t *, size_t, size_t, size_t,
                              int32_t *);

static PyObject *first_layer(const char *op, first_layer_fn fn, PyObject *args) {
    Py_buffer x, w, out;
    Py_ssize_t m, n, k;
    if (!PyArg_ParseTuple(args, "y*y*nnnw*", &x, &w, &m, &n, &k, &out)) return NULL;
    PyObject *ret = NULL;
    Py_ssize_t sizes[] = {m, n, k};
    if (!check_sizes(op, sizes, 3) && !check_length(op, "k", k, BN_FIRST_LAYER_MAX_K) &&
        !CHECK_BUFFER(op, "x_u8", &x, 1, (size_t)m, (size_t)k) &&
        !CHECK_BUFFER(op, "w", &w, 8, (size_t)n, bn_words((size_t)k)) &&
        !CHECK_BUFFER(op, "out", &out, 4, (size_t)m, (size_t)n)) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = fn((const uint8_t *)x.buf, (const uint64_t *)w.buf, (size_t)m, (size_t)n, (size_t)k,
                (int32_t *)out.buf);
        Py_END_ALLOW_THREADS
        ret = driver_result(op, rc);
    }
    RELEASE(&x, &w, &out);
    return ret;
}

static PyObject *py_bitplane_gemm(PyObject *self, PyObject *args) {
    (void)self;
    return first_layer("bitplane_gemm", bn_bitplane_gemm, args);
}

static PyObject *py_int_gemm(PyObject *self, PyObject *args) {
    (void)self;
    return first_layer("int_gemm", bn_int_gemm, args);
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

static PyObject *py_int_conv_threshold(PyObject *self, PyObject *args) {
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
                        0, 0, (const int32_t *)thresh.buf, (size_t)nc, (const int32_t *)rows.buf,
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

/* first_dense_float(x, f64, w, m, n, k, out): float64 sums of float32/64 rows x +-1 weights */
static PyObject *py_first_dense_float(PyObject *self, PyObject *args) {
    Py_buffer x, w, out;
    Py_ssize_t m, n, k;
    int f64;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*py*nnnw*", &x, &f64, &w, &m, &n, &k, &out)) return NULL;
    PyObject *ret = NULL;
    Py_ssize_t sizes[] = {m, n, k};
    const char *op = "first_dense_float";
    if (!check_sizes(op, sizes, 3) && !check_length(op, "k", k, INT32_MAX) &&
        !CHECK_BUFFER(op, "x", &x, f64 ? 8 : 4, (size_t)m, (size_t)k) &&
        !CHECK_BUFFER(op, "w", &w, 8, (size_t)n, bn_words((size_t)k)) &&
        !CHECK_BUFFER(op, "out", &out, 8, (size_t)m, (size_t)n)) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = bn_first_dense_float(x.buf, f64, (const uint64_t *)w.buf, (size_t)m, (size_t)n,
                                  (size_t)k, (double *)out.buf);
        Py_END_ALLOW_THREADS
        ret = driver_result(op, rc);
    }
    RELEASE(&x, &w, &out);
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
    return Py_BuildValue("{ss ss ss ss ss ss ss ss ss}", "isa", row->name, "tiles",
                         row->tiles->name, "pack", row->pack->name, "planes", row->planes->name,
                         "threshold", row->threshold->name, "int_gemm", row->int_gemm->name,
                         "transform", row->transform->name, "probe", row->probe->name,
                         "first_dense_float", row->float_dense->name);
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

/* xor_popcount_probe(iterations, threads) -> bit-MACs done (the caller times the call) */
#define PROBE_MAX_ITERATIONS ((Py_ssize_t)1 << 40) /* x 6144 bit-MACs x 256 threads < 2**63 */
static PyObject *py_xor_popcount_probe(PyObject *self, PyObject *args) {
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

static PyMethodDef core_methods[] = {
    {"pack", py_pack, METH_VARARGS, "pack(x, dtype_code, rows, k, out): bit = x >= 0"},
    {"unpack", py_unpack, METH_VARARGS, "unpack(p, rows, k, out): +-1 int8"},
    {"pad_bits_clear", py_pad_bits_clear, METH_VARARGS, "pad_bits_clear(p, rows, k) -> bool"},
    {"bgemm", py_bgemm, METH_VARARGS, "bgemm(a, w, m, n, k, out)"},
    {"bgemm_threshold", py_bgemm_threshold, METH_VARARGS,
     "bgemm_threshold(a, w, m, n, k, thresh, flip, out)"},
    {"threshold_pack", py_threshold_pack, METH_VARARGS,
     "threshold_pack(x, rows, n, thresh, flip, out)"},
    {"bconv2d", py_bconv2d, METH_VARARGS, "bconv2d(x, w, geometry, pad_mode, out)"},
    {"bconv2d_threshold", py_bconv2d_threshold, METH_VARARGS,
     "bconv2d_threshold(x, w, geometry, pad_mode, thresh, flip, out)"},
    {"bconv2d_threshold_maxpool", py_bconv2d_threshold_maxpool, METH_VARARGS,
     "bconv2d_threshold_maxpool(x, w, geometry, pad_mode, thresh, flip, pool, out)"},
    {"bgemm_transform", py_bgemm_transform, METH_VARARGS,
     "bgemm_transform(a, w, m, n, k, kinds, params, residual, y, thresh, flip, bits)"},
    {"bconv2d_transform", py_bconv2d_transform, METH_VARARGS,
     "bconv2d_transform(x, w, geometry, pad_mode, kinds, params, residual, y, thresh, flip, bits)"},
    {"sign_pack", py_sign_pack, METH_VARARGS, "sign_pack(x, rows, c, thresh, flip, bits)"},
    {"xor_popcount_probe", py_xor_popcount_probe, METH_VARARGS,
     "xor_popcount_probe(iterations, threads) -> bit-MACs done, in registers (time the call)"},
    {"bmaxpool2d", py_bmaxpool2d, METH_VARARGS, "bmaxpool2d(x, geometry, and_mask, out)"},
    {"maxpool2d_int", py_maxpool2d_int, METH_VARARGS, "maxpool2d_int(x, geometry, out)"},
    {"bitplane_gemm", py_bitplane_gemm, METH_VARARGS, "bitplane_gemm(x_u8, w, m, n, k, out)"},
    {"int_gemm", py_int_gemm, METH_VARARGS, "int_gemm(x_u8, w, m, n, k, out)"},
    {"int_conv_threshold", py_int_conv_threshold, METH_VARARGS,
     "int_conv_threshold(x_u8, w, geometry, rows, cols, thresh, row_class, col_class, flip, out)"},
    {"first_dense_float", py_first_dense_float, METH_VARARGS,
     "first_dense_float(x, is_float64, w, m, n, k, out)"},
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
