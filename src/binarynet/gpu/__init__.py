"""CUDA backend of the packed engine (Triton kernels and the 1-bit tensor-core MMA).

``binarynet.gpu.backend`` holds the ops, with the names and semantics of
``binarynet.engine.kernels`` on torch CUDA tensors; ``binarynet.gpu.engine_backend`` registers
them, with the torch array operations the graph runner needs, as the engine's "cuda" backend.
This package imports torch and triton, so it is imported explicitly (``PackedModel.to("cuda")``
does), never by the torch-free engine.
"""
