"""Cold-start splits and their evaluation: new items, and users with a short history.

- `cold_item_split`: a random share of the items is "new": all their interactions move to
  test and none stay in train, while their catalog rows are kept. Test keeps only users who
  still have training history, so the question is exactly "can the model recommend items
  nobody has interacted with to users it knows?".
- `cold_user_split`: a random share of users (among those with more than ``max_train``
  interactions) keep only their first 1 to ``max_train`` interactions (the earliest by
  time, else random ones; how many is drawn uniformly) in train; the rest of their
  interactions are the test set. Every other user keeps all interactions in train and is
  not evaluated.

`evaluate_cold` runs the ordinary `Evaluator` on such a split with the training item
vocabulary extended to the whole catalog (`cold_train_data`), so models like the content
model can rank never-seen items, and held-out items a model cannot recommend count as misses
(the evaluator divides by every held-out item, known or not).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import polars as pl

from hybridrec.data.dataset import InteractionData
from hybridrec.data.split import Split
from hybridrec.data.vocab import Vocab
from hybridrec.errors import ConfigError, DataError
from hybridrec.evaluation.evaluator import Evaluator, ModelReport
from hybridrec.models.base import Recommender

__all__ = [
    "cold_item_split",
    "cold_start_reports",
    "cold_train_data",
    "cold_user_split",
    "evaluate_cold",
]


def cold_item_split(df: pl.DataFrame, *, items_share: float = 0.1, seed: int = 42) -> Split:
    """Hold out every interaction of a random share of the items.

    Args:
        df: Canonical interactions.
        items_share: Share of the interacted items made cold (at least one).
        seed: Random seed; the same seed gives the same split.

    Returns:
        A `Split` whose test holds only cold items, for users that keep training rows.

    Raises:
        ConfigError: ``items_share`` is not in (0, 1).
        DataError: The split leaves no training or no test rows.
    """
    if not 0 < items_share < 1:
        raise ConfigError(f"items_share must be in (0, 1) (got {items_share})")
    items = np.unique(df["item_id"].to_numpy())
    if items.size < 2:
        raise DataError("a cold-item split needs at least two distinct items")
    rng = np.random.default_rng(seed)
    n_cold = min(items.size - 1, max(1, round(items_share * items.size)))
    cold = pl.Series("item_id", rng.choice(items, size=n_cold, replace=False))
    is_cold = pl.col("item_id").is_in(cold.implode())
    train = df.filter(~is_cold)
    test = df.filter(is_cold)
    test = test.filter(pl.col("user_id").is_in(train["user_id"].unique().implode()))
    if train.height == 0 or test.height == 0:
        raise DataError(f"cold-item split left {train.height} training and {test.height} test rows")
    return Split(train=train, test=test)


def cold_user_split(
    df: pl.DataFrame,
    *,
    users_share: float = 0.2,
    max_train: int = 3,
    seed: int = 42,
) -> Split:
    """Turn a random share of users into cold users with 1 to ``max_train`` training rows.

    Args:
        df: Canonical interactions.
        users_share: Share of the eligible users (more than ``max_train`` interactions)
            made cold.
        max_train: The most training interactions a cold user keeps (at least 1).
        seed: Random seed.

    Returns:
        A `Split`: train holds every other user's rows and each cold user's first rows;
        test holds the rest of the cold users' rows.

    Raises:
        ConfigError: ``users_share`` is not in (0, 1] or ``max_train`` < 1.
        DataError: No user has more than ``max_train`` interactions.
    """
    if not 0 < users_share <= 1:
        raise ConfigError(f"users_share must be in (0, 1] (got {users_share})")
    if max_train < 1:
        raise ConfigError(f"max_train must be >= 1 (got {max_train})")
    counts = df.group_by("user_id").len()
    eligible = np.sort(counts.filter(pl.col("len") > max_train)["user_id"].to_numpy())
    if eligible.size == 0:
        raise DataError(f"no user has more than {max_train} interactions to make cold")
    rng = np.random.default_rng(seed)
    n_cold = max(1, round(users_share * eligible.size))
    cold = rng.choice(eligible, size=n_cold, replace=False)
    keep = rng.integers(1, max_train + 1, size=n_cold)
    keep_of = pl.DataFrame({"user_id": cold, "_keep": keep})
    has_time = df["timestamp"].null_count() < df.height
    tagged = df.with_row_index("_row").with_columns(
        _rand=pl.Series(rng.random(df.height)),
        _ts=pl.col("timestamp").fill_null(np.iinfo(np.int64).max),
    )
    order = ["user_id", "_ts", "_row"] if has_time else ["user_id", "_rand"]
    tagged = (
        tagged.sort(order)
        .with_columns(_rank=pl.int_range(pl.len()).over("user_id"))
        .join(keep_of, on="user_id", how="left")
        .sort("_row")
    )
    to_test = pl.col("_keep").is_not_null() & (pl.col("_rank") >= pl.col("_keep"))
    drop = ["_row", "_rand", "_ts", "_rank", "_keep"]
    train = tagged.filter(~to_test).drop(drop)
    test = tagged.filter(to_test).drop(drop)
    return Split(train=train, test=test)


def cold_train_data(train: pl.DataFrame, items_table: pl.DataFrame | None) -> InteractionData:
    """Training data whose item vocabulary is the catalog plus the training items.

    Every model evaluated on a cold split must be fit on this, so all share one vocabulary
    and never-interacted catalog items can be ranked (the content model) or not (the rest).
    """
    ids = train["item_id"].to_numpy()
    if items_table is not None:
        if (items_table.schema["item_id"] == pl.String) != (train.schema["item_id"] == pl.String):
            raise DataError("catalog item ids and interaction item ids have different types")
        ids = np.concatenate([ids, items_table["item_id"].to_numpy()])
    return InteractionData.from_frame(train, items_table=items_table, items=Vocab(ids, kind="item"))


def evaluate_cold(
    models: Mapping[str, Recommender],
    train: InteractionData,
    test: pl.DataFrame,
    *,
    ks: Sequence[int] = (10, 20),
    fit: bool = True,
) -> list[ModelReport]:
    """Evaluate models on a cold split with the ordinary `Evaluator`.

    Args:
        models: Display name → model; fit here on ``train`` when ``fit`` (timed), else they
            must already be fit on ``train`` (built by `cold_train_data`).
        train: Training data from `cold_train_data`.
        test: The split's held-out interactions.
        ks: Cutoffs.
        fit: Fit each model on ``train`` first.

    Raises:
        DataError: A model was fit on a different item vocabulary.
    """
    evaluator = Evaluator(train, test, ks=ks)
    reports = []
    for name, model in models.items():
        seconds = None
        if fit:
            start = time.perf_counter()
            model.fit(train)
            seconds = time.perf_counter() - start
        if model.items_ != train.items:
            raise DataError(
                f"model {name!r} was fit on a different item vocabulary than the cold split's "
                "training data; fit it on cold_train_data(...)"
            )
        reports.append(evaluator.evaluate(model, name, fit_seconds=seconds))
    return reports


def cold_start_reports(
    interactions: pl.DataFrame,
    items_table: pl.DataFrame | None,
    make_models: Callable[[], Mapping[str, Recommender]],
    *,
    items_share: float = 0.1,
    users_share: float = 0.2,
    max_train: int = 3,
    ks: Sequence[int] = (10, 20),
    seed: int = 42,
) -> dict[str, list[ModelReport]]:
    """Both cold-start evaluations, for reporting beside the normal split.

    Args:
        interactions: Canonical (already implicit) interactions.
        items_table: The catalog (needed by content models).
        make_models: Returns fresh, unfitted models by display name (called once per split).
        items_share: See `cold_item_split`.
        users_share: See `cold_user_split`.
        max_train: See `cold_user_split`.
        ks: Cutoffs.
        seed: Seed of both splits.

    Returns:
        ``{"cold_items": reports, "cold_users": reports}``.
    """
    out: dict[str, list[ModelReport]] = {}
    items_split = cold_item_split(interactions, items_share=items_share, seed=seed)
    out["cold_items"] = evaluate_cold(
        make_models(), cold_train_data(items_split.train, items_table), items_split.test, ks=ks
    )
    users_split = cold_user_split(
        interactions, users_share=users_share, max_train=max_train, seed=seed
    )
    out["cold_users"] = evaluate_cold(
        make_models(), cold_train_data(users_split.train, items_table), users_split.test, ks=ks
    )
    return out
