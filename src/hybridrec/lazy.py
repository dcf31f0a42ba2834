"""Lazy re-exports: a package ``__init__`` names its public classes without importing them.

Serving a bundle needs the bundle code and the models it holds, not every model's library
(implicit, FAISS, PyTorch, sentence-transformers). A package that re-exports through
`lazy_exports` imports the defining module on first attribute access (PEP 562), so importing
the package costs nothing and a name costs only its own module.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, modules: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module ``__getattr__`` and ``__dir__`` for ``package`` that import on first use.

    Args:
        package: The package's ``__name__``.
        modules: Defining module → the public names it gives the package.

    Returns:
        The ``__getattr__`` and ``__dir__`` to assign in the package's ``__init__``.
    """
    exports = {name: module for module, names in modules.items() for name in names}

    def module_getattr(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        # Later lookups find the attribute itself and skip this hook.
        setattr(sys.modules[package], name, value)
        return value

    def module_dir() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return module_getattr, module_dir
