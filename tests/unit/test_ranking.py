"""Stored rankings (`Recommender.precompute_ranking`): known users answered without scoring."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hybridrec.data.dataset import InteractionData
from hybridrec.models import ALS, EASE, Recommender
from hybridrec.models.base import ItemFilter
from hybridrec.ranking import Ranker

N = 30
PARAMS: dict[str, tuple[type[Recommender], dict[str, Any]]] = {
    "als": (ALS, {"factors": 16, "iterations": 10, "use_gpu": False, "random_state": 0}),
    "ease": (EASE, {"regularization": 50.0}),
    "ranker": (
        Ranker,
        {
            "retrievers": {"itemknn": 20, "popularity": 20},
            "snapshots": 1,
            "min_child_samples": 20,
            "show_progress": False,
        },
    ),
}


@pytest.fixture(scope="module", params=sorted(PARAMS))
def pair(request: pytest.FixtureRequest, planted_data: InteractionData) -> tuple[Any, Any]:
    """The same fitted model twice: without a stored ranking, and with one of ``N``."""
    klass, params = PARAMS[request.param]
    plain = klass(**params).fit(planted_data)
    stored = copy.copy(plain)
    assert stored.precompute_ranking(N, 2**30) is True
    assert plain.ranking_ is None and stored.ranking_ is not None
    assert stored.ranking_["items"].shape == (len(planted_data.users), N)
    return plain, stored


def _scoring_forbidden(model: Recommender) -> Recommender:
    """A copy of ``model`` that raises if it scores anything."""
    strict = copy.copy(model)

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("scored the catalog")

    strict._score = refuse  # type: ignore[method-assign]
    if hasattr(strict, "_ranked"):
        # The ranker scores its candidates there, not through `_score`.
        strict._ranked = refuse
    return strict


def test_known_users_are_answered_from_the_ranking_as_scoring_would(pair: Any) -> None:
    plain, stored = pair
    users = plain._fitted()[0].ids
    for k in (1, 10, N):
        want = plain.recommend(users, k)
        got = _scoring_forbidden(stored).recommend(users, k)
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)


def test_one_user_matches_the_catalog_scoring_to_rounding(pair: Any) -> None:
    plain, stored = pair
    for user in plain._fitted()[0].ids[:20]:
        want = plain.recommend([user], 10)
        got = _scoring_forbidden(stored).recommend([user], 10)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-6)
        # Items agree except where two scores tie to rounding.
        differ = got.indices[0] != want.indices[0]
        assert np.all(np.abs(got.scores[0][differ] - want.scores[0][differ]) < 1e-5)


def test_item_filters_use_the_ranking_while_it_holds_k_items(pair: Any) -> None:
    plain, stored = pair
    users, items, _ = plain._fitted()
    # Every other item allowed: the top N holds 5 of them for every user.
    allowed = ItemFilter(allow=items.ids[::2].tolist())
    ranked = stored.ranking_["items"]
    assert ((ranked % 2 == 0) & (ranked >= 0)).sum(axis=1).min() >= 5
    want = plain.recommend(users.ids, 5, filters=allowed)
    got = _scoring_forbidden(stored).recommend(users.ids, 5, filters=allowed)
    np.testing.assert_array_equal(got.indices, want.indices)
    assert np.isin(got.indices, np.arange(0, len(items), 2)).all()
    # Too few of the ranked items pass: the catalog is scored, with the same answer.
    few = ItemFilter(allow=items.ids[-3:].tolist())
    with pytest.raises(AssertionError, match="scored"):
        _scoring_forbidden(stored).recommend(users.ids, 10, filters=few)
    np.testing.assert_array_equal(
        stored.recommend(users.ids, 10, filters=few).indices,
        plain.recommend(users.ids, 10, filters=few).indices,
    )


def test_what_the_ranking_cannot_answer_is_scored(pair: Any) -> None:
    plain, stored = pair
    users, items, _ = plain._fitted()
    strict = _scoring_forbidden(stored)
    user = users.ids[0]
    cases: list[dict[str, Any]] = [
        {"k": N + 5},  # deeper than stored
        {"k": 10, "exclude_seen": False},  # seen items may come back
        {"k": 10, "history": {user: [items.ids[0]]}},  # new history: fold-in
    ]
    for case in cases:
        k = case.pop("k")
        with pytest.raises(AssertionError, match="scored"):
            strict.recommend([user], k, **case)
        got = stored.recommend([user], k, **case)
        want = plain.recommend([user], k, **case)
        np.testing.assert_array_equal(got.indices, want.indices)


def test_the_ranking_is_saved_loaded_and_dropped_by_a_refit(
    pair: Any, planted_data: InteractionData, tmp_path: Path
) -> None:
    _, stored = pair
    loaded = Recommender.load(stored.save(tmp_path / "model.joblib"))
    assert loaded.ranking_ is not None
    np.testing.assert_array_equal(loaded.ranking_["items"], stored.ranking_["items"])
    users = stored._fitted()[0].ids
    np.testing.assert_array_equal(
        _scoring_forbidden(loaded).recommend(users, 5).indices, stored.recommend(users, 5).indices
    )
    refit = copy.copy(stored).fit(planted_data)
    assert refit.ranking_ is None


def test_a_ranking_over_budget_is_not_stored(planted_data: InteractionData) -> None:
    model = ALS(**PARAMS["als"][1]).fit(planted_data)
    assert model.precompute_ranking(N, max_bytes=100) is False
    assert model.ranking_ is None
