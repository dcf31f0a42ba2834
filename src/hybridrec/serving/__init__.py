"""Serving trained bundles: the service object that owns the loaded model.

`ModelService` is imported on first use: ``hybridrec`` commands register the ``serve``
command from this package, and only ``serve`` needs the bundle and model machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hybridrec.serving.service import ModelService, ReloadResult

__all__ = ["ModelService", "ReloadResult"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from hybridrec.serving import service

        return getattr(service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
