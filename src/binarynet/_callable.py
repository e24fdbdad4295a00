"""Modules that are also callable as their main function (``binarynet.export``, ``binarynet.summary``).

Python sets ``binarynet.<name>`` to the submodule on its first import, so a package-level
function of the same name would be shadowed; making the module itself callable keeps
``binarynet.export(model, x)`` and ``binarynet.summary(model)`` working whichever object a
caller gets.
"""
import sys
import types


def make_module_callable(module_name: str, function) -> None:
    """Let ``sys.modules[module_name](...)`` call ``function(...)``."""

    class _CallableModule(types.ModuleType):
        __doc__ = sys.modules[module_name].__doc__

        def __call__(self, *args, **kwargs):
            return function(*args, **kwargs)

    sys.modules[module_name].__class__ = _CallableModule
