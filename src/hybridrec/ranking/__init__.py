"""Two-stage ranking: candidates from every retriever, features, and a LightGBM ranker.

Names are imported on first use (`hybridrec.lazy`), so importing the package pulls in
neither polars aggregations nor LightGBM until they are asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hybridrec.lazy import lazy_exports

if TYPE_CHECKING:
    from hybridrec.ranking.features import (
        FeatureTables,
        LeakageError,
        check_no_leakage,
        pair_features,
    )
    from hybridrec.ranking.ranker import Ranker, RankerConfig

_MODULES = {
    "hybridrec.ranking.features": (
        "FeatureTables",
        "LeakageError",
        "check_no_leakage",
        "pair_features",
    ),
    "hybridrec.ranking.ranker": ("Ranker", "RankerConfig"),
}

__all__ = [
    "FeatureTables",
    "LeakageError",
    "Ranker",
    "RankerConfig",
    "check_no_leakage",
    "pair_features",
]

__getattr__, __dir__ = lazy_exports(__name__, _MODULES)
