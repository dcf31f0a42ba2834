"""Fixtures of the unit tests: three fitted components a hybrid can be built on."""

from __future__ import annotations

import pytest

from hybridrec.data.dataset import InteractionData
from hybridrec.models import Recommender, create_model

ALS = {"factors": 8, "iterations": 5, "use_gpu": False, "random_state": 0}


@pytest.fixture(scope="session")
def components(planted_data: InteractionData) -> dict[str, Recommender]:
    """Popularity, ALS and item-kNN fitted on the planted data (pipeline names as keys)."""
    return {
        "popularity": create_model("popularity").fit(planted_data),
        "als": create_model("als", ALS).fit(planted_data),
        "itemknn": create_model("itemknn", {"neighbors": 10}).fit(planted_data),
    }
