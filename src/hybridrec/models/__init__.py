"""Recommenders: one `Recommender` contract, a registry of short names, the built-ins."""

from hybridrec.models.als import ALS, ALSConfig
from hybridrec.models.base import ItemFilter, ModelConfig, Recommendations, Recommender
from hybridrec.models.ease import EASE, EASEConfig
from hybridrec.models.itemknn import ItemKNN, ItemKNNConfig
from hybridrec.models.popularity import Popularity, PopularityConfig
from hybridrec.models.registry import create_model, get_model_class, model_names, register

__all__ = [
    "ALS",
    "EASE",
    "ALSConfig",
    "EASEConfig",
    "ItemFilter",
    "ItemKNN",
    "ItemKNNConfig",
    "ModelConfig",
    "Popularity",
    "PopularityConfig",
    "Recommendations",
    "Recommender",
    "create_model",
    "get_model_class",
    "model_names",
    "register",
]
