"""Recommenders: one `Recommender` contract, a registry of short names, the built-ins."""

from hybridrec.models.als import ALS, ALSConfig
from hybridrec.models.base import ItemFilter, ModelConfig, Recommendations, Recommender
from hybridrec.models.content import ContentConfig, ContentRecommender
from hybridrec.models.ease import EASE, EASEConfig
from hybridrec.models.hybrid import Hybrid, HybridConfig, Router, RouterConfig
from hybridrec.models.itemknn import ItemKNN, ItemKNNConfig
from hybridrec.models.popularity import Popularity, PopularityConfig
from hybridrec.models.registry import create_model, get_model_class, model_names, register

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
    "create_model",
    "get_model_class",
    "model_names",
    "register",
]
