/* Shared by the Python bindings (module.c, bind_fused.c): argument and buffer checks.
 *
 * Every size derived from the shapes is computed with overflow checks and must fit Py_ssize_t
 * (OverflowError otherwise), and every buffer must hold exactly what the shapes say, aligned
 * for its items (ValueError otherwise), before any kernel touches memory (module.c says more).
 */
#ifndef BINARYNET_BINDINGS_H
#define BINARYNET_BINDINGS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "core.h"

#include <string.h>

/* ---- helpers -------------------------------------------------------------------------------- */
/* *out = v[0] * ... * v[n-1]; OverflowError when it does not fit Py_ssize_t. */
static inline int size_product(const char *op, const char *what, const size_t *v, int n,
                               size_t *out) {
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
static inline int check_buffer(const char *op, const char *name, const Py_buffer *b,
                               size_t itemsize, const size_t *dims, int n) {
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

static inline int check_sizes(const char *op, Py_ssize_t const *v, int n) {
    for (int i = 0; i < n; ++i) {
        if (v[i] < 1) {
            PyErr_Format(PyExc_ValueError, "%s: sizes must be >= 1, got %zd", op, v[i]);
            return -1;
        }
    }
    return 0;
}

/* A bit length whose +-1 sums must fit the int32 results: k <= max. */
static inline int check_length(const char *op, const char *name, Py_ssize_t k, Py_ssize_t max) {
    if (k > max) {
        PyErr_Format(PyExc_OverflowError, "%s: %s = %zd is too large, the int32 sums need "
                     "%s <= %zd", op, name, k, name, max);
        return -1;
    }
    return 0;
}

/* NULL with MemoryError or OverflowError for a driver's error code, else None. */
static inline PyObject *driver_result(const char *op, int rc) {
    if (rc == BN_EOVERFLOW)
        return PyErr_Format(PyExc_OverflowError, "%s: the work buffers' size overflows", op);
    if (rc == BN_EPREPARED)
        return PyErr_Format(PyExc_ValueError, "%s: prepared kvec was made for another geometry",
                            op);
    if (rc)
        return PyErr_Format(PyExc_MemoryError, "%s: out of memory for work buffers", op);
    return Py_NewRef(Py_None);
}

/* The buffer of an optional argument (None: b->obj stays NULL, which RELEASE skips). */
static inline int optional_buffer(PyObject *o, Py_buffer *b) {
    return o == Py_None ? 0 : PyObject_GetBuffer(o, b, PyBUF_SIMPLE);
}

#define RELEASE(...)                                                                             \
    for (Py_buffer *bufs_[] = {__VA_ARGS__}, **b_ = bufs_;                                       \
         b_ < bufs_ + sizeof(bufs_) / sizeof(bufs_[0]); ++b_)                                    \
    PyBuffer_Release(*b_)

/* m, n, k >= 1, k small enough for int32 dot products, a and w rows of ceil(k/64) words. */
static inline int check_dense(const char *op, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                       const Py_buffer *a, const Py_buffer *w) {
    Py_ssize_t sizes[] = {m, n, k};
    const size_t kw = bn_words((size_t)k);
    if (check_sizes(op, sizes, 3) || check_length(op, "k", k, INT32_MAX)) return -1;
    if (CHECK_BUFFER(op, "a", a, 8, (size_t)m, kw)) return -1;
    return CHECK_BUFFER(op, "w", w, 8, (size_t)n, kw);
}

/* Output size of one axis, (size + 2 pad - (dil (kernel - 1) + 1)) / stride + 1, every step
 * checked: the padded extent and the dilated kernel span must fit Py_ssize_t, which keeps every
 * tap coordinate conv.c computes (in int64) in range. */
static inline int conv_axis(const char *op, const char *axis, size_t size, size_t kernel, size_t stride,
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
static inline int parse_conv(const char *op, PyObject *geom, int pad_mode, bn_conv_shape *s) {
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

static inline int check_conv_inputs(const char *op, const bn_conv_shape *s, const Py_buffer *x,
                             const Py_buffer *w) {
    if (CHECK_BUFFER(op, "x", x, 8, s->n, s->h, s->w, s->cw)) return -1;
    return CHECK_BUFFER(op, "w", w, 8, s->o, s->kh, s->kw, s->cw);
}


/* The optional prepared panels of a binary dense (None, or conv_prepare's panels of the 1x1
 * conv of its m rows: bn_panel_words(n, words(k)) words), checked on every call; after
 * check_dense. */
static inline int get_dense_panels(const char *op, Py_ssize_t n, Py_ssize_t k, PyObject *o,
                                   Py_buffer *b) {
    if (optional_buffer(o, b)) return -1;
    return b->obj ? CHECK_BUFFER(op, "panels", b, 8,
                                 bn_panel_words((size_t)n, bn_words((size_t)k))) : 0;
}

/* The optional prepared tables of a binary conv (conv_prepare's wpre, panels, kvec: each None
 * or a buffer), checked on every call: wpre and panels of the sizes the geometry gives, kvec
 * of whole int32 (its class count is the driver's check: BN_EPREPARED). *prep stays NULL when
 * all three are None; release b's buffers with RELEASE_CONV_PREP. */
typedef struct {
    Py_buffer wpre, panels, kvec;
    bn_conv_weights w;
} conv_prep_bufs;
#define RELEASE_CONV_PREP(b) RELEASE(&(b)->wpre, &(b)->panels, &(b)->kvec)

static inline int get_conv_prep(const char *op, const bn_conv_shape *s, PyObject *const objs[3],
                                conv_prep_bufs *b, const bn_conv_weights **prep) {
    memset(b, 0, sizeof(*b));
    *prep = NULL;
    if (optional_buffer(objs[0], &b->wpre) || optional_buffer(objs[1], &b->panels) ||
        optional_buffer(objs[2], &b->kvec))
        return -1;
    if ((b->wpre.obj && CHECK_BUFFER(op, "wpre", &b->wpre, 4, s->o, (s->kh + 1) * (s->kw + 1))) ||
        (b->panels.obj && CHECK_BUFFER(op, "panels", &b->panels, 8,
                                       bn_panel_words(s->o, s->kh * s->kw * s->cw))) ||
        (b->kvec.obj && CHECK_BUFFER(op, "kvec", &b->kvec, 4, (size_t)b->kvec.len / 4)))
        return -1;
    b->w = (bn_conv_weights){(const int32_t *)b->wpre.buf, (const uint64_t *)b->panels.buf,
                             (const int32_t *)b->kvec.buf, (size_t)b->kvec.len / 4};
    if (b->wpre.obj || b->panels.obj || b->kvec.obj) *prep = &b->w;
    return 0;
}

/* bind_fused.c: the fused output transforms, sign_pack, the fused first conv, the float first
 * dense layer and the peak probe; bind_float_conv.c: the real-valued conv and its probe */
PyObject *py_bgemm_transform(PyObject *self, PyObject *args);
PyObject *py_bconv2d_transform(PyObject *self, PyObject *args);
PyObject *py_conv_prepare(PyObject *self, PyObject *args);
PyObject *py_sign_pack(PyObject *self, PyObject *args);
PyObject *py_int_conv_threshold(PyObject *self, PyObject *args);
PyObject *py_first_dense_float(PyObject *self, PyObject *args);
PyObject *py_first_dense_float_sign(PyObject *self, PyObject *args);
PyObject *py_conv2d_float(PyObject *self, PyObject *args);
PyObject *py_conv2d_float_sign(PyObject *self, PyObject *args);
PyObject *py_fma_probe(PyObject *self, PyObject *args);
PyObject *py_xor_popcount_probe(PyObject *self, PyObject *args);

#endif
