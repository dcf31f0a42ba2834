"""Batch scoring: ``recommend --all-users`` beside implicit's own batched recommend.

Synthetic 30,000 users × 40,000 items (Zipf-like popularity), ALS fitted once; then, on
the same factors: implicit's ``AlternatingLeastSquares.recommend`` (all users, N=10,
``filter_already_liked_items``), the project's ALS ``recommend`` (the library call under
the CLI), ``answer_batch`` (what ``recommend --model als`` runs, reasons included), the CLI
end to end (``--all-users --output x.parquet``, a subprocess, its peak RSS), and the same
two for the hybrid. The hybrid is ALS + item-kNN + popularity: all three fit 2 GB at 40k
items (ALS factors 10 MB, item-kNN 100 neighbours 16 MB sparse, popularity 160 KB), where
EASE's dense 40k × 40k weights alone would take 6.4 GB.

    python benchmarks/batch.py [--users 30000 --items 40000 --nnz 1000000 --factors 64]

Floors (issue 10): project ALS ≤ 1.5× implicit, hybrid ≤ 3× ALS, CLI peak RSS ≤ 2 GB.
``--strict`` exits 1 when a floor is missed; wrong answers always exit 1.
"""

from __future__ import annotations

import argparse
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

from hybridrec.bundle import ModelStore, write_bundle
from hybridrec.data.dataset import InteractionData
from hybridrec.data.synthetic import random_matrix
from hybridrec.data.vocab import Vocab
from hybridrec.models import Recommender, create_model
from hybridrec.models.base import batch_threads
from hybridrec.models.explain import answer_batch
from hybridrec.pipeline.artifacts import load_pipeline

K = 10
HYBRIDREC = Path(sys.executable).parent / "hybridrec"
# Run a command and print its peak RSS (KiB on Linux): a fresh parent per measurement, so
# RUSAGE_CHILDREN holds that command alone.
_PEAK = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
)


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def cli(model_dir: Path, model: str, out: Path) -> tuple[float, float]:
    """Seconds and peak RSS (GB) of ``hybridrec recommend --all-users`` to Parquet."""
    cmd = [sys.executable, "-c", _PEAK, str(HYBRIDREC), "recommend", "--model-dir"]
    cmd += [str(model_dir), "--all-users", "--model", model, "-k", str(K), "--output", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"CLI failed ({model}):\n{proc.stderr}")
    return elapsed, int(proc.stdout.strip().splitlines()[-1]) / 1024**2


def agree_up_to_ties(
    ours: np.ndarray, our_scores: np.ndarray, theirs: np.ndarray, their_scores: np.ndarray
) -> float:
    """Share of rows with the same top-k set; rows that differ must differ only at ties."""
    same = np.array([set(a) == set(b) for a, b in zip(ours.tolist(), theirs.tolist(), strict=True)])
    bad = np.flatnonzero(~same)
    for r in bad:
        # Where the sets differ, the k-th scores agree: a near-tie at the boundary.
        if not np.isclose(our_scores[r, -1], their_scores[r, -1], rtol=1e-4, atol=1e-5):
            raise SystemExit(f"row {r}: project top-{K} differs from implicit's beyond a tie")
    return float(same.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=30_000)
    parser.add_argument("--items", type=int, default=40_000)
    parser.add_argument("--nnz", type=int, default=1_000_000)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a floor is missed")
    args = parser.parse_args()
    console = Console(width=160)
    console.print(f"threads: implicit all cores, project {batch_threads()} (HYBRIDREC_THREADS)")

    matrix = random_matrix(args.users, args.items, args.nnz, seed=0)
    data = InteractionData(
        matrix=matrix,
        users=Vocab(np.arange(args.users), kind="user"),
        items=Vocab(np.arange(args.items), kind="item"),
    )
    fit_s, als = timed(
        lambda: create_model(
            "als", {"factors": args.factors, "iterations": args.iterations, "use_gpu": False}
        ).fit(data)
    )
    models: dict[str, Recommender] = {
        "als": als,
        "itemknn": create_model("itemknn", {"neighbors": 100}).fit(data),
        "popularity": create_model("popularity").fit(data),
    }
    hybrid = create_model("hybrid", {"components": {"als": 0.6, "itemknn": 0.3, "popularity": 0.1}})
    models["hybrid"] = hybrid.attach(models).fit(data)
    console.print(f"fitted ALS in {fit_s:.1f}s; item-kNN, popularity, hybrid attached")

    root = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    store = ModelStore(root / "models")
    store.write_version(lambda p: {**write_bundle(p, models), "default_model": "als"})
    bundle = load_pipeline(root / "models", None)
    ids = np.arange(args.users)
    csr = matrix.tocsr()

    table = Table("path", "users", "seconds", "× implicit", "× ALS batch", "peak RSS GB")
    imp = als.model_  # type: ignore[attr-defined]
    t_imp, (imp_idx, imp_val) = timed(
        lambda: imp.recommend(ids, csr, N=K, filter_already_liked_items=True)
    )
    table.add_row(
        "implicit ALS recommend (batched)", f"{ids.size:,}", f"{t_imp:.2f}", "1.00", "", ""
    )

    b_als = bundle.model("als")
    t_lib, recs = timed(lambda: b_als.recommend(ids, K))
    share = agree_up_to_ties(recs.indices, recs.scores, imp_idx, imp_val)
    assert (recs.indices >= 0).all(), "project ALS left rows short"
    table.add_row(
        "project ALS recommend (library)",
        f"{ids.size:,}",
        f"{t_lib:.2f}",
        f"{t_lib / t_imp:.2f}",
        "",
        "",
    )

    t_ans, batch = timed(lambda: answer_batch(bundle.get, ids.tolist(), K, model="als"))
    frame = batch.frame
    assert frame.height == ids.size * K and frame["reason"].str.len_chars().min() > 0
    table.add_row(
        "answer_batch als (+ reasons)",
        f"{ids.size:,}",
        f"{t_ans:.2f}",
        f"{t_ans / t_imp:.2f}",
        "",
        "",
    )

    out = root / "als.parquet"
    t_cli, rss_cli = cli(root / "models", "als", out)
    written = pl.read_parquet(out)
    assert written.height == ids.size * K, written.height
    table.add_row(
        "CLI recommend --model als --all-users",
        f"{ids.size:,}",
        f"{t_cli:.2f}",
        f"{t_cli / t_imp:.2f}",
        "",
        f"{rss_cli:.2f}",
    )

    b_hyb = bundle.model("hybrid")
    t_hyb, hrecs = timed(lambda: b_hyb.recommend(ids, K))
    assert (hrecs.indices >= 0).all(), "hybrid left rows short"
    table.add_row(
        "project hybrid recommend (library)",
        f"{ids.size:,}",
        f"{t_hyb:.2f}",
        f"{t_hyb / t_imp:.2f}",
        f"{t_hyb / t_lib:.2f}",
        "",
    )
    out = root / "hybrid.parquet"
    t_hcli, rss_hcli = cli(root / "models", "hybrid", out)
    assert pl.read_parquet(out).height == ids.size * K
    table.add_row(
        "CLI recommend --model hybrid --all-users",
        f"{ids.size:,}",
        f"{t_hcli:.2f}",
        f"{t_hcli / t_imp:.2f}",
        f"{t_hcli / t_cli:.2f}",
        f"{rss_hcli:.2f}",
    )
    console.print(table)
    console.print(
        f"project ALS top-{K} = implicit's on {share:.2%} of users (the rest differ "
        "only at a tie of the k-th score)"
    )

    floors = {
        "ALS library ≤ 1.5× implicit": t_lib <= 1.5 * t_imp,
        "ALS CLI peak RSS ≤ 2 GB": rss_cli <= 2.0,
        "hybrid library ≤ 3× ALS library": t_hyb <= 3 * t_lib,
        "hybrid CLI ≤ 3× ALS CLI": t_hcli <= 3 * t_cli,
        "hybrid CLI peak RSS ≤ 2 GB": rss_hcli <= 2.0,
    }
    for name, ok in floors.items():
        console.print(f"{'ok  ' if ok else 'MISS'} {name}")
    if args.strict and not all(floors.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
