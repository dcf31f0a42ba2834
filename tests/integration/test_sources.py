"""Two catalogs merged by the data layer: namespaced item ids, a ``source`` column, one model.

Films and books both number their items 1000-1059 and share their users (one account, two
catalogs). Each user likes one cluster of films and the same-numbered cluster of books,
so a model trained on the merge must keep ``films:1003`` and ``books:1003`` apart and can
learn across the catalogs.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from cli_helpers import assert_error, assert_ok, invoke

from hybridrec.bundle import Bundle, ModelStore
from hybridrec.config import load_config
from hybridrec.data.synthetic import planted_clusters
from hybridrec.pipeline.train import prepare_data

CLUSTERS, N_ITEMS = 3, 60
GENRES = ("Space", "Romance", "Horror")

CONFIG = """
[data]
source = "sources"

[[data.sources]]
name = "films"
interactions = "films/ratings.csv"
items = "films/items.csv"

[[data.sources]]
name = "books"
interactions = "books/reads.parquet"
items = "books/items.parquet"
columns = { item_id = "isbn" }

[models.popularity]

[models.two_tower]
epochs = 6
min_epochs = 6
tower_dims = [32]
output_dim = 32
show_progress = false
seed = 3
"""


def catalog(kind: str) -> pl.DataFrame:
    ids = list(range(1000, 1000 + N_ITEMS))
    return pl.DataFrame(
        {
            "item_id": ids,
            "title": [f"{GENRES[(i - 1000) % CLUSTERS]} {kind} {i}" for i in ids],
            "categories": [GENRES[(i - 1000) % CLUSTERS] for i in ids],
        }
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sources")
    (root / "films").mkdir()
    (root / "books").mkdir()
    films = planted_clusters(n_users=120, n_items=N_ITEMS, n_clusters=CLUSTERS, seed=1)
    books = planted_clusters(n_users=120, n_items=N_ITEMS, n_clusters=CLUSTERS, seed=2)
    films.select("user_id", "item_id", "timestamp").write_csv(root / "films/ratings.csv")
    books.select("user_id", pl.col("item_id").alias("isbn"), "timestamp").write_parquet(
        root / "books/reads.parquet"
    )
    catalog("film").write_csv(root / "films/items.csv")
    catalog("book").rename({"item_id": "isbn"}).write_parquet(root / "books/items.parquet")
    (root / "sources.toml").write_text(CONFIG, encoding="utf-8")
    return root


def test_merged_ids_never_collide_and_carry_their_source(root: Path) -> None:
    cfg = load_config(root / "sources.toml")
    prepared = prepare_data(cfg.data)
    films = pl.read_csv(root / "films/ratings.csv")
    books = pl.read_parquet(root / "books/reads.parquet")
    df = prepared.interactions
    assert df.height == films.height + books.height
    ids = set(df["item_id"].to_list())
    assert {"films:1000", "books:1000"} <= ids and len(ids) == 2 * N_ITEMS
    # Users are shared: user 7's rows come from both catalogs.
    seven = df.filter(pl.col("user_id") == 7)["item_id"].to_list()
    assert {i.split(":")[0] for i in seven} == {"films", "books"}
    assert prepared.items is not None and prepared.items.height == 2 * N_ITEMS
    by_source = dict(prepared.items.group_by("source").len().iter_rows())
    assert by_source == {"films": N_ITEMS, "books": N_ITEMS}
    row = prepared.items.filter(pl.col("item_id") == "books:1004").row(0, named=True)
    assert row["title"] == "Romance book 1004" and row["source"] == "books"


def test_one_model_trained_on_both_catalogs_answers_with_namespaced_ids(root: Path) -> None:
    model_dir = root / "models"
    assert_ok(
        invoke(
            "train", "--config", root / "sources.toml", "--model-dir", model_dir, "--no-evaluate"
        )
    )
    bundle = Bundle.open(model_dir / ModelStore(model_dir).current())
    tower = bundle.get("two_tower")
    assert tower is not None and len(tower.items_) == 2 * N_ITEMS
    # The item tower reads the source as a categorical feature.
    assert "source" in tower.item_side_.categorical
    ran = invoke(
        "recommend", "--model-dir", model_dir, "--user", "2", "--model", "two_tower", "-k", "10"
    )
    assert_ok(ran)
    got = pl.read_csv(ran.stdout.encode())["item_id"].to_list()
    assert len(got) == 10 and all(i.split(":")[0] in {"films", "books"} for i in got)
    # User 2 likes cluster 1 in both catalogs: most answers are cluster-1 items of either.
    own = [i for i in got if (int(i.split(":")[1]) - 1000) % CLUSTERS == 1]
    assert len(own) >= 7, got


@pytest.mark.parametrize(
    ("sources", "pattern"),
    [
        ('[[data.sources]]\nname = "a:b"\ninteractions = "x.csv"\n', "without ':'"),
        (
            '[[data.sources]]\nname = "a"\ninteractions = "films/ratings.csv"\n'
            '[[data.sources]]\nname = "a"\ninteractions = "films/ratings.csv"\n',
            "appears twice",
        ),
        ("", "go together"),
        ('[[data.sources]]\nname = "a"\ninteractions = "missing.csv"\n', "missing.csv"),
    ],
)
def test_bad_sources_are_clear_errors(root: Path, sources: str, pattern: str) -> None:
    path = root / "bad.toml"
    path.write_text(f'[data]\nsource = "sources"\n{sources}\n[models.popularity]\n', "utf-8")
    assert_error(invoke("train", "--config", path, "--model-dir", root / "bad"), pattern)
