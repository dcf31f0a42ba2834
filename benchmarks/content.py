"""Content-based retrieval on MovieLens latest-small: encoding speed, query speed, cold start.

1. Encoding the 9,742 movies (title, genres, tags) with all-MiniLM-L6-v2: cold (empty
   cache, model load included) and again with the cache (a fresh encoder: no model load).
2. Exact top-20 over the catalog for every user, batched (ms per user).
3. Cold items: 10% of the items lose all their interactions (catalog rows kept); Recall@20
   etc. on those held-out items for content (MiniLM and TF-IDF), popularity and a random
   recommender.
4. Cold users: 20% of the users with more than 3 interactions keep only their first 1-3;
   content, ALS, EASE and popularity side by side.

Interactions are ratings >= 4 as positives (the default config). Needs HYBRIDREC_DATA_HOME
pointing at a folder with ml-latest-small. Usage: ``python benchmarks/content.py``.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from rich.console import Console
from rich.table import Table

from hybridrec.data.coldstart import (
    cold_item_split,
    cold_train_data,
    cold_user_split,
    evaluate_cold,
)
from hybridrec.data.dataset import InteractionData
from hybridrec.data.loaders import load_dataset
from hybridrec.data.transform import to_implicit
from hybridrec.embed import SentenceTextEncoder, item_texts
from hybridrec.evaluation.evaluator import ModelReport
from hybridrec.models import Recommender, create_model

K = 20
ALS = {"factors": 128, "regularization": 20.0, "alpha": 3.0, "iterations": 15, "random_state": 42}
EASE = {"regularization": 100.0}


class RandomRecommender(Recommender):
    """Uniformly random scores (a fixed stream per user), for the chance baseline."""

    name = "random"
    needs_history = False

    def _fit(self, data: InteractionData) -> None:
        pass

    def _score(
        self, users: NDArray[np.int64], history: sp.csr_matrix, fold_in: NDArray[np.bool_]
    ) -> NDArray[np.float32]:
        n = len(self._fitted()[1])
        return np.stack(
            [np.random.default_rng(int(u) + 1).random(n, dtype=np.float32) for u in users]
        )


def table_of(title: str, reports: list[ModelReport]) -> Table:
    t = Table(title=title)
    cols = [f"recall@{K}", f"ndcg@{K}", f"hit_rate@{K}", f"precision@{K}", f"coverage@{K}"]
    t.add_column("model")
    for c in [*cols, "users", "fit s"]:
        t.add_column(c, justify="right")
    for r in reports:
        fit = "-" if r.fit_seconds is None else f"{r.fit_seconds:.1f}"
        t.add_row(r.name, *(f"{r.metrics[c]:.4f}" for c in cols), str(r.n_users), fit)
    return t


def main() -> None:
    console = Console()
    raw = load_dataset("movielens-latest-small")
    assert raw.items is not None
    df = to_implicit(raw.interactions, mode="threshold", min_rating=4.0)
    texts = item_texts(raw.items, ["title", "categories", "tags"])
    console.print(f"{df.height:,} positive interactions, {raw.items.height:,} catalog items")

    with tempfile.TemporaryDirectory() as cache:
        # 1. encoding
        t = time.perf_counter()
        SentenceTextEncoder(cache_dir=cache, show_progress=False).encode(texts)
        cold_s = time.perf_counter() - t
        t = time.perf_counter()
        warm = SentenceTextEncoder(cache_dir=cache, show_progress=False)
        warm.encode(texts)
        warm_s = time.perf_counter() - t
        enc = Table(title=f"MiniLM encoding of {len(texts):,} items")
        for c in ("run", "seconds", "encoded by the model"):
            enc.add_column(c)
        enc.add_row("cold (empty cache, model load included)", f"{cold_s:.1f}", str(len(texts)))
        enc.add_row(
            "again, with the cache (fresh encoder)", f"{warm_s:.2f}", str(warm.last_encoded)
        )
        console.print(enc)

        content = {"encoder": "sentence", "cache_dir": cache, "show_progress": False}

        # 2. exact top-20 query speed
        full = InteractionData.from_frame(df, items_table=raw.items)
        model = create_model("content", content).fit(full)
        users = full.users.ids
        model.recommend(users[:10], k=K)
        t = time.perf_counter()
        model.recommend(users, k=K)
        per_user = (time.perf_counter() - t) / users.size * 1e3
        speed = Table(title=f"exact top-{K} over {len(model.items_):,} items (batched)")
        for c in ("users", "ms per user", "index"):
            speed.add_column(c)
        speed.add_row(str(users.size), f"{per_user:.3f}", "flat (BLAS product)")
        console.print(speed)

        # 3. cold items
        split = cold_item_split(df, items_share=0.1, seed=42)
        train = cold_train_data(split.train, raw.items)
        reports = evaluate_cold(
            {
                "content (MiniLM)": create_model("content", content),
                "content (TF-IDF)": create_model("content", {"show_progress": False}),
                "popularity": create_model("popularity"),
                "random": RandomRecommender(),
            },
            train,
            split.test,
            ks=(10, K),
        )
        n_cold = split.test["item_id"].n_unique()
        console.print(
            table_of(f"cold items: {n_cold} held-out items, full-catalog ranking", reports)
        )
        by = {r.name: r.metrics[f"recall@{K}"] for r in reports}
        console.print(
            f"content (MiniLM) / random recall@{K}: "
            f"{by['content (MiniLM)'] / max(by['random'], 1e-12):.1f}x"
        )

        # 4. cold users
        split = cold_user_split(df, users_share=0.2, max_train=3, seed=42)
        train = cold_train_data(split.train, raw.items)
        reports = evaluate_cold(
            {
                "content (MiniLM)": create_model("content", content),
                "content (TF-IDF)": create_model("content", {"show_progress": False}),
                "als": create_model("als", ALS),
                "ease": create_model("ease", EASE),
                "popularity": create_model("popularity"),
            },
            train,
            split.test,
            ks=(10, K),
        )
        n_users = split.test["user_id"].n_unique()
        console.print(table_of(f"cold users: {n_users} users with 1-3 training items", reports))


if __name__ == "__main__":
    main()
