"""Serving trained bundles: the service object that owns the loaded model."""

from hybridrec.serving.service import ModelService, ReloadResult

__all__ = ["ModelService", "ReloadResult"]
