"""binarynet.models: a registry of model builders (:mod:`.registry`) and the networks.

- :mod:`.paper`: the paper's networks (arXiv:1602.02830): ``mnist_mlp``, ``cifar10_vgg``, ``svhn_vgg``.
- :mod:`.birealnet`: ``birealnet18`` (Bi-Real Net, arXiv:1808.00278).
- :mod:`.reactnet`: ``reactnet18`` and ``reactnet_a`` (ReActNet, arXiv:2003.03488).
- :mod:`.quicknet`: ``quicknet`` with ``size`` small / medium / large (larq zoo).

The zoo's defaults are CIFAR-10's (``num_classes=10``, ``input_size=32``).
``get(name, **options)`` builds one, e.g. ``get("reactnet18", num_classes=10)`` (32x32 CIFAR
stem) or ``get("quicknet", size="small", num_classes=1000, input_size=224)``. The zoo is
described in docs/models.md. (``binarynet.models.quicknet`` is the module; its builder is
``quicknet.quicknet``, or ``get("quicknet", ...)``.)
"""
from . import birealnet, paper, quicknet, reactnet  # noqa: F401  (registers the builders)
from .birealnet import birealnet18
from .paper import cifar10_vgg, mnist_mlp, svhn_vgg
from .reactnet import reactnet18, reactnet_a
from .registry import builder, get, names, register

__all__ = ["names", "get", "register", "builder", "mnist_mlp", "cifar10_vgg", "svhn_vgg",
           "birealnet18", "reactnet18", "reactnet_a"]
