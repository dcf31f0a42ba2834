"""Spark ALS (``backend = "spark"``, ``local[2]``) against the implicit backend on latest-small.

Both are configured with the same hyperparameters, trained on the same split and scored
by the same evaluator in one ``hybridrec evaluate`` run; their NDCG@10 must agree within
5% relative (the hyperparameter mapping of `hybridrec.models.spark_als` at work). The
figures and training times are printed (``pytest -s`` shows them). regularization and
alpha are the values of ``configs/default.toml``: with λ = 20, mapping λ onto Spark's
regParam by the plain mean row count (instead of Σn / Σn²) halves Spark's NDCG, so the test
tells the mappings apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import assert_ok, movielens_home, run

pytestmark = pytest.mark.slow

ML_DIR = "ml-latest-small"
PARAMS = """factors = 32
iterations = 10
regularization = 20.0
alpha = 3.0
random_state = 1
"""
CONFIG = f"""
[split]
seed = 7

[evaluation]
k = [10]

[models.als]
{PARAMS}
[models.als_spark]
model = "als"
backend = "spark"
master = "local[2]"
{PARAMS}"""


@pytest.fixture(scope="module")
def data_home() -> Path:
    return movielens_home()


def test_spark_als_matches_implicit_on_latest_small(tmp_path: Path, data_home: Path) -> None:
    config = tmp_path / "spark.toml"
    config.write_text(CONFIG, encoding="utf-8")
    ran = run("evaluate", "--config", config, "--format", "json", data_home=data_home)
    assert_ok(ran)
    # Spark's logs go to stderr: stdout is the JSON document alone.
    reports = json.loads(ran.stdout)
    implicit, spark = reports["als"], reports["als_spark"]
    print(
        f"\nlatest-small NDCG@10: implicit {implicit['ndcg@10']:.4f} "
        f"({implicit['fit_seconds']:.1f} s), spark local[2] {spark['ndcg@10']:.4f} "
        f"({spark['fit_seconds']:.1f} s)"
    )
    assert implicit["ndcg@10"] > 0.15, implicit
    assert spark["ndcg@10"] == pytest.approx(implicit["ndcg@10"], rel=0.05)
    # Both clearly beat popularity: neither backend is matching the other by being useless.
    assert spark["ndcg@10"] > 1.5 * reports["popularity"]["ndcg@10"]
