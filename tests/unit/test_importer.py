"""Loose artifacts → models: .npy factors, implicit's .npz, Spark exports, pickles, top-N."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from hybridrec.bundle import open_bundle
from hybridrec.bundle.importer import find_loose, import_loose
from hybridrec.data.dataset import InteractionData
from hybridrec.errors import DataError

N_USERS, N_ITEMS, F = 40, 25, 6


@pytest.fixture
def factors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    # Ids deliberately out of sorted order: the importer must keep rows with their ids.
    return {
        "user_ids": rng.permutation(np.arange(500, 500 + N_USERS)),
        "item_ids": np.asarray([f"sku-{i:03d}" for i in rng.permutation(N_ITEMS)]),
        "user_factors": rng.normal(size=(N_USERS, F)),
        "item_factors": rng.normal(size=(N_ITEMS, F)),
    }


def expected_top(f: dict[str, np.ndarray], user: int, k: int, seen: set[str] = frozenset()) -> list:
    row = int(np.flatnonzero(f["user_ids"] == user)[0])
    scores = f["user_factors"][row] @ f["item_factors"].T
    order = [int(i) for i in np.argsort(-scores, kind="stable") if f["item_ids"][i] not in seen]
    return [str(f["item_ids"][i]) for i in order[:k]]


def write_npy(root: Path, f: dict[str, np.ndarray]) -> Path:
    root.mkdir(exist_ok=True)
    np.save(root / "user_factors.npy", f["user_factors"])
    np.save(root / "item_factors.npy", f["item_factors"])
    pl.DataFrame({"user_id": f["user_ids"]}).write_csv(root / "user_ids.csv")
    (root / "item_ids.json").write_text(json.dumps(f["item_ids"].tolist()))
    return root


def test_npy_factors_with_id_files_recommend_like_the_factors(
    tmp_path: Path, factors: dict[str, np.ndarray]
) -> None:
    root = write_npy(tmp_path / "loose", factors)
    assert set(find_loose(root)) == {"user_factors", "item_factors", "user_ids", "item_ids"}
    result = import_loose(root)
    assert list(result.models) == ["als"]
    als = result.models["als"]
    for user in factors["user_ids"][:5]:
        got = als.recommend([int(user)], 5).row(0)[0].tolist()
        assert got == expected_top(factors, int(user), 5)


def test_interactions_give_exclude_seen_and_popularity(
    tmp_path: Path, factors: dict[str, np.ndarray]
) -> None:
    root = write_npy(tmp_path / "loose", factors)
    user = int(factors["user_ids"][0])
    top = expected_top(factors, user, 3)
    pl.DataFrame(
        {"user_id": [user, user, int(factors["user_ids"][1])], "item_id": [top[0], top[1], top[1]]}
    ).write_csv(root / "interactions.csv")
    result = import_loose(root)
    assert set(result.models) == {"als", "popularity"}
    got = result.models["als"].recommend([user], 3).row(0)[0].tolist()
    assert got == expected_top(factors, user, 3, seen={top[0], top[1]})
    assert result.models["popularity"].recommend([999], 1, history={999: []}).row(0)[0][0] == top[1]


def test_implicit_saved_model_is_imported(tmp_path: Path, planted: pl.DataFrame) -> None:
    from implicit.als import AlternatingLeastSquares

    data = InteractionData.from_frame(planted)
    model = AlternatingLeastSquares(factors=8, iterations=5, random_state=0, use_gpu=False)
    model.fit(data.matrix, show_progress=False)
    root = tmp_path / "implicit"
    root.mkdir()
    model.save(root / "als.npz")
    (root / "user_ids.txt").write_text("\n".join(map(str, data.users.ids)))
    np.save(root / "item_ids.npy", data.items.ids)
    result = import_loose(root)
    als = result.models["als"]
    ids, _ = model.recommend(3, data.matrix[3], N=5, filter_already_liked_items=False)
    want = data.items.lookup(ids).tolist()
    got = als.recommend([data.users.ids[3]], 5, exclude_seen=False).row(0)[0].tolist()
    assert got == want


@pytest.mark.parametrize("fmt", ["parquet", "csv-dir"])
def test_spark_factor_exports(tmp_path: Path, factors: dict[str, np.ndarray], fmt: str) -> None:
    root = tmp_path / "spark"
    root.mkdir()
    for side in ("user", "item"):
        ids = factors[f"{side}_ids"]
        rows = factors[f"{side}_factors"]
        if fmt == "parquet":
            df = pl.DataFrame({"id": ids, "features": rows.tolist()})
            df.write_parquet(root / f"{side}_factors.parquet")
        else:
            # Spark's CSV writer: a directory of part files, features as "[a, b, ...]" text.
            folder = root / f"{side}_factors"
            folder.mkdir()
            text = ["[" + ", ".join(repr(float(v)) for v in r) + "]" for r in rows]
            half = len(ids) // 2
            pl.DataFrame({"id": ids[:half], "features": text[:half]}).write_csv(
                folder / "part-00000.csv"
            )
            pl.DataFrame({"id": ids[half:], "features": text[half:]}).write_csv(
                folder / "part-00001.csv"
            )
    als = import_loose(root).models["als"]
    user = int(factors["user_ids"][7])
    assert als.recommend([user], 4).row(0)[0].tolist() == expected_top(factors, user, 4)


def test_spark_table_without_features_column_is_named(tmp_path: Path) -> None:
    root = tmp_path / "spark"
    root.mkdir()
    pl.DataFrame({"id": [1], "vec": ["[1.0]"]}).write_csv(root / "user_factors.csv")
    pl.DataFrame({"id": [1], "features": ["[1.0]"]}).write_csv(root / "item_factors.csv")
    with pytest.raises(DataError, match=r"user_factors\.csv: factor table needs columns"):
        import_loose(root)


def test_pickled_ids_need_explicit_permission(
    tmp_path: Path, factors: dict[str, np.ndarray]
) -> None:
    root = write_npy(tmp_path / "loose", factors)
    (root / "user_ids.csv").unlink()
    mapping = {int(u): i for i, u in enumerate(factors["user_ids"])}
    with open(root / "user_map.pkl", "wb") as fh:
        pickle.dump(mapping, fh)
    with pytest.raises(DataError, match=r"user_map\.pkl: a pickle .*--allow-pickle"):
        import_loose(root)
    als = import_loose(root, allow_pickle=True).models["als"]
    user = int(factors["user_ids"][2])
    assert als.recommend([user], 3).row(0)[0].tolist() == expected_top(factors, user, 3)


def test_dense_similarity_and_precomputed_recommendations(
    tmp_path: Path, factors: dict[str, np.ndarray]
) -> None:
    root = write_npy(tmp_path / "loose", factors)
    rng = np.random.default_rng(1)
    sim = rng.random((N_ITEMS, N_ITEMS))
    np.save(root / "similarity.npy", sim)
    user = int(factors["user_ids"][4])
    # Precomputed rows that no model would produce: the answer must come from them.
    chosen = factors["item_ids"][[3, 1, 2]].tolist()
    pl.DataFrame(
        {"user_id": [user] * 3, "item_id": chosen[::-1], "rank": [3, 2, 1], "score": [1.0, 2, 3]}
    ).write_csv(root / "recommendations.csv")
    result = import_loose(root)
    assert set(result.models) == {"als", "itemknn"}
    assert result.top_n is not None and result.top_n.rows == 3
    knn = result.models["itemknn"]
    query = str(factors["item_ids"][0])
    row = sim[0].copy()
    row[0] = -np.inf
    want = [str(factors["item_ids"][i]) for i in np.argsort(-row)[:3]]
    assert knn.similar_items([query], 3).row(0)[0].tolist() == want
    bundle = open_bundle(root)
    assert bundle.recommend([user], 3).row(0)[0].tolist() == chosen
    # Beyond the precomputed rows, the model answers.
    assert bundle.recommend([user], 5).row(0)[0].tolist() == expected_top(factors, user, 5)


def test_sparse_similarity_from_implicit_item_knn(tmp_path: Path, planted: pl.DataFrame) -> None:
    from implicit.nearest_neighbours import CosineRecommender

    data = InteractionData.from_frame(planted)
    knn = CosineRecommender(K=10)
    knn.fit(data.matrix, show_progress=False)
    root = tmp_path / "knn"
    root.mkdir()
    knn.save(str(root / "knn.npz"))
    pl.DataFrame({"item_id": data.items.ids}).write_parquet(root / "item_ids.parquet")
    pl.DataFrame({"user_id": planted["user_id"], "item_id": planted["item_id"]}).write_csv(
        root / "interactions.csv"
    )
    result = import_loose(root)
    model = result.models["itemknn"]
    assert sp.issparse(model.similarity_)  # type: ignore[attr-defined]
    ids, _ = knn.recommend(0, data.matrix[0], N=5)
    assert (
        model.recommend([data.users.ids[0]], 5).row(0)[0].tolist()
        == data.items.lookup(ids).tolist()
    )


def test_mismatched_ids_and_factors_are_named(
    tmp_path: Path, factors: dict[str, np.ndarray]
) -> None:
    root = write_npy(tmp_path / "loose", factors)
    pl.DataFrame({"user_id": factors["user_ids"][:-1]}).write_csv(root / "user_ids.csv")
    with pytest.raises(DataError, match=rf"user_ids\.csv: {N_USERS - 1} ids for {N_USERS} rows"):
        import_loose(root)


def test_nothing_to_import_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="no model artifacts"):
        import_loose(tmp_path)


def test_service_path_serves_loose_files_and_says_so(
    tmp_path: Path, factors: dict[str, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    root = write_npy(tmp_path / "loose", factors)
    with caplog.at_level(logging.WARNING):
        bundle = open_bundle(root)
    assert "no bundle; serving loose files" in caplog.text
    user = int(factors["user_ids"][0])
    assert bundle.recommend([user], 3).row(0)[0].tolist() == expected_top(factors, user, 3)
