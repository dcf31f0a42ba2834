"""Approximate nearest-neighbour benchmark: FAISS IVF (and optionally HNSW) vs exact search.

Data: 1,000,000 synthetic 384-d unit vectors that look like text embeddings rather than
uniform noise: a 48-d latent drawn from a mixture of 2,000 Gaussian clusters of varying
size, mapped to 384-d by a fixed random linear map, plus small isotropic noise, then
L2-normalized. Queries are 1,000 fresh draws from the same distribution (not in the base).

Build uses every core; queries run on one core (faiss.omp_set_num_threads(1)), one query
at a time (latency) and as one batch (throughput). Recall@20 is against exact inner-product
search (IndexFlatIP). Usage: ``python benchmarks/ann.py [--n 1000000] [--hnsw]``.
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np
from rich.console import Console
from rich.table import Table

from hybridrec.index import IndexParams, VectorIndex, recall_of


def make_vectors(
    n: int,
    d: int,
    rng: np.random.Generator,
    centers: np.ndarray,
    spread: np.ndarray,
    proj: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        c = rng.choice(centers.shape[0], size=m, p=weights)
        z = centers[c] + spread[c, None] * rng.standard_normal((m, centers.shape[1]))
        x = z @ proj + 0.02 * rng.standard_normal((m, d))
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=1_000)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--hnsw", action="store_true", help="also build HNSW32 (slow to build)")
    args = ap.parse_args()
    console = Console()
    rng = np.random.default_rng(0)
    latent, n_centers = 48, 2_000
    centers = rng.standard_normal((n_centers, latent))
    spread = rng.uniform(0.2, 0.6, n_centers)
    weights = rng.pareto(1.5, n_centers) + 0.1
    weights /= weights.sum()
    proj = rng.standard_normal((latent, args.dim)) / np.sqrt(latent)
    t = time.perf_counter()
    base = make_vectors(args.n, args.dim, rng, centers, spread, proj, weights)
    queries = make_vectors(args.queries, args.dim, rng, centers, spread, proj, weights)
    console.print(f"data: {args.n:,} x {args.dim} float32 in {time.perf_counter() - t:.1f} s")

    threads = faiss.omp_get_max_threads()
    t = time.perf_counter()
    exact = VectorIndex.build(base, IndexParams(kind="flat"))
    _, truth = exact.search(queries, args.k)
    exact_s = time.perf_counter() - t
    faiss.omp_set_num_threads(1)
    t = time.perf_counter()
    exact.search(queries[:100], args.k)
    exact_ms = (time.perf_counter() - t) / 100 * 1e3
    del exact

    table = Table(title=f"top-{args.k} over {args.n:,} x {args.dim} (queries on 1 core)")
    for col in (
        "index",
        "build s",
        "setting",
        "ms/query (one by one)",
        "ms/query (batch)",
        f"recall@{args.k}",
    ):
        table.add_column(col, justify="right" if col != "index" else "left")
    table.add_row("flat (exact)", f"{exact_s:.1f}*", "-", f"{exact_ms:.1f}", "-", "1.000")

    def measure(index: VectorIndex, name: str, build_s: float, setting: str) -> None:
        faiss.omp_set_num_threads(1)
        t0 = time.perf_counter()
        for i in range(200):
            index.search(queries[i : i + 1], args.k)
        single = (time.perf_counter() - t0) / 200 * 1e3
        t0 = time.perf_counter()
        _, ids = index.search(queries, args.k)
        batch = (time.perf_counter() - t0) / args.queries * 1e3
        table.add_row(
            name,
            f"{build_s:.1f}",
            setting,
            f"{single:.2f}",
            f"{batch:.2f}",
            f"{recall_of(ids, truth):.3f}",
        )

    faiss.omp_set_num_threads(threads)
    t = time.perf_counter()
    ivf = VectorIndex.build(base, IndexParams(kind="ivf", nlist=4096, train_size=200_000))
    ivf_s = time.perf_counter() - t
    for nprobe in args.nprobe:
        ivf.set_search_params(nprobe=nprobe)
        measure(ivf, "IVF4096,Flat", ivf_s, f"nprobe={nprobe}")
    del ivf
    if args.hnsw:
        faiss.omp_set_num_threads(threads)
        t = time.perf_counter()
        hnsw = VectorIndex.build(base, IndexParams(kind="hnsw", hnsw_m=32, ef_construction=64))
        hnsw_s = time.perf_counter() - t
        for ef in (64, 128):
            hnsw.set_search_params(ef_search=ef)
            measure(hnsw, "HNSW32,Flat", hnsw_s, f"ef_search={ef}")
    console.print(table)
    console.print(f"* exact ground truth for {args.queries} queries on {threads} threads")


if __name__ == "__main__":
    main()
