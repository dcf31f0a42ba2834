"""Hybrid blend, mixed, router, the fallback chain, business rules and reasons."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from test_contract import planted_catalog

from hybridrec.bundle import Bundle, ModelStore, write_bundle
from hybridrec.data.dataset import InteractionData
from hybridrec.errors import ConfigError, HybridrecError
from hybridrec.models import Recommender, create_model
from hybridrec.models.base import ItemFilter
from hybridrec.models.explain import Rules, answer, answers_frame
from hybridrec.models.hybrid import Hybrid, mixed, normalize_scores, simplex_grid, tune_weights

ALS = {"factors": 16, "iterations": 15, "use_gpu": False, "random_state": 0}


def test_normalizations_by_hand() -> None:
    scores = np.array([[1.0, 3.0, 2.0, 9.0]])
    mask = np.array([[True, True, True, False]])
    np.testing.assert_allclose(normalize_scores(scores, mask, "minmax"), [[0.0, 1.0, 0.5, 0.0]])
    z = normalize_scores(scores, mask, "zscore")
    sd = np.std([1.0, 3.0, 2.0])
    np.testing.assert_allclose(z, [[-1 / sd, 1 / sd, 0.0, 0.0]])
    np.testing.assert_allclose(normalize_scores(scores, mask, "rank"), [[1 / 3, 1.0, 2 / 3, 0.0]])


def test_normalizations_match_nan_reductions() -> None:
    # Rows with no candidate, one candidate, constant candidates, and -inf / NaN cells.
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(6, 40))
    mask = rng.random((6, 40)) < 0.5
    mask[0] = False
    mask[1] = False
    mask[1, 7] = True
    scores[2] = 4.0
    scores[3, :5] = -np.inf
    scores[4, :5] = np.nan
    mask[3:5, :5] = True
    ok = mask & np.isfinite(scores)
    s = np.where(ok, scores, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanmin(s, axis=1, keepdims=True), np.nanmax(s, axis=1, keepdims=True)
        mm = (s - lo) / np.where(hi > lo, hi - lo, 1.0)
        mean, sd = np.nanmean(s, axis=1, keepdims=True), np.nanstd(s, axis=1, keepdims=True)
        zs = (s - mean) / np.where(sd > 0, sd, 1.0)
    for method, want in (("minmax", mm), ("zscore", zs)):
        got = normalize_scores(scores, mask, method)  # type: ignore[arg-type]
        np.testing.assert_allclose(got, np.where(ok, want, 0.0), rtol=1e-12, atol=1e-12)
        assert np.isfinite(got).all()


def test_simplex_grid() -> None:
    assert simplex_grid(2, 0.5) == [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]
    grid = simplex_grid(3, 0.1)
    assert len(grid) == 66
    assert all(abs(sum(w) - 1) < 1e-9 for w in grid)


@pytest.fixture(scope="module")
def data(planted_data: InteractionData) -> InteractionData:
    return dataclasses.replace(
        planted_data, items_table=planted_catalog(planted_data.items.to_list())
    )


@pytest.fixture(scope="module")
def models(data: InteractionData) -> dict[str, Recommender]:
    fitted: dict[str, Recommender] = {
        "popularity": create_model("popularity").fit(data),
        "als": create_model("als", ALS).fit(data),
        "itemknn": create_model("itemknn", {"neighbors": 20}).fit(data),
        "ease": create_model("ease", {"regularization": 10.0}).fit(data),
        "content": create_model("content", {"show_progress": False, "cache": False}).fit(data),
    }
    hybrid = create_model("hybrid", {"components": {"als": 0.5, "ease": 0.3, "content": 0.2}})
    fitted["hybrid"] = hybrid.attach(fitted).fit(data)
    router = create_model("router", {"cold": "content", "warm": "als", "hot": "hybrid"})
    fitted["router"] = router.attach(fitted).fit(data)
    return fitted


def test_single_component_hybrid_ranks_like_it(
    models: dict[str, Recommender], data: InteractionData
) -> None:
    users = data.users.ids
    for norm in ("minmax", "zscore", "rank"):
        hybrid = Hybrid(components={"als": 1.0, "ease": 0.0}, normalization=norm, candidates=50)
        hybrid.attach(models).fit(data)
        np.testing.assert_array_equal(
            hybrid.recommend(users, 10).indices, models["als"].recommend(users, 10).indices
        )


def test_hybrid_uses_a_component_over_the_whole_catalog(
    models: dict[str, Recommender], data: InteractionData
) -> None:
    # Content's vocabulary is the whole catalog, here with items nobody interacted with; the
    # hybrid's is the interacted items: content's scores are read through the item ids.
    n = len(data.items)
    extra = [int(data.items.ids.max()) + 1 + i for i in range(3)]
    wide = dataclasses.replace(data, items_table=planted_catalog([*data.items.to_list(), *extra]))
    content = create_model("content", {"show_progress": False, "cache": False}).fit(wide)
    assert len(content._fitted()[1]) == n + 3
    hybrid = create_model("hybrid", {"components": {"als": 0.0, "content": 1.0}})
    hybrid.attach({**models, "content": content}).fit(data)
    assert len(hybrid._fitted()[1]) == n
    users = data.users.ids[:5]
    got = hybrid.recommend(users, 5)
    assert ((got.indices >= 0) & (got.indices < n)).all()
    # Content alone, over the hybrid's items: content's own ranking less the extra items.
    own = content.recommend(users, 5 + len(extra))
    for row in range(len(users)):
        ids, _ = got.row(row)
        want = [i for i in own.row(row)[0].tolist() if i not in extra][:5]
        assert set(ids.tolist()) == set(want)


def test_tune_weights_finds_the_better_component(
    models: dict[str, Recommender], data: InteractionData
) -> None:
    hybrid = Hybrid(components={"als": 0.5, "popularity": 0.5}).attach(models).fit(data)
    target = models["popularity"].recommend(data.users.ids, 10).indices

    def agreement_with_popularity(h: Recommender) -> float:
        return float((h.recommend(data.users.ids, 10).indices == target).mean())

    best, trials = tune_weights(hybrid, agreement_with_popularity, step=0.25)
    assert len(trials) == 5
    assert best == {"als": 0.0, "popularity": 1.0}
    assert hybrid.config.components == best


def test_mixed_alpha_ends(models: dict[str, Recommender], data: InteractionData) -> None:
    users = data.users.ids[:20]
    als_only = mixed(models["als"], models["popularity"], 1.0)
    np.testing.assert_array_equal(
        als_only.recommend(users, 5).indices, models["als"].recommend(users, 5).indices
    )
    pop_only = mixed(models["als"], models["popularity"], 0.0)
    np.testing.assert_array_equal(
        pop_only.recommend(users, 5).indices, models["popularity"].recommend(users, 5).indices
    )
    # A new visitor with no history still gets popular items from the mix.
    assert (
        mixed(models["als"], models["popularity"], 0.5)
        .recommend(["visitor"], 5, history={"visitor": []})
        .indices
        >= 0
    ).all()
    with pytest.raises(ConfigError, match="alpha"):
        mixed(models["als"], models["popularity"], 1.5)


def test_router_sends_each_segment_to_its_model(
    models: dict[str, Recommender], data: InteractionData
) -> None:
    router = (
        create_model(
            "router",
            {
                "cold": "popularity",
                "warm": "als",
                "hot": "itemknn",
                "cold_below": 5,
                "hot_from": 12,
            },
        )
        .attach(models)
        .fit(data)
    )
    # Planted users have 10 items: warm -> ALS. With 10 more, hot -> item-kNN. New with 2: cold.
    user = data.users.ids[0]
    np.testing.assert_array_equal(
        router.recommend([user], 5).indices, models["als"].recommend([user], 5).indices
    )
    extra = {user: data.items.ids[:12].tolist()}
    np.testing.assert_array_equal(
        router.recommend([user], 5, history=extra).indices,
        models["itemknn"].recommend([user], 5, history=extra).indices,
    )
    cold = {"visitor": data.items.ids[:2].tolist()}
    np.testing.assert_array_equal(
        router.recommend(["visitor"], 5, history=cold).indices,
        models["popularity"].recommend(["visitor"], 5, history=cold).indices,
    )


# ---- the fallback chain and reasons ---------------------------------------------------------


def provider(models: dict[str, Recommender], without: str | None = None) -> Any:
    return lambda name: None if name == without else models.get(name)


@pytest.mark.parametrize(
    "missing", [None, "router", "hybrid", "als", "content", "popularity", "ease", "itemknn"]
)
def test_every_user_gets_k_with_any_component_missing(
    models: dict[str, Recommender], data: InteractionData, missing: str | None
) -> None:
    users = [*data.users.ids.tolist(), "stranger"]
    for strategy in ("auto", "hybrid", "als", "content", "popular", "mixed", "two_tower"):
        got = answer(
            provider(models, missing), users, 7, strategy=strategy, items_table=data.items_table
        )
        assert [len(a.items) for a in got] == [7] * len(users), (strategy, missing)
        for a in got:
            assert len(set(a.items)) == 7
            assert missing not in a.methods
            assert all(r for r in a.reasons), (strategy, a.user_id)
    stranger = answer(provider(models, missing), ["stranger"], 5, strategy="als")[0]
    pop = "popularity-fallback" if missing == "popularity" else "popularity"
    assert stranger.method_used == pop


def test_a_failing_model_is_passed_over(
    models: dict[str, Recommender], data: InteractionData
) -> None:
    class Broken:
        def __getattr__(self, name: str) -> Any:
            raise HybridrecError("part failed to load")

    class Failing(type(models["als"])):  # type: ignore[misc]
        def recommend(self, *args: Any, **kwargs: Any) -> Any:
            raise HybridrecError("boom")

    failing = Failing(**ALS)
    failing.users_, failing.items_, failing.user_items_ = models["als"]._fitted()
    got = answer(
        lambda n: failing if n == "hybrid" else models.get(n),
        data.users.ids[:3].tolist(),
        5,
        strategy="hybrid",
    )
    assert all(a.method_used == "als" for a in got)
    assert Broken is not None


def test_short_answers_are_filled_from_the_next_model(
    models: dict[str, Recommender], data: InteractionData
) -> None:
    # Only 3 items allowed for ALS's cluster? Use a deny list leaving few items overall.
    allow = data.items.ids[:6].tolist()
    got = answer(
        provider(models),
        data.users.ids[:4].tolist(),
        6,
        strategy="als",
        rules=Rules(allow=allow, exclude_seen=False),
    )
    for a in got:
        assert sorted(a.items) == sorted(allow)


def test_because_you_liked_names_an_item_of_the_users_history(
    models: dict[str, Recommender], data: InteractionData
) -> None:
    users = data.users.ids[:30].tolist()
    got = answer(provider(models), users, 10, strategy="hybrid", items_table=data.items_table)
    titles = dict(
        zip(data.items_table["item_id"].to_list(), data.items_table["title"].to_list(), strict=True)
    )
    seen_any = 0
    for a in got:
        row = data.users.index([a.user_id])[0]
        history = set(data.items.lookup(data.matrix[row].indices).tolist())
        for reasons in a.reasons:
            assert reasons and all(r.text for r in reasons)
            for r in reasons:
                if r.text.startswith("because you liked "):
                    seen_any += 1
                    assert r.evidence["item_id"] in history
                    assert r.text == f"because you liked {titles[r.evidence['item_id']]}"
    assert seen_any > 100


def test_popular_answers_say_popular(models: dict[str, Recommender], data: InteractionData) -> None:
    got = answer(provider(models), ["nobody"], 3, strategy="popular", items_table=data.items_table)
    assert got[0].method_used == "popularity"
    assert all(reasons[-1].text == "popular overall" for reasons in got[0].reasons)


def test_rules_categories_popularity_and_mmr(
    models: dict[str, Recommender], data: InteractionData
) -> None:
    catalog = data.items_table.with_columns(
        categories=pl.when(pl.col("item_id") % 2 == 0)
        .then(pl.lit(["even"]))
        .otherwise(pl.lit(["odd"]))
    )
    users = data.users.ids[:10].tolist()
    evens = answer(
        provider(models),
        users,
        5,
        strategy="als",
        items_table=catalog,
        rules=Rules(include_categories=["even"]),
    )
    assert all(i % 2 == 0 for a in evens for i in a.items)
    odds = answer(
        provider(models),
        users,
        5,
        strategy="als",
        items_table=catalog,
        rules=Rules(exclude_categories=["even"]),
    )
    assert all(i % 2 == 1 for a in odds for i in a.items)
    counts = models["popularity"].item_scores_  # type: ignore[attr-defined]
    floor = float(np.median(counts))
    popular = answer(
        provider(models), users, 5, strategy="als", rules=Rules(min_popularity=int(floor))
    )
    known = dict(zip(data.items.ids.tolist(), counts.tolist(), strict=True))
    assert all(known[i] >= int(floor) for a in popular for i in a.items)
    plain = answer(provider(models), users, 5, strategy="als")
    diverse = answer(provider(models), users, 5, strategy="als", rules=Rules(mmr_lambda=0.3))
    assert any(p.items != d.items for p, d in zip(plain, diverse, strict=True))
    same = answer(provider(models), users, 5, strategy="als", rules=Rules(mmr_lambda=1.0))
    assert [a.items for a in same] == [a.items for a in plain]
    with pytest.raises(ConfigError, match="categories"):
        answer(provider(models), users, 5, rules=Rules(include_categories=["x"]), items_table=None)


def test_bad_strategy_and_k(models: dict[str, Recommender]) -> None:
    with pytest.raises(ConfigError, match="unknown strategy 'best'"):
        answer(provider(models), [1], 5, strategy="best")
    with pytest.raises(ConfigError, match="k must be"):
        answer(provider(models), [1], 0)


def test_answers_frame_and_bundle_provider(
    models: dict[str, Recommender], data: InteractionData, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path)
    without_als = {n: m for n, m in models.items() if n not in ("als", "router", "hybrid")}
    version = store.write_version(
        lambda p: {**write_bundle(p, without_als, items=data.items_table), "default_model": "ease"}
    )
    bundle = Bundle.open(tmp_path / version)
    assert bundle.get("als") is None
    got = answer(
        bundle.get, data.users.ids[:3].tolist(), 4, strategy="auto", items_table=bundle.items
    )
    frame = answers_frame(got)
    assert frame.columns == ["user_id", "item_id", "rank", "score", "method", "reason"]
    assert frame.height == 12
    assert frame["reason"].str.len_chars().min() > 0
    assert set(frame["method"]) <= {"content", "popularity"}


def _same_top(a: Any, b: Any, k: int = 10) -> None:
    """Equal top-``k`` up to float rounding, from top-(k + 1) answers: the same scores, and
    the same item at every place whose score no other place (the next one included) nears."""
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)
    for ia, ib, sa in zip(a.indices, b.indices, a.scores, strict=True):
        gaps = np.abs(sa[:, None] - sa[None, :]) + np.eye(sa.size)
        clear = gaps.min(axis=1)[:k] > 1e-4
        np.testing.assert_array_equal(ia[:k][clear], ib[:k][clear])


@pytest.mark.parametrize("norm", ["minmax", "zscore", "rank"])
def test_precomputed_candidates_answer_as_computed(
    models: dict[str, Recommender], data: InteractionData, norm: str, tmp_path: Path
) -> None:
    # Known users read their stored candidate union and normalized parts; the answer is
    # the computed one, with and without an item filter.
    config = {
        "components": {"als": 0.4, "ease": 0.3, "content": 0.2, "popularity": 0.1},
        "normalization": norm,
        "candidates": 15,
    }
    computed = create_model("hybrid", config).attach(models).fit(data)
    stored = create_model("hybrid", config).attach(models).fit(data)
    assert isinstance(stored, Hybrid)
    assert stored.precompute_candidates()
    assert stored.stored_["union"].shape == (len(data.users), 60)
    users = data.users.ids
    _same_top(stored.recommend(users, 11), computed.recommend(users, 11))
    some = ItemFilter(deny=data.items.ids[::3].tolist())
    _same_top(
        stored.recommend(users, 11, filters=some), computed.recommend(users, 11, filters=some)
    )

    # Saved and loaded with a bundle, known users never ask a component to propose.
    bundle_models = {**models, "hybrid": stored}
    version = ModelStore(tmp_path).write_version(
        lambda p: {**write_bundle(p, bundle_models, items=data.items_table), "default_model": "als"}
    )
    loaded = Bundle.open(tmp_path / version).get("hybrid")
    assert isinstance(loaded, Hybrid)
    real = loaded._component_proposal

    def computing(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a known user's candidates were computed")

    loaded._component_proposal = computing  # type: ignore[method-assign]
    _same_top(loaded.recommend(users, 11), computed.recommend(users, 11))
    # New history, or seen items kept: the stored tables do not apply, the model computes.
    loaded._component_proposal = real  # type: ignore[method-assign]
    extra = {users[0]: [data.items.ids[-1]]}
    _same_top(
        loaded.recommend(users[:3], 11, history=extra),
        computed.recommend(users[:3], 11, history=extra),
    )
    _same_top(
        loaded.recommend(users[:3], 11, exclude_seen=False),
        computed.recommend(users[:3], 11, exclude_seen=False),
    )


def test_precomputed_candidates_respect_the_size_bound(
    models: dict[str, Recommender], data: InteractionData
) -> None:
    hybrid = create_model("hybrid", {"components": {"als": 0.5, "ease": 0.5}}).attach(models)
    hybrid.fit(data)
    assert isinstance(hybrid, Hybrid)
    assert not hybrid.precompute_candidates(max_bytes=100)
    assert hybrid.stored_ == {}


def test_ease_reasons_when_ease_models_part_of_the_catalog(
    models: dict[str, Recommender], data: InteractionData
) -> None:
    # EASE over its most popular items only: reasons read B through its own positions
    # (an item it does not model is no evidence), one user at a time and in a batch.
    from hybridrec.models.ease import EASE
    from hybridrec.models.explain import answer_batch

    keep = len(data.items) // 2
    ease = create_model("ease", {"regularization": 10.0, "max_items": keep}).fit(data)
    assert isinstance(ease, EASE) and ease.modeled_items == keep
    only = {"ease": ease, "popularity": models["popularity"]}
    users = data.users.ids[:20].tolist()
    modeled = set(data.items.lookup(ease.columns_).tolist())
    got = answer(only.get, users, 10, first="ease", items_table=data.items_table)
    frame = answer_batch(only.get, users, 10, model="ease", items_table=data.items_table).frame
    cited = 0
    for a in got:
        for item, why in zip(a.items, a.reasons, strict=True):
            for r in why:
                if r.evidence.get("by") == "ease":
                    cited += 1
                    assert r.evidence["item_id"] in modeled and item in modeled
                    b = ease.weight_cells(
                        data.items.index([r.evidence["item_id"]]), data.items.index([item])
                    )
                    assert r.evidence["similarity"] == pytest.approx(float(b[0]), abs=1e-4)
    assert cited > 0
    assert frame.height == 200
    assert frame.filter(pl.col("reason").str.starts_with("because you liked")).height > 0


def test_stored_candidates_go_when_the_hybrid_is_refit_or_reattached(
    models: dict[str, Recommender], data: InteractionData
) -> None:
    hybrid = create_model("hybrid", {"components": {"als": 0.5, "ease": 0.5}}).attach(models)
    hybrid.fit(data)
    assert isinstance(hybrid, Hybrid)
    assert hybrid.precompute_candidates()
    hybrid.fit(data)
    assert hybrid.stored_ == {}
    assert hybrid.precompute_candidates()
    hybrid.attach(models)
    assert hybrid.stored_ == {}


# ---- ALS + two-tower: the ensemble and the router's cold route --------------------------------

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY_TOWER = {
    "epochs": 3,
    "min_epochs": 3,
    "tower_dims": [32],
    "output_dim": 32,
    "validation_users": 0,
    "show_progress": False,
    "seed": 1,
}


@pytest.fixture(scope="module")
def tower(data: InteractionData) -> Recommender:
    return create_model("two_tower", TINY_TOWER).fit(data)


def test_default_config_blends_als_and_two_tower_0_6_to_0_4() -> None:
    from hybridrec.config import load_config
    from hybridrec.pipeline.train import fit_order

    cfg = load_config(CONFIGS / "default.toml")
    spec = cfg.models["ensemble"]
    hybrid = create_model(spec.model, spec.params)
    assert isinstance(hybrid, Hybrid)
    assert hybrid.weights == pytest.approx({"als": 0.6, "two_tower": 0.4})
    assert hybrid.config.normalization in ("minmax", "zscore")
    assert set(spec.search["normalization"]) <= {"minmax", "zscore"}
    # Opt-in with the two-tower model it blends.
    assert spec.enabled is cfg.models["two_tower"].enabled
    # Route tuning picks among the models fitted before the router: two-tower among them.
    on = {n: s.model_copy(update={"enabled": True}) for n, s in cfg.models.items()}
    order = fit_order(cfg, list(cfg.model_copy(update={"models": on}).enabled_models()))
    assert order.index("two_tower") < order.index("router")
    assert order.index("als") < order.index("ensemble")


@pytest.mark.parametrize("norm", ["minmax", "zscore"])
def test_als_two_tower_ensemble_answers_known_and_new_users(
    models: dict[str, Recommender], tower: Recommender, data: InteractionData, norm: str
) -> None:
    parts = {**models, "two_tower": tower}
    ensemble = Hybrid(components={"als": 0.6, "two_tower": 0.4}, normalization=norm)
    ensemble.attach(parts).fit(data)
    users = data.users.ids[:8]
    got = ensemble.recommend(users, 10)
    assert (got.indices >= 0).all() and np.isfinite(got.scores).all()
    # Both parts count: the blend ranks unlike each of them alone.
    for name in ("als", "two_tower"):
        alone = parts[name].recommend(users, 10)
        assert not np.array_equal(got.indices, alone.indices), name
    # A visitor with history (unknown to both models) is answered by both.
    history = {"visitor": data.items.ids[:5].tolist()}
    visit = ensemble.recommend(["visitor"], 10, history=history)
    assert visit.row(0)[0].size == 10
    assert not set(visit.row(0)[0].tolist()) & set(history["visitor"])


def test_route_tuning_sends_cold_users_to_two_tower_only_on_enough_evidence() -> None:
    from hybridrec.evaluation.evaluator import ModelReport
    from hybridrec.pipeline.train import MIN_ROUTE_USERS, _best_routes

    cold = {"popularity": 0.05, "als": 0.04, "hybrid": 0.06, "two_tower": 0.09}
    warm = {"popularity": 0.1, "als": 0.3, "hybrid": 0.32, "two_tower": 0.25}

    def reports(cold_users: int) -> dict[str, ModelReport]:
        return {
            n: ModelReport(
                n,
                {"ndcg@10": warm[n]},
                {
                    "cold": {"users": cold_users, "ndcg@10": cold[n]},
                    "warm": {"users": 400, "ndcg@10": warm[n]},
                    "hot": {"users": 0, "ndcg@10": float("nan")},
                },
                400 + cold_users,
            )
            for n in cold
        }

    routes = _best_routes(reports(MIN_ROUTE_USERS), "ndcg@10", fallback="hybrid")
    assert routes == {"cold": "two_tower", "warm": "hybrid", "hot": "hybrid"}
    # Too few cold validation users to choose by: the pipeline's hybrid.
    few = _best_routes(reports(MIN_ROUTE_USERS - 1), "ndcg@10", fallback="hybrid")
    assert few["cold"] == "hybrid"


def test_router_cold_route_to_two_tower_through_the_answer_path(
    models: dict[str, Recommender], tower: Recommender, data: InteractionData
) -> None:
    parts = {**models, "two_tower": tower}
    router = create_model("router", {"cold": "two_tower", "warm": "als", "hot": "hybrid"})
    router.attach(parts).fit(data)
    parts["router"] = router
    new = {"newcomer": data.items.ids[:3].tolist()}
    assert router.routes_for(["newcomer"], new) == ["two_tower"]
    (got,) = answer(provider(parts), ["newcomer"], 5, strategy="auto", history=new)
    assert got.methods == ["router→two_tower"] * 5
    want = tower.recommend(["newcomer"], 5, history=new).row(0)[0].tolist()
    assert got.items == want
    (warm,) = answer(provider(parts), [data.users.ids[0]], 5, strategy="auto")
    assert set(warm.methods) == {"router→als"}
