"""Packaging trained models: bundle files, manifests, loose-artifact import, the model store."""

from hybridrec.bundle.bundle import Bundle, BundleOptions, TopN, write_bundle
from hybridrec.bundle.format import Compression
from hybridrec.bundle.open import open_bundle, save_derived
from hybridrec.bundle.store import ModelStore

__all__ = [
    "Bundle",
    "BundleOptions",
    "Compression",
    "ModelStore",
    "TopN",
    "open_bundle",
    "save_derived",
    "write_bundle",
]
