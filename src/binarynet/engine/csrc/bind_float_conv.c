/* Python bindings of the real-valued convolution (float_conv.c): conv2d_float (float32 out),
 * conv2d_float_sign (the float first conv, bits out) and fma_probe (the float32 FMA peak). The
 * shared checks are in bindings.h; every size is checked before any kernel touches memory. */
#include "bindings.h"

#include <math.h>

/* geometry (n, h, w, c, o, kh, kw, sh, sw, ph, pw, dh, dw, groups) -> s, with Ho and Wo */
static int parse_geometry(const char *op, PyObject *geom, bn_fconv_shape *s) {
    Py_ssize_t g[14];
    if (!PyArg_ParseTuple(geom, "nnnnnnnnnnnnnn", &g[0], &g[1], &g[2], &g[3], &g[4], &g[5],
                          &g[6], &g[7], &g[8], &g[9], &g[10], &g[11], &g[12], &g[13]))
        return -1;
    Py_ssize_t sizes[] = {g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[11], g[12], g[13]};
    if (check_sizes(op, sizes, 12)) return -1;
    if (g[9] < 0 || g[10] < 0) {
        PyErr_Format(PyExc_ValueError, "%s: padding must be >= 0", op);
        return -1;
    }
    *s = (bn_fconv_shape){(size_t)g[0], (size_t)g[1], (size_t)g[2], (size_t)g[3], (size_t)g[4],
                          (size_t)g[5], (size_t)g[6], (size_t)g[7], (size_t)g[8], (size_t)g[9],
                          (size_t)g[10], (size_t)g[11], (size_t)g[12], 0, 0, (size_t)g[13]};
    if (s->c % s->groups || s->o % s->groups) {
        PyErr_Format(PyExc_ValueError, "%s: groups = %zu must divide c = %zu and o = %zu", op,
                     s->groups, s->c, s->o);
        return -1;
    }
    size_t k;
    return size_product(op, "kernel taps x channels", (size_t[]){s->kh, s->kw, s->c / s->groups},
                        3, &k) ||
           conv_axis(op, "height", s->h, s->kh, s->sh, s->ph, s->dh, &s->ho) ||
           conv_axis(op, "width", s->w, s->kw, s->sw, s->pw, s->dw, &s->wo);
}

/* panels of `item`-byte floats in vectors of `lanes`: depthwise weights (KH * KW, opad), else
 * (groups, KH * KW, C/groups, opad) */
static int check_panels(const char *op, const bn_fconv_shape *s, const Py_buffer *p, size_t item,
                        size_t lanes) {
    const size_t cg = s->c / s->groups, og = s->o / s->groups;
    const int depthwise = cg == 1 && og == 1;
    const size_t width = depthwise ? s->o : og, opad = (width + lanes - 1) / lanes * lanes;
    if (depthwise) return CHECK_BUFFER(op, "panels", p, item, s->kh, s->kw, opad);
    return CHECK_BUFFER(op, "panels", p, item, s->groups, s->kh, s->kw, cg, opad);
}

/* conv2d_float(x, panels, bias, geometry, out): float32 NHWC x, float32 panels (core.h),
 * float32 bias (O,) -> float32 out (N, Ho, Wo, O) */
PyObject *py_conv2d_float(PyObject *self, PyObject *args) {
    Py_buffer x, w, bias, out;
    PyObject *geom;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*O!w*", &x, &w, &bias, &PyTuple_Type, &geom, &out))
        return NULL;
    PyObject *ret = NULL;
    const char *op = "conv2d_float";
    bn_fconv_shape s;
    if (parse_geometry(op, geom, &s) || CHECK_BUFFER(op, "x", &x, 4, s.n, s.h, s.w, s.c) ||
        check_panels(op, &s, &w, 4, BN_FCONV_LANES32) || CHECK_BUFFER(op, "bias", &bias, 4, s.o) ||
        CHECK_BUFFER(op, "out", &out, 4, s.n, s.ho, s.wo, s.o))
        goto done;
    bn_fconv_job job = {&s, x.buf, 0, 0, 0.0, NULL, (const float *)bias.buf, (float *)out.buf,
                        NULL, NULL, 0, 0, 0, 0, (const float *)w.buf, NULL, 0.0f, 0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = bn_conv2d_float(&job);
    Py_END_ALLOW_THREADS
    ret = driver_result(op, rc);
done:
    RELEASE(&x, &w, &bias, &out);
    return ret;
}

/* conv2d_float_sign(x, is_float64, is_nchw, pad_value, panels, geometry, bias, thresh, flip,
 * out): x float32 or float64, NHWC or NCHW, padded with pad_value (finite); one group; bias,
 * thresh float32 (O,), flip uint8 (O,) -> bits out uint64 (N, Ho, Wo, ceil(O/64)) */
PyObject *py_conv2d_float_sign(PyObject *self, PyObject *args) {
    Py_buffer x, w, bias, thresh, flip, out;
    PyObject *geom;
    int f64, nchw;
    double pad;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*ppdy*O!y*y*y*w*", &x, &f64, &nchw, &pad, &w, &PyTuple_Type,
                          &geom, &bias, &thresh, &flip, &out))
        return NULL;
    PyObject *ret = NULL;
    const char *op = "conv2d_float_sign";
    bn_fconv_shape s;
    if (parse_geometry(op, geom, &s)) goto done;
    if (s.groups != 1 || !isfinite(pad)) {
        PyErr_Format(PyExc_ValueError, "%s: needs groups = 1 and a finite pad value", op);
        goto done;
    }
    const size_t item = f64 ? 8 : 4;
    if ((nchw ? CHECK_BUFFER(op, "x", &x, item, s.n, s.c, s.h, s.w)
              : CHECK_BUFFER(op, "x", &x, item, s.n, s.h, s.w, s.c)) ||
        check_panels(op, &s, &w, 8, BN_FCONV_LANES) || CHECK_BUFFER(op, "bias", &bias, 4, s.o) ||
        CHECK_BUFFER(op, "thresh", &thresh, 4, s.o) || CHECK_BUFFER(op, "flip", &flip, 1, s.o) ||
        CHECK_BUFFER(op, "out", &out, 8, s.n, s.ho, s.wo, bn_words(s.o)))
        goto done;
    const bn_fconv_sign sign = {(const float *)bias.buf, (const float *)thresh.buf,
                                (const uint8_t *)flip.buf, (uint64_t *)out.buf};
    bn_fconv_job job = {&s, x.buf, f64, nchw, pad, (const double *)w.buf, NULL, NULL, &sign,
                        NULL, 0, 0, 0, 0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = bn_conv2d_float(&job);
    Py_END_ALLOW_THREADS
    ret = driver_result(op, rc);
done:
    RELEASE(&x, &w, &bias, &thresh, &flip, &out);
    return ret;
}

/* fma_probe(iterations, threads) -> float32 multiply-adds done (the caller times the call) */
#define FMA_PROBE_MAX_ITERATIONS ((Py_ssize_t)1 << 40) /* x 192 FMAs x 256 threads < 2**63 */
PyObject *py_fma_probe(PyObject *self, PyObject *args) {
    Py_ssize_t iterations;
    int threads;
    (void)self;
    if (!PyArg_ParseTuple(args, "ni", &iterations, &threads)) return NULL;
    if (iterations < 1 || iterations > FMA_PROBE_MAX_ITERATIONS)
        return PyErr_Format(PyExc_ValueError, "fma_probe: iterations must be in [1, %zd], got "
                            "%zd", FMA_PROBE_MAX_ITERATIONS, iterations);
    if (threads < 1 || threads > BN_MAX_THREADS)
        return PyErr_Format(PyExc_ValueError, "fma_probe: threads must be in [1, %d], got %d",
                            BN_MAX_THREADS, threads);
    uint64_t done;
    Py_BEGIN_ALLOW_THREADS
    done = bn_fma_probe((uint64_t)iterations, threads);
    Py_END_ALLOW_THREADS
    return PyLong_FromUnsignedLongLong(done);
}
