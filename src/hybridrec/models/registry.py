"""Short names → recommender classes, so configs can say ``als`` or ``ease``."""

from __future__ import annotations

from typing import Any, TypeVar

from hybridrec.errors import ConfigError

__all__ = ["create_model", "get_model_class", "model_names", "register"]

_REGISTRY: dict[str, type[Any]] = {}
T = TypeVar("T", bound=type[Any])


def register(cls: T) -> T:
    """Class decorator: make a recommender available under its ``name``."""
    name = cls.name
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"model name {name!r} is already registered")
    _REGISTRY[name] = cls
    return cls


def _ensure_builtin() -> None:
    # Importing the package registers the built-in models.
    import hybridrec.models  # noqa: F401


def model_names() -> list[str]:
    """All registered model names, sorted."""
    _ensure_builtin()
    return sorted(_REGISTRY)


def get_model_class(name: str) -> type[Any]:
    """The class registered as ``name``.

    Raises:
        ConfigError: The name is unknown; the message lists the valid ones.
    """
    _ensure_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; valid models: {', '.join(sorted(_REGISTRY))}"
        ) from None


def create_model(name: str, params: dict[str, Any] | None = None) -> Any:
    """Instantiate model ``name`` with hyperparameters ``params`` (validated by its config)."""
    return get_model_class(name)(**(params or {}))
