"""Short names → recommender classes, so configs can say ``als`` or ``ease``.

The built-in models are listed by module path and imported when first asked for: opening a
bundle of ALS and popularity imports those two modules, not the content model's encoders or
EASE's dense solver.
"""

from __future__ import annotations

import importlib
from typing import Any, TypeVar

from hybridrec.errors import ConfigError

__all__ = ["create_model", "get_model_class", "model_names", "register"]

# Built-in name → "module:class"; importing the module registers the class.
_BUILTIN: dict[str, str] = {
    "als": "hybridrec.models.als:ALS",
    "content": "hybridrec.models.content:ContentRecommender",
    "ease": "hybridrec.models.ease:EASE",
    "hybrid": "hybridrec.models.hybrid:Hybrid",
    "itemknn": "hybridrec.models.itemknn:ItemKNN",
    "popularity": "hybridrec.models.popularity:Popularity",
    "ranker": "hybridrec.ranking.ranker:Ranker",
    "router": "hybridrec.models.hybrid:Router",
    "two_tower": "hybridrec.models.two_tower:TwoTower",
}
_REGISTRY: dict[str, type[Any]] = {}
T = TypeVar("T", bound=type[Any])


def register(cls: T) -> T:
    """Class decorator: make a recommender available under its ``name``."""
    name = cls.name
    builtin = _BUILTIN.get(name)
    taken = _REGISTRY.get(name)
    if (taken is not None and taken is not cls) or (
        builtin is not None and builtin != f"{cls.__module__}:{cls.__qualname__}"
    ):
        raise ValueError(f"model name {name!r} is already registered")
    _REGISTRY[name] = cls
    return cls


def model_names() -> list[str]:
    """All registered model names, sorted (built-ins included, none imported)."""
    return sorted(_REGISTRY.keys() | _BUILTIN.keys())


def get_model_class(name: str) -> type[Any]:
    """The class registered as ``name`` (a built-in's module is imported now).

    Raises:
        ConfigError: The name is unknown; the message lists the valid ones.
    """
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name].partition(":")[0])
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; valid models: {', '.join(model_names())}"
        ) from None


def create_model(name: str, params: dict[str, Any] | None = None) -> Any:
    """Instantiate model ``name`` with hyperparameters ``params`` (validated by its config)."""
    return get_model_class(name)(**(params or {}))
