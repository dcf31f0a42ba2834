"""Data: canonical tables, loaders, vocabularies, matrices, transforms and splits.

Names are imported on first use (`hybridrec.lazy`): unpickling a bundle's vocabularies
imports `hybridrec.data.vocab` (numpy only), not the loaders' polars or the matrices' scipy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hybridrec.lazy import lazy_exports

if TYPE_CHECKING:
    from hybridrec.data.dataset import InteractionData
    from hybridrec.data.export import export_interactions
    from hybridrec.data.matrix import Weighter, interaction_matrix
    from hybridrec.data.schema import validate_interactions, validate_items, validate_users
    from hybridrec.data.sources import Source, merge_sources
    from hybridrec.data.split import Split, global_temporal_split, random_split, temporal_split
    from hybridrec.data.synthesize import synthesize_log
    from hybridrec.data.transform import deduplicate, kcore_filter, to_implicit
    from hybridrec.data.vocab import Vocab

__all__ = [
    "InteractionData",
    "Source",
    "Split",
    "Vocab",
    "Weighter",
    "deduplicate",
    "export_interactions",
    "global_temporal_split",
    "interaction_matrix",
    "kcore_filter",
    "merge_sources",
    "random_split",
    "synthesize_log",
    "temporal_split",
    "to_implicit",
    "validate_interactions",
    "validate_items",
    "validate_users",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "hybridrec.data.dataset": ("InteractionData",),
        "hybridrec.data.export": ("export_interactions",),
        "hybridrec.data.matrix": ("Weighter", "interaction_matrix"),
        "hybridrec.data.schema": ("validate_interactions", "validate_items", "validate_users"),
        "hybridrec.data.sources": ("Source", "merge_sources"),
        "hybridrec.data.split": (
            "Split",
            "global_temporal_split",
            "random_split",
            "temporal_split",
        ),
        "hybridrec.data.synthesize": ("synthesize_log",),
        "hybridrec.data.transform": ("deduplicate", "kcore_filter", "to_implicit"),
        "hybridrec.data.vocab": ("Vocab",),
    },
)
