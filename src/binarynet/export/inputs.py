"""Export's input side: the example batch and the uint8 normalisation x_f = x_u8 * scale[c] + offset[c]."""
from __future__ import annotations

import numpy as np
import torch


def example_batch(example_input, input_scale) -> torch.Tensor:
    """The example input as a CPU tensor: uint8 as given (it needs ``input_scale``), float as float32."""
    x = torch.as_tensor(np.asarray(example_input)) if isinstance(example_input, np.ndarray) \
        else example_input
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"export: example_input must be a torch.Tensor or numpy array, got "
                        f"{type(example_input).__name__}")
    if x.dim() not in (2, 4) or x.shape[0] < 1:
        raise ValueError(f"export: example_input must be a batch (N, C, H, W) or (N, K) with N >= 1, "
                         f"got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        if input_scale is None:
            raise ValueError("export: a uint8 example_input needs input_scale and input_offset")
        return x.cpu()
    if not x.is_floating_point():
        raise TypeError(f"export: example_input must be float or uint8, got {x.dtype}")
    return x.float().cpu()


def normalisation(input_scale, input_offset, shape):
    """``(scale, offset)`` as lists of floats, one per input channel, or ``(None, None)``."""
    if (input_scale is None) != (input_offset is None):
        raise ValueError("export: give both input_scale and input_offset, or neither")
    if input_scale is None:
        return None, None
    channels = shape[0] if len(shape) == 3 else 1
    out = []
    for name, value in (("input_scale", input_scale), ("input_offset", input_offset)):
        values = np.atleast_1d(np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor)
                                          else value, dtype=np.float64)).ravel()
        if values.size == 1:
            values = np.repeat(values, channels)
        if values.size != channels or not np.all(np.isfinite(values)):
            raise ValueError(f"export: {name} must be a finite number or {channels} of them (one "
                             f"per input channel), got {value!r}")
        out.append([float(v) for v in values])
    if min(out[0]) <= 0:
        raise ValueError(f"export: input_scale must be positive, got {out[0]}")
    return out[0], out[1]


def to_float(x_u8: torch.Tensor, scale, offset) -> torch.Tensor:
    """x_u8 * scale[c] + offset[c] in float64, rounded to float32 (as binarynet.data.to_float)."""
    view = (1, -1, 1, 1) if x_u8.dim() == 4 else (1, -1)
    scale_t = torch.tensor(scale, dtype=torch.float64).view(view)
    offset_t = torch.tensor(offset, dtype=torch.float64).view(view)
    return (x_u8.double() * scale_t + offset_t).float()
