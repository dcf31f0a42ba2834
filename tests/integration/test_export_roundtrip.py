"""``export interactions`` → factors trained outside hybridrec → ``bundle import`` → recommend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from cli_helpers import assert_error, assert_ok, invoke
from implicit.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from hybridrec.data.synthetic import planted_clusters

K = 5


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_external_factors_come_back(tmp_path: Path, fmt: str) -> None:
    df = planted_clusters(n_users=120, n_items=45, n_clusters=3, per_user=8, seed=2)
    df.select("user_id", "item_id", "timestamp").write_csv(tmp_path / "events.csv")
    (tmp_path / "pipeline.toml").write_text(
        '[data]\nsource = "files"\ninteractions = "events.csv"\n', encoding="utf-8"
    )
    export = tmp_path / "export"
    ran = invoke(
        "export", "interactions", "--config", tmp_path / "pipeline.toml", "--output", export,
        "--format", fmt,
    )  # fmt: skip
    assert_ok(ran)
    assert f"wrote {df.height:,} interactions of 120 users and 45 items" in ran.stdout

    read = pl.read_parquet if fmt == "parquet" else pl.read_csv
    table = read(export / f"interactions.{fmt}")
    assert table.height == df.height
    # The external trainer sees only indices and weights.
    x = sp.csr_matrix(
        (table["weight"].to_numpy().astype(np.float32),
         (table["user_index"].to_numpy(), table["item_index"].to_numpy())),
        shape=(120, 45),
    )  # fmt: skip
    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(factors=8, iterations=10, random_state=0, use_gpu=False)
        als.fit(x, show_progress=False)
    user_f, item_f = np.asarray(als.user_factors), np.asarray(als.item_factors)
    np.save(export / "user_factors.npy", user_f)
    np.save(export / "item_factors.npy", item_f)

    model_dir = tmp_path / "models"
    ran = invoke("bundle", "import", export, "--model-dir", model_dir)
    assert_ok(ran)
    assert "user_factors.npy" in ran.stderr and "interactions" in ran.stderr

    ids = read(export / f"user_ids.{fmt}").sort("index")["id"].to_numpy()
    item_ids = read(export / f"item_ids.{fmt}").sort("index")["id"].to_numpy()
    sample = ids[[0, 7, 50, 119]]
    args = [a for u in sample for a in ("--user", str(u))]
    ran = invoke("recommend", "--model-dir", model_dir, "-k", str(K), *args)
    assert_ok(ran)
    recs = pl.read_csv(ran.stdout.encode())
    seen = df.group_by("user_id").agg("item_id")
    seen_by = dict(zip(seen["user_id"], seen["item_id"].to_list(), strict=True))
    cluster = {1000 + i: i % 3 for i in range(45)}
    for u in sample:
        got = recs.filter(pl.col("user_id") == u)["item_id"].to_list()
        assert len(got) == K
        assert not set(got) & set(seen_by[u]), "seen items must be excluded"
        # Against a direct numpy top-k of the exported factors (seen items masked): the
        # k-th score bounds every returned item's score, with a float tolerance for ties.
        row = int(np.searchsorted(ids, u))
        scores = item_f @ user_f[row]
        scores[np.isin(item_ids, seen_by[u])] = -np.inf
        kth = np.sort(scores)[::-1][K - 1]
        got_scores = scores[np.searchsorted(item_ids, got)]
        assert (got_scores >= kth - 1e-4 * max(1.0, abs(kth))).all()
        # The planted pattern survived the trip: mostly the user's own cluster.
        own = (u - 1) % 3
        assert sum(cluster[i] == own for i in got) >= K - 1


def test_export_of_a_missing_file_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text(
        '[data]\nsource = "files"\ninteractions = "nope.parquet"\n', encoding="utf-8"
    )
    ran = invoke("export", "interactions", "-c", tmp_path / "p.toml", "-o", tmp_path / "out")
    assert_error(ran, "nope.parquet")
    assert not (tmp_path / "out").exists()
