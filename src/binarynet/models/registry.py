"""The registry of model builders: ``register(name)``, ``names()``, ``get(name, **overrides)``."""
from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

__all__ = ["names", "get", "register", "builder"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    """Decorator adding a model builder to the registry under ``name``.

    The builder takes keyword options only and returns an ``nn.Module`` mapping
    (N, C, H, W) images to (N, num_classes) scores. A taken name raises ValueError.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a model name must be a non-empty string, got {name!r}")

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return decorator


def names() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name``; unknown name -> ValueError listing :func:`names`."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(names())}") from None


def get(name: str, **overrides) -> nn.Module:
    """Build the registered model ``name`` with keyword ``overrides`` of its defaults.

    Unknown name -> ValueError listing :func:`names`; unknown option -> TypeError listing the
    builder's options.
    """
    build = builder(name)
    params = inspect.signature(build).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = sorted(set(overrides) - set(params))
    if unknown and not takes_any:
        raise TypeError(
            f"model {name!r} has no option(s) {', '.join(unknown)}; its options are: {', '.join(params)}"
        )
    return build(**overrides)
