"""`hybridrec train` at scale beside the same pipeline written directly (polars + scipy + implicit).

For each size, a synthetic event log is written as Parquet: ``user_id, item_id, timestamp``
in time order (no weight column: check-ins), Zipf-like item popularity and user activity,
rows / 20 users and rows / 200 items, no (user, item) pair repeated. Then, each in a fresh
process, with the same ALS hyperparameters:

- direct: ``pl.read_parquet`` → dense-rank codes → ``scipy.sparse.csr_matrix`` → implicit
  ``AlternatingLeastSquares.fit``: the least a script can do;
- hybridrec: ``hybridrec train --train FILE --no-evaluate`` with a config that trains ALS
  only (no precomputed top-N), bundle written to the model store.

Reported: wall seconds and peak RSS (the child's ``ru_maxrss`` from ``wait4``) of both, and
the ratios. Both must produce a real model: factor shapes match the log's users and items,
and the stored model's top-10 for sampled users overlaps implicit's (≥ 90% on average).

    python benchmarks/train_scale.py [--rows 1M,4M,16M] [--factors 64] [--iterations 5]

Floor (issue 18): hybridrec's peak RSS ≤ 1.5× the direct pipeline's at 16M rows; ``--strict``
exits 1 when a size misses it; a wrong model always exits 1.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from hybridrec.data.synthetic import random_interactions
from hybridrec.pipeline.artifacts import load_pipeline

K = 10
SAMPLE_USERS = 200
MIN_OVERLAP = 0.9
FLOOR = 1.5
HYBRIDREC = Path(sys.executable).parent / "hybridrec"

# The direct pipeline, run as `python -c DIRECT PARAMS_JSON`; prints its result as JSON.
DIRECT = r"""
import json, sys
import numpy as np
import polars as pl
import scipy.sparse as sp
from implicit.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

p = json.loads(sys.argv[1])
df = pl.read_parquet(p["path"], columns=["user_id", "item_id"])
user_ids = df["user_id"].unique().sort().to_numpy()
item_ids = df["item_id"].unique().sort().to_numpy()
codes = df.select(
    (pl.col("user_id").rank("dense") - 1).cast(pl.Int32),
    (pl.col("item_id").rank("dense") - 1).cast(pl.Int32),
)
del df
x = sp.csr_matrix(
    (np.ones(codes.height, np.float32), (codes["user_id"].to_numpy(), codes["item_id"].to_numpy())),
    shape=(user_ids.size, item_ids.size),
)
del codes
with threadpool_limits(1, "blas"):
    model = AlternatingLeastSquares(
        factors=p["factors"], regularization=p["regularization"], alpha=p["alpha"],
        iterations=p["iterations"], random_state=p["random_state"], use_gpu=False,
    )
    model.fit(x, show_progress=False)
rows = np.searchsorted(user_ids, np.asarray(p["users"]))
ids, _ = model.recommend(rows, x[rows], N=p["k"], filter_already_liked_items=True)
print(json.dumps({
    "users": int(user_ids.size), "items": int(item_ids.size),
    "user_factors": list(model.user_factors.shape), "item_factors": list(model.item_factors.shape),
    "recs": item_ids[ids].tolist(),
}))
"""


def parse_rows(text: str) -> list[int]:
    """``1M,4M,16M`` (or plain integers) as row counts."""
    scale = {"k": 1_000, "m": 1_000_000}
    out = []
    for raw in text.split(","):
        part = raw.strip().lower()
        mult = scale.get(part[-1:], 1)
        out.append(int(float(part[:-1] if mult > 1 else part) * mult))
    return out


def write_log(path: Path, rows: int, seed: int) -> tuple[int, int]:
    """A synthetic event log of ``rows`` distinct (user, item) pairs, in time order."""
    n_users, n_items = max(rows // 20, 100), max(rows // 200, 100)
    df = random_interactions(n_users, n_items, rows, seed=seed, skew=1.0, user_skew=0.5)
    df.select("user_id", "item_id", "timestamp").sort("timestamp").write_parquet(path)
    users, items = df["user_id"].n_unique(), df["item_id"].n_unique()
    del df
    gc.collect()
    return users, items


def measured(cmd: list[str], log: Path) -> tuple[float, float, str]:
    """Run ``cmd``; its wall seconds, peak RSS in GB and stdout (stderr goes to ``log``)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, log.open("w") as err:
        # Tracking off: MLflow's import and store would count against `train`'s time and RSS.
        env = os.environ | {"COLUMNS": "120", "HYBRIDREC_TRACKING": "false"}
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - start
        out.seek(0)
        stdout = out.read()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} {cmd[1]} failed ({proc.returncode}):\n{log.read_text()}")
    return elapsed, usage.ru_maxrss / 1024**2, stdout


def als_params(args: argparse.Namespace) -> dict[str, Any]:
    """The ALS settings of the command line (both sides of a comparison train with them)."""
    return {
        "factors": args.factors,
        "iterations": args.iterations,
        "regularization": args.regularization,
        "alpha": args.alpha,
        "random_state": 42,
        "use_gpu": False,
    }


def write_config(path: Path, als: dict[str, Any]) -> None:
    """A pipeline config that trains ALS only and precomputes nothing (no top-N, no ranking)."""
    lines = [
        "[bundle]",
        "precompute_top_n = 0",
        "precompute_ranking = 0",
        "keep_versions = 1",
        "",
        "[models.als]",
    ]
    lines += [f"{key} = {json.dumps(value)}" for key, value in als.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def check_model(
    model_dir: Path, direct: dict[str, Any], users: list[int], factors: int
) -> tuple[int, int, float]:
    """The stored ALS against the direct one: shapes equal, top-k overlapping.

    Returns:
        Users, items and the mean top-k overlap (share of the direct model's items).
    """
    als = load_pipeline(model_dir).model("als")
    shapes = (als.user_factors_.shape, als.item_factors_.shape)  # type: ignore[attr-defined]
    assert als.users_ is not None and als.items_ is not None
    n_users, n_items = len(als.users_), len(als.items_)
    expected = ((direct["users"], factors), (direct["items"], factors))
    if shapes != expected or (n_users, n_items) != (direct["users"], direct["items"]):
        raise SystemExit(f"hybridrec factors {shapes} (vocab {n_users}, {n_items}) != {expected}")
    recs = als.recommend(np.asarray(users), K)
    overlap = []
    for i, theirs in enumerate(direct["recs"]):
        ours = recs.row(i)[0].tolist()
        if not ours:
            raise SystemExit(f"hybridrec gave user {users[i]} no recommendation")
        overlap.append(len(set(ours) & set(theirs)) / len(theirs))
    mean = float(np.mean(overlap))
    if mean < MIN_OVERLAP:
        raise SystemExit(f"hybridrec's top-{K} overlaps the direct model's {mean:.0%} < 90%")
    return n_users, n_items, mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", default="1M,4M,16M", help="Sizes, e.g. 1M or 1M,4M,16M.")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--regularization", type=float, default=1.0)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="Keep the files written.")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the floor is missed")
    args = parser.parse_args()
    console = Console(width=160)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="hybridrec-bench-train-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    als = als_params(args)
    config = work / "als.toml"
    write_config(config, als)
    console.print(
        f"ALS {args.factors} factors x {args.iterations} iterations; implicit uses all "
        f"{os.cpu_count()} cores in both; logs and stores in {work}"
    )
    table = Table(
        "rows", "users", "items", "direct s", "hybridrec s", "× time", "direct GB",
        "hybridrec GB", "× RSS", "top-10 overlap",
    )  # fmt: skip
    missed = []
    try:
        for rows in parse_rows(args.rows):
            path = work / f"events-{rows}.parquet"
            start = time.perf_counter()
            write_log(path, rows, args.seed)
            console.print(f"{rows:,} rows: log written in {time.perf_counter() - start:.1f}s")
            ids = pl.read_parquet(path, columns=["user_id"])["user_id"].unique().sort()
            users = ids.sample(SAMPLE_USERS, seed=args.seed).sort().to_list()
            params = als | {"path": str(path), "users": users, "k": K}
            cmd = [sys.executable, "-c", DIRECT, json.dumps(params)]
            d_s, d_gb, out = measured(cmd, work / f"direct-{rows}.log")
            direct = json.loads(out.strip().splitlines()[-1])
            store = work / f"store-{rows}"
            cmd = [str(HYBRIDREC), "train", "--config", str(config), "--train", str(path)]
            cmd += ["--model-dir", str(store), "--no-evaluate"]
            h_s, h_gb, _ = measured(cmd, work / f"hybridrec-{rows}.log")
            n_users, n_items, overlap = check_model(store, direct, users, args.factors)
            ratio = h_gb / d_gb
            if ratio > FLOOR:
                missed.append(f"{rows:,} rows: peak RSS {ratio:.2f}x > {FLOOR}x")
            table.add_row(
                f"{rows:,}",
                f"{n_users:,}",
                f"{n_items:,}",
                f"{d_s:.1f}",
                f"{h_s:.1f}",
                f"{h_s / d_s:.2f}",
                f"{d_gb:.2f}",
                f"{h_gb:.2f}",
                f"{ratio:.2f}",
                f"{overlap:.1%}",
            )
            console.print(
                f"{rows:,} rows: direct {d_s:.1f}s {d_gb:.2f} GB, hybridrec {h_s:.1f}s "
                f"{h_gb:.2f} GB ({ratio:.2f}x RSS)"
            )
            path.unlink()
            shutil.rmtree(store)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    console.print(table)
    for line in missed:
        console.print(f"[red]floor missed: {line}[/red]")
    if missed and args.strict:
        sys.exit(1)


if __name__ == "__main__":
    main()
