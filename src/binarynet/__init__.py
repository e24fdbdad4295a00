"""binarynet: Binarized Neural Networks (Courbariaux, Hubara et al. 2016, arXiv:1602.02830).

Training lives in ``binarynet.nn``, ``binarynet.optim``, ``binarynet.losses``,
``binarynet.models``, ``binarynet.data`` and ``binarynet.train`` (PyTorch); deployment in
``binarynet.engine`` (numpy + a compiled XNOR-popcount core, never torch).
"""
__version__ = "0.1.0"
