"""Serving trained bundles: the service object that owns the loaded model.

`ModelService` is imported on first use: ``hybridrec`` commands register the ``serve``
command from this package, and only ``serve`` needs the bundle and model machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hybridrec.lazy import lazy_exports

if TYPE_CHECKING:
    from hybridrec.serving.service import ModelService, ReloadResult

__all__ = ["ModelService", "ReloadResult"]

__getattr__, __dir__ = lazy_exports(
    __name__, {"hybridrec.serving.service": ("ModelService", "ReloadResult")}
)
