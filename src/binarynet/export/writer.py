"""The engine graph that export writes: ops in order, their named tensors, and the export report."""
from __future__ import annotations

import numpy as np


class GraphWriter:
    """Collects the ops, tensors and per-layer report of one export.

    ``scale``/``offset`` are the input normalisation (lists per channel, or None for float
    input); ``first_layer`` the uint8 first-layer mode ("bitplane" or "int").
    """

    def __init__(self, in_shape: tuple, scale, offset, first_layer: str):
        self.in_shape = in_shape
        self.scale, self.offset = scale, offset
        self.mode = first_layer
        self.ops: list = []
        self.tensors: dict = {}
        self.report: dict = {"layers": {}}
        self.num_classes = None

    @property
    def integer_input(self) -> bool:
        """uint8 images with one scale for all channels: an exact integer first layer."""
        return self.scale is not None and len(set(self.scale)) == 1

    def add(self, name: str, array) -> str:
        """Store a tensor under ``name``; returns the name (what ops refer to)."""
        self.tensors[name] = np.ascontiguousarray(array)
        return name

    def append(self, op: dict, report: dict | None = None) -> None:
        """Append an op; ``report`` (if any) becomes the export report's entry for its layer."""
        self.ops.append(op)
        if report is not None:
            self.report["layers"][op["name"]] = report

    def graph(self) -> dict:
        """The graph dict of :mod:`binarynet.engine.graph`."""
        return {"input": {"shape": list(self.in_shape), "scale": self.scale, "offset": self.offset},
                "num_classes": self.num_classes, "ops": self.ops}
