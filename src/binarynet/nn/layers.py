"""Binary dense and convolution layers (arXiv:1602.02830, Alg. 1; docs/paper.md §1.4, §1.5).

Each layer keeps a real-valued latent ``weight`` (initialised U(-1, 1), kept in [-1, 1] by the
optimizer) and computes with ``weight_quantizer(weight)`` (default ``ste_sign``: sign forward,
identity gradient inside [-1, 1]). The input is quantized by ``input_quantizer`` when one is
set; the paper models leave it None, because their first layer takes real-valued pixels and
every later layer is fed +-1 by a preceding :class:`~binarynet.nn.Sign`.
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .. import quantizers
from .latent import is_latent, tag_latent
from .weight_sign import WeightSignBuffer, buffered_ste_sign

__all__ = ["BinaryLayer", "BinaryLinear", "BinaryConv2d"]

QuantizerArg = Union[str, Callable[[torch.Tensor], torch.Tensor], None]

# Per-output-channel scaling of the binary products: none (the paper), fixed mean |W| (Bi-Real,
# ReActNet) or learned. An option of the layer, not a module after it, so that the weight stays
# +-1 and alpha is one vector export folds into the next batch norm (docs/models.md).
SCALES = (None, "mean_abs", "learned")


@functools.lru_cache(maxsize=None)
def _takes_training(fn) -> bool:
    # A quantizer with a ``training`` keyword (stochastic_sign) follows the module's mode.
    try:
        return "training" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _resolve(quantizer: QuantizerArg, owner: str, role: str):
    try:
        fn = quantizers.get(quantizer)
    except (ValueError, TypeError) as err:
        raise type(err)(f"{owner}: {role}: {err}") from None
    try:
        takes_training = fn is not None and _takes_training(fn)
    except TypeError:  # unhashable callable
        takes_training = "training" in inspect.signature(fn).parameters
    return fn, takes_training


class BinaryLayer(nn.Module):
    """Common base of binary layers: a latent weight, a weight quantizer and an input quantizer.

    Subclasses call :meth:`_init_binary` after creating ``weight`` and implement ``forward``
    with :meth:`quantized_input` and :meth:`quantized_weight`. ``isinstance(m, BinaryLayer)``
    finds every binary layer of a model (LR scaling, export, summaries).
    """

    def _init_binary(self, input_quantizer: QuantizerArg, weight_quantizer: QuantizerArg,
                     scale: Optional[str] = None) -> None:
        self._sign_buffer = WeightSignBuffer()
        self.input_quantizer = input_quantizer
        self.weight_quantizer = weight_quantizer
        tag_latent(self.weight)
        if scale not in SCALES:
            raise ValueError(f"{self._label()}: scale must be one of {', '.join(map(repr, SCALES))}, "
                             f"got {scale!r}")
        self.scale = scale
        # Learned per-output-channel factors start at 1 (XNOR-Net++ style); a plain parameter,
        # not a latent weight, so optimizers treat it as any real-valued parameter.
        self.channel_scale = (nn.Parameter(torch.ones(self.weight.shape[0])) if scale == "learned"
                              else None)

    def output_scale(self) -> Optional[torch.Tensor]:
        """The per-output-channel factor alpha (shape (out,)) the products are multiplied by,
        or None: mean |W| per output channel, without gradient, for ``scale="mean_abs"`` (Bi-Real
        Net's magnitude, :func:`binarynet.quantizers.channel_mean_abs`); the learned
        ``channel_scale`` for ``scale="learned"``. Export can fold it into the next batch norm."""
        if self.scale == "mean_abs":
            return quantizers.channel_mean_abs(self.weight).reshape(-1)
        return self.channel_scale if self.scale == "learned" else None

    def _scaled(self, y: torch.Tensor, channel_dim: int) -> torch.Tensor:
        """y * alpha (per output channel on ``channel_dim``), then + bias."""
        shape = [1] * y.dim()
        shape[channel_dim] = -1
        alpha = self.output_scale()
        if alpha is not None:
            y = y * alpha.view(shape)
        return y if self.bias is None else y + self.bias.view(shape)

    # Quantizers are properties so that assigning a name or a callable later stays consistent
    # with the ``*_name`` attributes.
    @property
    def input_quantizer(self):
        """Callable applied to the input before the product, or None (input used as given)."""
        return self._input_quantizer

    @input_quantizer.setter
    def input_quantizer(self, value: QuantizerArg) -> None:
        self._input_quantizer, self._input_takes_training = _resolve(value, self._label(), "input_quantizer")
        self._input_quantizer_name = quantizers.name_of(self._input_quantizer)

    @property
    def weight_quantizer(self):
        """Callable applied to the latent weight, or None (a real-valued weight)."""
        return self._weight_quantizer

    @weight_quantizer.setter
    def weight_quantizer(self, value: QuantizerArg) -> None:
        self._weight_quantizer, self._weight_takes_training = _resolve(value, self._label(), "weight_quantizer")
        self._weight_quantizer_name = quantizers.name_of(self._weight_quantizer)

    @property
    def input_quantizer_name(self) -> Optional[str]:
        """Registry name of the input quantizer (a custom callable's qualname), or None."""
        return self._input_quantizer_name

    @property
    def weight_quantizer_name(self) -> Optional[str]:
        """Registry name of the weight quantizer (a custom callable's qualname), or None."""
        return self._weight_quantizer_name

    def quantized_weight(self) -> torch.Tensor:
        """The weight used in the forward pass: weight_quantizer(weight), e.g. sign(W) in {-1, +1}."""
        fn = self._weight_quantizer
        if fn is None:
            return self.weight
        if self._weight_takes_training:
            return fn(self.weight, training=self.training)
        return fn(self.weight)

    def _forward_weight(self) -> torch.Tensor:
        # The default ste_sign writes into a storage reused across steps (see weight_sign.py);
        # torch.compile traces the plain function instead.
        if torch.compiler.is_compiling():
            return self.quantized_weight()
        if not is_latent(self.weight):  # a Parameter replaced after init (load_state_dict(assign=True))
            tag_latent(self.weight)
        if self._weight_quantizer is quantizers.ste_sign:
            return buffered_ste_sign(self.weight, 1.0, self._sign_buffer)
        return self.quantized_weight()

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        """input_quantizer(x), or x itself when there is no input quantizer."""
        fn = self._input_quantizer
        if fn is None:
            return x
        if self._input_takes_training:
            return fn(x, training=self.training)
        return fn(x)

    def __setattr__(self, name, value):
        # nn.Module.__setattr__ would register an nn.Module quantizer as a submodule under the
        # property's name, bypassing the setter; route the two quantizer names to it.
        if name in ("input_quantizer", "weight_quantizer"):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def __getstate__(self):
        state = super().__getstate__().copy()
        state.pop("_sign_buffer", None)  # scratch storage: never copied or pickled
        return state

    def __setstate__(self, state):
        # deepcopy / unpickling rebuilds the Parameter and drops its tag: put it back.
        state.setdefault("scale", None)  # pickled before the option existed
        super().__setstate__(state)
        self._sign_buffer = WeightSignBuffer()
        if isinstance(self._parameters.get("weight"), nn.Parameter):
            tag_latent(self._parameters["weight"])

    def _check_float(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self._label()}: expected a torch.Tensor input, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{self._label()}: expected a floating-point input, got dtype {x.dtype}")

    def _label(self) -> str:
        return type(self).__name__

    def _scale_repr(self) -> str:
        return "" if self.scale is None else f", scale={self.scale!r}"

    def _quantizer_repr(self) -> str:
        return f"input_quantizer={self._input_quantizer_name}, weight_quantizer={self._weight_quantizer_name}"


class BinaryLinear(BinaryLayer, nn.Linear):
    """Dense layer with binary weights: y = input_quantizer(x) @ weight_quantizer(W)^T + b.

    ``weight`` (out_features, in_features) is the latent weight, init U(-1, 1) (TH/T7;
    docs/paper.md §1.4); ``bias`` is a float bias, init 0, not clipped (TH), or None. Gradients: the weight
    quantizer's STE (identity inside [-1, 1] for ``ste_sign``), i.e. the gradient with respect
    to the binary weight is applied to the latent one (paper Alg. 1). Input: (..., in_features).
    ``scale`` (None, "mean_abs" or "learned") multiplies each output unit's product by
    :meth:`~BinaryLayer.output_scale` before the bias is added.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        input_quantizer: QuantizerArg = None,
        weight_quantizer: QuantizerArg = "ste_sign",
        scale: Optional[str] = None,
    ) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias=bias)
        self._init_binary(input_quantizer, weight_quantizer, scale)

    def reset_parameters(self) -> None:
        """Latent weight ~ U(-1, 1), bias = 0 (TH BinaryNet init)."""
        with torch.no_grad():
            self.weight.uniform_(-1.0, 1.0)
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_float(x)
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"{self._label()}: expected input of shape (N, {self.in_features}), "
                f"got {tuple(x.shape)}"
            )
        if self.scale is None:
            return F.linear(self.quantized_input(x), self._forward_weight(), self.bias)
        return self._scaled(F.linear(self.quantized_input(x), self._forward_weight()), -1)

    def _label(self) -> str:
        if "in_features" in self.__dict__:
            return f"BinaryLinear({self.in_features}->{self.out_features})"
        return "BinaryLinear"

    def extra_repr(self) -> str:
        return f"{nn.Linear.extra_repr(self)}, {self._quantizer_repr()}{self._scale_repr()}"


class BinaryConv2d(BinaryLayer, nn.Conv2d):
    """2-D convolution with binary weights: y = conv(pad(input_quantizer(x)), weight_quantizer(W)) + b.

    Arguments and attributes as ``torch.nn.Conv2d``; latent weight init U(-1, 1), bias init 0.
    ``pad_value`` is the value of the border: 0.0 (paper and TH: zero padding) or +-1.0, in
    which case the input is padded explicitly with that value, so that a binary input stays
    binary and the layer is an exact XNOR-popcount at the border too, and the convolution then
    runs with padding 0. ``scale`` (None, "mean_abs" or "learned") multiplies each output
    channel by :meth:`~BinaryLayer.output_scale` before the bias is added. Input:
    (N, in_channels, H, W).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        pad_value: float = 0.0,
        input_quantizer: QuantizerArg = None,
        weight_quantizer: QuantizerArg = "ste_sign",
        scale: Optional[str] = None,
    ) -> None:
        nn.Conv2d.__init__(
            self, in_channels, out_channels, kernel_size,
            stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias,
        )
        pad_value = float(pad_value)
        if pad_value not in (0.0, 1.0, -1.0):
            raise ValueError(f"{self._label()}: pad_value must be 0.0, 1.0 or -1.0, got {pad_value}")
        if pad_value != 0.0 and isinstance(self.padding, str):
            raise ValueError(
                f"{self._label()}: pad_value={pad_value} needs integer padding, got padding={self.padding!r}"
            )
        self.pad_value = pad_value
        self._init_binary(input_quantizer, weight_quantizer, scale)

    def reset_parameters(self) -> None:
        """Latent weight ~ U(-1, 1), bias = 0 (TH BinaryNet init)."""
        with torch.no_grad():
            self.weight.uniform_(-1.0, 1.0)
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_float(x)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self._label()}: expected input of shape (N, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        x = self.quantized_input(x)
        weight = self._forward_weight()
        bias = self.bias if self.scale is None else None  # else added after the scale
        if self.pad_value != 0.0 and any(self.padding):
            ph, pw = self.padding
            x = F.pad(x, (pw, pw, ph, ph), value=self.pad_value)
            y = F.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.groups)
        else:
            y = self._conv_forward(x, weight, bias)
        return y if self.scale is None else self._scaled(y, 1)

    def _label(self) -> str:
        if "in_channels" in self.__dict__:
            return f"BinaryConv2d({self.in_channels}->{self.out_channels})"
        return "BinaryConv2d"

    def extra_repr(self) -> str:
        return (f"{nn.Conv2d.extra_repr(self)}, pad_value={self.pad_value}, {self._quantizer_repr()}"
                f"{self._scale_repr()}")
