"""Packaging trained models: bundle files, manifests, loose-artifact import, the model store.

Names are imported on first use (`hybridrec.lazy`): ``from hybridrec.bundle import
ModelStore`` (listing, promoting) does not import the models, and ``Bundle`` imports the
model code a bundle holds only as its parts are loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hybridrec.lazy import lazy_exports

if TYPE_CHECKING:
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

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "hybridrec.bundle.bundle": ("Bundle", "BundleOptions", "TopN", "write_bundle"),
        "hybridrec.bundle.format": ("Compression",),
        "hybridrec.bundle.open": ("open_bundle", "save_derived"),
        "hybridrec.bundle.store": ("ModelStore",),
    },
)
