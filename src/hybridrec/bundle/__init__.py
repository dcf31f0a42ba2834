"""Packaging trained models: the versioned model store."""

from hybridrec.bundle.store import ModelStore

__all__ = ["ModelStore"]
