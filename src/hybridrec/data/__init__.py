"""Data: canonical tables, loaders, vocabularies, matrices, transforms and splits."""

from hybridrec.data.dataset import InteractionData
from hybridrec.data.matrix import Weighter, interaction_matrix
from hybridrec.data.schema import validate_interactions, validate_items, validate_users
from hybridrec.data.split import Split, global_temporal_split, random_split, temporal_split
from hybridrec.data.transform import deduplicate, kcore_filter, to_implicit
from hybridrec.data.vocab import Vocab

__all__ = [
    "InteractionData",
    "Split",
    "Vocab",
    "Weighter",
    "deduplicate",
    "global_temporal_split",
    "interaction_matrix",
    "kcore_filter",
    "random_split",
    "temporal_split",
    "to_implicit",
    "validate_interactions",
    "validate_items",
    "validate_users",
]
