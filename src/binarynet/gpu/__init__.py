"""CUDA backend of the packed engine (Triton kernels and the 1-bit tensor-core MMA).

``binarynet.gpu.backend`` holds the ops, with the names and semantics of
``binarynet.engine.kernels`` on torch CUDA tensors. This package imports torch and triton, so it is
imported explicitly, never by the torch-free engine.
"""
