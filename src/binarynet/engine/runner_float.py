"""The graph runner's ops of the real-valued stream (format 3), mixed into
:class:`binarynet.engine.runner.Runner`: each op through the backend's ``float_ops``
(:mod:`binarynet.engine.float_ops` on the CPU; conv_real and dense_real through the kernels'
``conv2d_float`` where they have it, with each op's weight layout kept, and the pools through
their ``maxpool2d_float`` / ``avgpool2d_float`` / ``global_avgpool_float``), and the fused steps
of the plan (:mod:`binarynet.engine.plan`) through its kernels' ``bconv2d_transform`` /
``bgemm_transform``.
"""
from __future__ import annotations

__all__ = ["FloatStreamOps", "geometry"]


def geometry(op) -> dict:
    """The keyword arguments of a binary conv kernel for ``op``."""
    return dict(stride=tuple(op["stride"]), padding=tuple(op["padding"]),
                dilation=tuple(op["dilation"]), pad_mode=op["pad_mode"])


class FloatStreamOps:
    """Needs of the host class: ``graph``, ``floats`` (the backend's float ops), ``kernels``,
    ``_t(op, role)`` (an uploaded tensor), ``_cached(key, make)`` (made once per model),
    ``_kernel_call(key, make)`` (a kernel with its constant operands bound, made once),
    ``_conv_sums`` and ``_pack_bool``."""

    def _input_float(self, i, op, x):
        return self.floats.input_float(x, self.graph["input"]["scale"],
                                       self.graph["input"]["offset"])

    def _conv_real(self, i, op, x):
        conv = getattr(self.kernels, "conv2d_float", None)  # the direct C kernel (CPU only)
        if conv is None:
            return self.floats.conv_real(x, self._t(op, "weight"), self._t(op, "bias"),
                                         *self._conv_real_geometry(op))
        args, panels = self._conv_real_args(i, op)
        return conv(self.xp.contiguous(x), *args, panels=panels)

    def _dense_real(self, i, op, x):
        if getattr(self.kernels, "conv2d_float", None) is None:
            return self.floats.dense_real(x, self._t(op, "weight"), self._t(op, "bias"))
        n, k = x.shape  # a dense layer is the 1x1 conv of a 1x1 map
        (weight, bias), panels = self._conv_real_args(i, op, dense=True)
        y = self.kernels.conv2d_float(self.xp.contiguous(x).reshape(n, 1, 1, k), weight, bias,
                                      panels=panels)
        return y.reshape(n, -1)

    @staticmethod
    def _conv_real_geometry(op) -> tuple:
        return (tuple(op["stride"]), tuple(op["padding"]), tuple(op["dilation"]), op["groups"])

    def _conv_real_args(self, i, op, dense=False) -> tuple:
        """(conv2d_float's operands after x, its weight layout) of conv_real / dense_real op i
        (a dense weight as (O, 1, 1, K)): made on the op's first run and kept."""
        def make():
            weight, bias = self._t(op, "weight"), self._t(op, "bias")
            if dense:
                args, groups = (weight.reshape(-1, 1, 1, weight.shape[1]), bias), 1
            else:
                args, groups = (weight, bias) + self._conv_real_geometry(op), op["groups"]
            return args, self.kernels.conv2d_float_panels(args[0], groups)
        return self._cached((i, "conv2d_float"), make)

    def _bconv(self, i, op, x):
        s = self._conv_sums(op, x, geometry(op))
        return self.floats.output_transform(s, self._t(op, "scale"), self._t(op, "shift"))

    def _bdense(self, i, op, x):
        s = self.kernels.bgemm(x, self._t(op, "weight"), op["in_features"])
        return self.floats.output_transform(s, self._t(op, "scale"), self._t(op, "shift"))

    def _sign(self, i, op, x):
        if hasattr(self.kernels, "sign_pack"):
            return self._kernel_call((i, "sign"), lambda: (
                "sign_pack", (self._t(op, "thresh"), self._t(op, "flip")), {}))(x)
        return self._pack_bool(self.floats.sign(x, self._t(op, "thresh"), self._t(op, "flip")))

    def _scale_shift(self, i, op, x):
        return self.floats.scale_shift(x, self._t(op, "scale"), self._t(op, "shift"))

    def _relu(self, i, op, x):
        return self.floats.relu(x)

    def _prelu(self, i, op, x):
        return self.floats.prelu(x, *self._step_tensors(op)[1:])

    def _add(self, i, op, a, b):
        return self.floats.add(a, b)

    def _concat(self, i, op, *parts):
        return self.floats.concat(parts)

    def _avgpool(self, i, op, x):
        return self._pool("avgpool", "avgpool2d_float", x, tuple(op["kernel"]),
                          tuple(op["stride"]), tuple(op["padding"]), op["ceil_mode"],
                          op["count_include_pad"])

    def _maxpool_real(self, i, op, x):
        return self._pool("maxpool_real", "maxpool2d_float", x, tuple(op["kernel"]),
                          tuple(op["stride"]), tuple(op["padding"]), op["ceil_mode"])

    def _global_avgpool(self, i, op, x):
        return self._pool("global_avgpool", "global_avgpool_float", x)

    def _pool(self, float_op, kernel, x, *args):
        """A pool through the kernels' C version where they have it (bit for bit the same),
        else the backend's float op."""
        fast = getattr(self.kernels, kernel, None)
        if fast is None:
            return getattr(self.floats, float_op)(x, *args)
        return fast(self.xp.contiguous(x), *args)

    def _step_tensors(self, op) -> tuple:
        """An elementwise op as a step of a fused kernel's output transform."""
        roles = {"relu": (), "add": (), "scale_shift": ("scale", "shift"),
                 "prelu": ("shift_in", "slope", "shift_out")}[op["op"]]
        return (op["op"],) + tuple(self._t(op, role) for role in roles)

    def _transform(self, step, values: dict) -> None:
        """A fused step: bconv/bdense, its elementwise chain and sign in one kernel call (its
        operands made on the first run and kept: ``_kernel_call``); stores what it writes in
        ``values``."""
        call = self._kernel_call((step.ops[0], "transform"), lambda: self._transform_call(step))
        residual = None if step.residual is None else self.xp.contiguous(values[step.residual])
        y, bits = call(values[step.reads[0]], residual)
        if step.float_out:
            values[step.writes[0]] = y
        if step.sign is not None:
            values[step.sign] = bits

    def _transform_call(self, step) -> tuple:
        """(kernel name, its operands after x, its options but the residual) of a fused step."""
        ops = self.graph["ops"]
        head = ops[step.ops[0]]
        sign = ops[step.sign] if step.sign is not None else None
        args = dict(steps=tuple(self._step_tensors(ops[k]) for k in step.chain),
                    sign_thresh=self._t(sign, "thresh") if sign else None,
                    sign_flip=self._t(sign, "flip") if sign else None,
                    float_out=step.float_out)
        weight, scale, shift = (self._t(head, r) for r in ("weight", "scale", "shift"))
        if head["op"] == "bconv":
            return ("bconv2d_transform", (weight, head["in_channels"], scale, shift),
                    dict(args, **geometry(head)))
        return "bgemm_transform", (weight, head["in_features"], scale, shift), args
