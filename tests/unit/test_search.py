"""Optuna search over config spaces, and the validation carve-out."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hybridrec.config import PipelineConfig, SearchRange, load_config
from hybridrec.data.dataset import InteractionData
from hybridrec.data.split import carve_validation, random_split
from hybridrec.data.synthetic import planted_clusters
from hybridrec.errors import ConfigError
from hybridrec.evaluation.evaluator import Evaluator
from hybridrec.models import create_model
from hybridrec.models.hybrid import Hybrid, tune_weights
from hybridrec.pipeline.search import search_model
from hybridrec.pipeline.train import evaluate_pipeline, tune_model


@pytest.fixture(scope="module")
def problem() -> tuple[InteractionData, Evaluator]:
    df = planted_clusters(n_users=150, n_items=60, per_user=10, noise=0.2, seed=1)
    split = random_split(df, valid=0.0, test=0.2, seed=0)
    train = InteractionData.from_frame(split.train)
    return train, Evaluator(train, split.test, ks=[10])


KNN_SPACE = {
    "neighbors": SearchRange(low=2, high=50, log=True),
    "similarity": ["cosine", "bm25", "tfidf"],
}


def test_seeded_search_repeats(problem: tuple[InteractionData, Evaluator]) -> None:
    train, ev = problem
    runs = [
        search_model("itemknn", {}, KNN_SPACE, train, ev, target="ndcg@10", trials=6, seed=3).trials
        for _ in range(2)
    ]
    assert len(runs[0]) == 6
    assert [p for p, _ in runs[0]] == [p for p, _ in runs[1]]
    np.testing.assert_allclose([s for _, s in runs[0]], [s for _, s in runs[1]], atol=1e-9)
    # A different seed samples other points.
    other = search_model("itemknn", {}, KNN_SPACE, train, ev, target="ndcg@10", trials=6, seed=4)
    assert [p for p, _ in other.trials] != [p for p, _ in runs[0]]


def test_int_and_categorical_values_are_typed(problem: tuple[InteractionData, Evaluator]) -> None:
    train, ev = problem
    result = search_model("itemknn", {}, KNN_SPACE, train, ev, target="ndcg@10", trials=4)
    for params, _ in result.trials:
        assert isinstance(params["neighbors"], int) and 2 <= params["neighbors"] <= 50
        assert params["similarity"] in ("cosine", "bm25", "tfidf")
    assert result.score == max(s for _, s in result.trials)


def test_the_first_trial_is_the_configuration_as_written(
    problem: tuple[InteractionData, Evaluator],
) -> None:
    train, ev = problem
    given = {"neighbors": 7, "similarity": "bm25"}
    result = search_model("itemknn", given, KNN_SPACE, train, ev, target="ndcg@10", trials=3)
    first, score = result.trials[0]
    assert (first["neighbors"], first["similarity"]) == (7, "bm25")
    # So the search never ends below the configuration on validation.
    assert result.score >= score
    # Unset keys start from the model's defaults (item-kNN: 100 neighbours, cosine).
    wide = {**KNN_SPACE, "neighbors": SearchRange(low=2, high=200, log=True)}
    plain = search_model("itemknn", {}, wide, train, ev, target="ndcg@10", trials=2)
    defaults = create_model("itemknn").config
    assert plain.trials[0][0]["neighbors"] == defaults.neighbors
    assert plain.trials[0][0]["similarity"] == defaults.similarity
    # A configured value outside the space is not tried (the defaults' 100 neighbours
    # are outside 2-50): the search starts where TPE says.
    outside = search_model("itemknn", {}, KNN_SPACE, train, ev, target="ndcg@10", trials=2)
    assert all(2 <= p["neighbors"] <= 50 for p, _ in outside.trials)


def test_budget_bounds_the_search(problem: tuple[InteractionData, Evaluator]) -> None:
    train, ev = problem
    space = {"regularization": SearchRange(low=1.0, high=1000.0, log=True)}
    start = time.perf_counter()
    result = search_model(
        "ease", {}, space, train, ev, target="ndcg@10", trials=100_000, budget_s=0.5
    )
    elapsed = time.perf_counter() - start
    assert 1 <= len(result.trials) < 100_000
    # The trial running at the deadline finishes; one EASE fit here is milliseconds.
    assert elapsed < 0.5 + 3.0


def test_finds_the_planted_best_weights(problem: tuple[InteractionData, Evaluator]) -> None:
    """Popularity crosses the planted clusters; the search must weight item-kNN up."""
    train, ev = problem
    parts = {
        "popularity": create_model("popularity").fit(train),
        "itemknn": create_model("itemknn", {"neighbors": 20}).fit(train),
    }
    params = {"components": {"popularity": 0.5, "itemknn": 0.5}}
    space = {"components": SearchRange(low=0.0, high=1.0)}
    result = search_model(
        "hybrid", params, space, train, ev, target="ndcg@10", trials=25, components=parts
    )
    weights = result.best["components"]
    assert weights["itemknn"] > weights["popularity"]
    hybrid = create_model("hybrid", params)
    assert isinstance(hybrid, Hybrid)
    hybrid.attach(parts).fit(train)
    _, grid = tune_weights(hybrid, lambda h: ev.evaluate(h).metrics["ndcg@10"], step=0.1)
    grid_best = max(s for _, s in grid)
    popularity_only = next(s for w, s in grid if w["popularity"] == 1.0)
    assert result.score > popularity_only + 0.05
    assert result.score >= grid_best - 0.02


def test_tune_model_keeps_grids(problem: tuple[InteractionData, Evaluator]) -> None:
    train, ev = problem
    best, trials = tune_model(
        "itemknn", {}, {"neighbors": [5, 10, 20]}, train, ev, target="ndcg@10"
    )
    assert [t[0]["neighbors"] for t in trials] == [5, 10, 20]
    assert best == max(trials, key=lambda t: t[1])[0]
    # A grid beside a search space becomes a categorical dimension of it.
    best, trials = tune_model(
        "itemknn",
        {},
        {"similarity": ["cosine", "bm25"]},
        train,
        ev,
        target="ndcg@10",
        search={"neighbors": SearchRange(low=5, high=30)},
        trials=5,
    )
    assert len(trials) == 5
    assert {t[0]["similarity"] for t in trials} <= {"cosine", "bm25"}


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ("[models.als.search]\nfactorz = { low = 8, high = 16 }", "'factorz'"),
        ("[models.als.search]\nfactors = { low = 64, high = 16 }", "low (64.0) must be below"),
        ("[models.als.search]\nalpha = { low = 0, high = 3, log = true }", "log ranges"),
        ("[models.als.search]\nfactors = { low = 0, high = 16 }", "factors = 0"),
        ("[models.als.search]\nweighting = ['none', 'bm99']", "weighting = 'bm99'"),
        ("[models.als.search]\nfactors = { low = 8, high = 16, spread = 2 }", "spread"),
        (
            "[models.hybrid]\ncomponents = { als = 1.0 }\n[models.hybrid.search]\n"
            "components = { low = -1, high = 1 }",
            "low >= 0",
        ),
        ("[models.router.search]\nwarm = ['als', 'nope']", "nope not a pipeline model"),
    ],
)
def test_bad_spaces_are_one_line_errors(tmp_path: Path, table: str, needle: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[models.als]\n" + table + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and needle in message


def test_good_spaces_load(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        "[tuning]\ntrials = 7\nbudget_s = 9\n"
        "[models.als]\nsearch_trials = 3\n"
        "[models.als.search]\nfactors = { low = 8, high = 64, log = true, type = 'int' }\n"
        "weighting = ['none', 'bm25']\n"
        "[models.router.search]\nwarm = ['als']\n",
        encoding="utf-8",
    )
    cfg = load_config(path)
    assert cfg.tuning.trials == 7 and cfg.tuning.budget_s == 9
    assert cfg.models["als"].search_trials == 3
    assert cfg.models["als"].search["factors"] == SearchRange(low=8, high=64, log=True, type="int")
    assert cfg.models["als"].params == {}


def test_carve_out_rules() -> None:
    df = planted_clusters(n_users=30, n_items=30, per_user=10, seed=2)
    one = pl.DataFrame(
        {
            "user_id": [999],
            "item_id": [1000],
            "weight": [1.0],
            "timestamp": [5],
            "event_type": ["interaction"],
        }
    )
    df = pl.concat([df, one])
    last = carve_validation(df, method="temporal")
    assert last.valid is not None
    latest = df.sort("timestamp").group_by("user_id").last()
    expected = latest.filter(pl.col("user_id") != 999).select("user_id", "item_id").sort("user_id")
    got = last.valid.select("user_id", "item_id").sort("user_id")
    assert got.equals(expected)
    assert last.train.height + last.valid.height == df.height
    assert 999 in last.train["user_id"].to_list()
    shares = carve_validation(df, method="random", share=0.2, seed=1)
    assert shares.valid is not None
    per_user = shares.valid.group_by("user_id").len()
    assert per_user["len"].max() == 2 and shares.train.height + shares.valid.height == df.height
    # No timestamps: a random share even with a temporal method.
    untimed = df.with_columns(pl.lit(None, dtype=pl.Int64).alias("timestamp"))
    carved = carve_validation(untimed, method="temporal")
    assert carved.valid is not None and carved.valid.group_by("user_id").len()["len"].max() == 1


def test_evaluate_pipeline_tunes_on_a_carve_out_when_valid_is_zero() -> None:
    df = planted_clusters(n_users=120, n_items=40, per_user=10, noise=0.2, seed=3)
    split = random_split(df, valid=0.0, test=0.2, seed=0)
    assert split.valid is None
    cfg = PipelineConfig.model_validate(
        {
            "split": {"valid": 0.0},
            "tuning": {"trials": 4, "budget_s": 30},
            "models": {"itemknn": {"search": {"neighbors": {"low": 2, "high": 40}}}},
        }
    )
    _, chosen = evaluate_pipeline(cfg, split)
    assert chosen["itemknn"]["neighbors"] != 100  # searched, not the default
    assert 2 <= chosen["itemknn"]["neighbors"] <= 40


def test_hybrid_tuning_reuses_the_best_trial_instead_of_fitting_it_again(monkeypatch) -> None:
    # Refit on train + valid: the hybrid is tuned on its components fit on train, which is
    # what each component's best search trial is. Every fit is counted, with its data size.
    from hybridrec.models.itemknn import ItemKNN

    df = planted_clusters(n_users=120, n_items=40, per_user=10, noise=0.2, seed=3)
    split = random_split(df, valid=0.1, test=0.1, seed=0)
    assert split.valid is not None
    fits: list[int] = []
    real_fit = ItemKNN._fit

    def counted(self: ItemKNN, data: InteractionData) -> None:
        fits.append(data.matrix.nnz)
        real_fit(self, data)

    monkeypatch.setattr(ItemKNN, "_fit", counted)
    cfg = PipelineConfig.model_validate(
        {
            "tuning": {"trials": 3, "budget_s": 60},
            "models": {
                "itemknn": {"search": {"neighbors": {"low": 2, "high": 40}}},
                "hybrid": {
                    "components": {"itemknn": 0.5, "popularity": 0.5},
                    "search": {"components": {"low": 0.0, "high": 1.0}},
                    "search_trials": 3,
                },
            },
        }
    )
    reports, _ = evaluate_pipeline(cfg, split)
    train_nnz, all_nnz = split.train.height, split.train_valid().height
    # Three trials on train, one refit on train + valid for the test table: no fourth fit
    # on train with the chosen neighbours for the hybrid's search.
    assert fits == [train_nnz] * 3 + [all_nnz]
    # The same tables as fitting it again.
    fits.clear()
    monkeypatch.setattr("hybridrec.pipeline.train._tuned_on", lambda specs: set())
    again, _ = evaluate_pipeline(cfg, split)
    assert fits == [train_nnz] * 3 + [all_nnz, train_nnz]
    assert [r.name for r in again] == [r.name for r in reports]
    for got, want in zip(reports, again, strict=True):
        assert got.metrics == pytest.approx(want.metrics, rel=1e-6), got.name
