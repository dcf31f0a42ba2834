"""Quality on user-shaped data: the default config vs a tuned `implicit` ALS, per shape.

Shapes built at run time from MovieLens latest-small (``$HYBRIDREC_DATA_HOME``) into a temp
folder, nothing added to the repo:

(a) ratings as they are (per-user random 80/20 train/test);
(b) the same without the rating column;
(c) leave-last-one-out per user (test = each user's latest item);
(d) string ids (UUID-like user and item ids, the catalog's too).

Per shape the default config is trained through the library path of
``hybridrec train --train F --items F`` (no ``--valid``: validation is carved from the
training file, models tuned on it and refit on all of it), every stored model is scored on
the test file as ``hybridrec evaluate --model-dir`` does, and beside it `implicit`'s ALS is
tuned by Optuna (TPE, the config's ALS space, trials and budget) on the same carve-out, refit
on all the training data and scored on the same test users.

    python benchmarks/data.py [--config configs/default.toml] [--shapes a,b,c,d]
"""

from __future__ import annotations

import argparse
import inspect
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from hybridrec.config import PipelineConfig, SearchRange, load_config
from hybridrec.data.dataset import InteractionData
from hybridrec.data.split import carve_validation, random_split, temporal_split
from hybridrec.evaluation.evaluator import Evaluator
from hybridrec.evaluation.metrics import hits_matrix, ndcg_at_k, recall_at_k
from hybridrec.pipeline.artifacts import load_pipeline
from hybridrec.pipeline.train import evaluate_fitted, prepare_data, train_pipeline

SHAPES = {
    "a": "ratings",
    "b": "no rating column",
    "c": "leave-last-one-out",
    "d": "string ids",
}
IMPLICIT_KEYS = ("factors", "regularization", "alpha", "iterations")


def _movielens() -> tuple[pl.DataFrame, pl.DataFrame]:
    home = Path(os.environ.get("HYBRIDREC_DATA_HOME", "../shared/datasets"))
    root = home / "ml-latest-small"
    ratings = pl.read_csv(root / "ratings.csv").rename({"userId": "user_id", "movieId": "item_id"})
    movies = pl.read_csv(root / "movies.csv").rename({"movieId": "item_id"})
    return ratings, movies


def write_shape(shape: str, folder: Path) -> tuple[Path, Path, Path]:
    """Train, test and catalog files of one shape; returns their paths."""
    ratings, movies = _movielens()
    if shape == "c":
        split = temporal_split(ratings, test=None, leave_last_n=1)
    else:
        split = random_split(ratings, valid=0.0, test=0.2, seed=7)
    train, test = split.train, split.test
    if shape == "b":
        train, test = train.drop("rating"), test.drop("rating")
    if shape == "d":
        rng = np.random.default_rng(0)

        def ids(values: pl.Series, prefix: str) -> dict[int, str]:
            unique = values.unique().sort().to_list()
            return {v: f"{prefix}-{uuid.UUID(int=int(rng.integers(2**63)))}" for v in unique}

        users = ids(ratings["user_id"], "u")
        items = ids(movies["item_id"], "i")

        def remap(df: pl.DataFrame) -> pl.DataFrame:
            return df.with_columns(
                pl.col("user_id").replace_strict(users, return_dtype=pl.String),
                pl.col("item_id").replace_strict(items, return_dtype=pl.String),
            )

        train, test = remap(train), remap(test)
        movies = movies.with_columns(
            pl.col("item_id").replace_strict(items, return_dtype=pl.String)
        )
    paths = folder / "train.csv", folder / "test.csv", folder / "items.csv"
    train.write_csv(paths[0])
    test.write_csv(paths[1])
    movies.write_csv(paths[2])
    return paths


def _has(fn: Any, name: str) -> bool:
    return name in inspect.signature(fn).parameters


def _implicit_scores(
    params: dict[str, Any], data: InteractionData, ev: Evaluator, threads: int
) -> dict[str, float]:
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(
        factors=int(params["factors"]),
        regularization=float(params["regularization"]),
        alpha=float(params["alpha"]),
        iterations=int(params["iterations"]),
        random_state=42,
        num_threads=threads,
    )
    matrix = data.matrix.tocsr()
    model.fit(matrix, show_progress=False)
    rows = data.users.index(ev.user_ids, missing="mask")
    known = rows >= 0
    topk = np.full((ev.user_ids.size, 20), -1, np.int64)
    ids, _ = model.recommend(
        rows[known], matrix[rows[known]], N=20, filter_already_liked_items=True
    )
    topk[known] = np.asarray(ids, np.int64)
    hits = hits_matrix(topk, ev.relevant)
    return {
        "ndcg@10": float(np.mean(ndcg_at_k(hits[:, :10], ev.n_relevant))),
        "recall@20": float(np.mean(recall_at_k(hits[:, :20], ev.n_relevant))),
    }


def tuned_implicit(
    cfg: PipelineConfig, train_df: pl.DataFrame, test_df: pl.DataFrame, threads: int
) -> tuple[dict[str, float], dict[str, Any], float]:
    """`implicit` ALS tuned by Optuna on the pipeline's carve-out; its test scores."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = cfg.models["als"]
    space = {k: v for k, v in spec.search.items() if k in IMPLICIT_KEYS}
    base = {k: v for k, v in spec.params.items() if k in IMPLICIT_KEYS}
    base = {"factors": 64, "regularization": 1.0, "alpha": 1.0, "iterations": 15} | base
    s = cfg.split
    carved = carve_validation(train_df, method=s.method, share=s.valid, seed=s.seed)
    assert carved.valid is not None
    fit = InteractionData.from_frame(carved.train)
    valid_ev = Evaluator(fit, carved.valid, ks=[10, 20])

    def objective(trial: optuna.Trial) -> float:
        params = dict(base)
        for key, rng in space.items():
            if isinstance(rng, list):
                params[key] = trial.suggest_categorical(key, rng)
            elif key in ("factors", "iterations") or rng.type == "int":
                params[key] = trial.suggest_int(key, int(rng.low), int(rng.high), log=rng.log)
            else:
                assert isinstance(rng, SearchRange)
                params[key] = trial.suggest_float(key, rng.low, rng.high, log=rng.log)
        return _implicit_scores(params, fit, valid_ev, threads)[cfg.evaluation.target]

    start = time.perf_counter()
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.tuning.seed)
    )
    study.optimize(
        objective,
        n_trials=spec.search_trials or cfg.tuning.trials,
        timeout=cfg.tuning.budget_s,
    )
    best = base | study.best_params
    full = InteractionData.from_frame(train_df)
    scores = _implicit_scores(best, full, Evaluator(full, test_df, ks=[10, 20]), threads)
    return scores, best, time.perf_counter() - start


def run_shape(shape: str, cfg_path: Path, console: Console, threads: int) -> dict[str, Any]:
    cfg = load_config(cfg_path)
    with tempfile.TemporaryDirectory(prefix=f"bench-data-{shape}-") as tmp:
        folder = Path(tmp)
        train_path, test_path, items_path = write_shape(shape, folder)
        kw: dict[str, Any] = {"train_path": train_path, "console": console}
        if _has(train_pipeline, "items_path"):
            kw["items_path"] = items_path
        else:
            console.print("[yellow]train_pipeline takes no items_path here: no catalog[/yellow]")
        start = time.perf_counter()
        result = train_pipeline(cfg, folder / "models", **kw)
        train_s = time.perf_counter() - start
        prep_kw: dict[str, Any] = {"interactions": train_path}
        train_prep = prepare_data(cfg.data, **prep_kw)
        test_kw: dict[str, Any] = {"interactions": test_path}
        if _has(prepare_data, "conversion"):
            test_kw |= {"conversion": getattr(train_prep, "conversion", None), "training": False}
        test_df = prepare_data(cfg.data, **test_kw).interactions
        bundle = load_pipeline(folder / "models")
        reports = evaluate_fitted(bundle.models(), test_df, cfg.evaluation)
        implicit, best, implicit_s = tuned_implicit(cfg, train_prep.interactions, test_df, threads)
    rows = {r.name: {k: r.metrics[k] for k in ("ndcg@10", "recall@20")} for r in reports}
    return {
        "shape": f"({shape}) {SHAPES[shape]}",
        "rows": rows,
        "default": result.default_model,
        "implicit": implicit,
        "implicit_params": best,
        "train_s": train_s,
        "implicit_s": implicit_s,
        "test_users": reports[0].n_users,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/default.toml")
    parser.add_argument("--shapes", default="a,b,c,d")
    parser.add_argument("--threads", type=int, default=0, help="implicit threads (0: all)")
    args = parser.parse_args()
    console = Console(width=200, stderr=True)
    out = Console(width=200)
    failures = []
    for shape in args.shapes.split(","):
        res = run_shape(shape.strip(), Path(args.config), console, args.threads)
        table = Table(
            title=f"{res['shape']}: {res['test_users']} test users; default train "
            f"{res['train_s']:.0f}s, implicit tuning {res['implicit_s']:.0f}s"
        )
        table.add_column("model")
        table.add_column("ndcg@10", justify="right")
        table.add_column("recall@20", justify="right")
        for name, m in res["rows"].items():
            mark = " (default)" if name == res["default"] else ""
            table.add_row(name + mark, f"{m['ndcg@10']:.4f}", f"{m['recall@20']:.4f}")
        imp = res["implicit"]
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in res["implicit_params"].items()
        )
        table.add_row(
            f"implicit ALS tuned ({params})", f"{imp['ndcg@10']:.4f}", f"{imp['recall@20']:.4f}"
        )
        out.print(table)
        best = max(res["rows"], key=lambda n: res["rows"][n]["ndcg@10"])
        ok = res["rows"][best]["ndcg@10"] >= imp["ndcg@10"]
        out.print(
            f"floor {'ok' if ok else 'MISSED'}: best strategy {best} ndcg@10 "
            f"{res['rows'][best]['ndcg@10']:.4f} vs implicit {imp['ndcg@10']:.4f}"
        )
        if not ok:
            failures.append(res["shape"])
    if failures:
        raise SystemExit(f"floor missed on: {', '.join(failures)}")


if __name__ == "__main__":
    main()
