"""Recommenders: one `Recommender` contract, a registry of short names, the built-ins.

Names are imported on first use (`hybridrec.lazy`): ``from hybridrec.models import ALS``
imports the ALS module only, and loading a bundle imports the models it holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hybridrec.lazy import lazy_exports

if TYPE_CHECKING:
    from hybridrec.models.als import ALS, ALSConfig
    from hybridrec.models.base import ModelConfig, Recommender
    from hybridrec.models.content import ContentConfig, ContentRecommender
    from hybridrec.models.ease import EASE, EASEConfig
    from hybridrec.models.hybrid import Hybrid, HybridConfig, Router, RouterConfig
    from hybridrec.models.itemknn import ItemKNN, ItemKNNConfig
    from hybridrec.models.popularity import Popularity, PopularityConfig
    from hybridrec.models.recommendations import ItemFilter, Recommendations
    from hybridrec.models.registry import create_model, get_model_class, model_names, register
    from hybridrec.models.two_tower import TwoTower, TwoTowerConfig

_MODULES = {
    "hybridrec.models.als": ("ALS", "ALSConfig"),
    "hybridrec.models.base": ("ModelConfig", "Recommender"),
    "hybridrec.models.content": ("ContentConfig", "ContentRecommender"),
    "hybridrec.models.ease": ("EASE", "EASEConfig"),
    "hybridrec.models.hybrid": ("Hybrid", "HybridConfig", "Router", "RouterConfig"),
    "hybridrec.models.itemknn": ("ItemKNN", "ItemKNNConfig"),
    "hybridrec.models.popularity": ("Popularity", "PopularityConfig"),
    "hybridrec.models.recommendations": ("ItemFilter", "Recommendations"),
    "hybridrec.models.registry": ("create_model", "get_model_class", "model_names", "register"),
    "hybridrec.models.two_tower": ("TwoTower", "TwoTowerConfig"),
}

__all__ = [
    "ALS",
    "EASE",
    "ALSConfig",
    "ContentConfig",
    "ContentRecommender",
    "EASEConfig",
    "Hybrid",
    "HybridConfig",
    "ItemFilter",
    "ItemKNN",
    "ItemKNNConfig",
    "ModelConfig",
    "Popularity",
    "PopularityConfig",
    "Recommendations",
    "Recommender",
    "Router",
    "RouterConfig",
    "TwoTower",
    "TwoTowerConfig",
    "create_model",
    "get_model_class",
    "model_names",
    "register",
]

__getattr__, __dir__ = lazy_exports(__name__, _MODULES)
