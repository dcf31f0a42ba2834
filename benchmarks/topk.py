"""Top-k selection: the project's `topk_rows` beside implicit's own top-k, same scores.

30,000 users × 40,000 items, 64 float32 factors (a popularity bias on the items, as trained
factors have). Timed, each on every core:

1. **implicit** ``implicit.cpu.topk.topk(items, users, 10)``: its fused, threaded product +
   selection (what its ``recommend`` runs);
2. **project** the same product per block of users and `topk_rows` (what
   ``Recommender.recommend`` runs), blocks on `batch_threads` threads;
3. selection alone on one 2,000 × 40,000 block of those scores: `topk_rows` against a bare
   ``np.argpartition`` + sort of the k (no tie rule), and the same on a tie-heavy block
   (scores rounded to 1 decimal: exact ties at the k-th place in most rows).

Answers are checked: both top-10 score lists equal to float32 rounding for every user, the
items equal wherever no tie is near; `topk_rows` ties broken by item index (checked against
a lexsort reference on the tie-heavy block).

    python benchmarks/topk.py [--users 30000 --items 40000 --factors 64 --k 10]

Floor (issue 18): project ≤ 1.5× implicit. ``--strict`` exits 1 when it is missed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from implicit.cpu.topk import topk as implicit_topk
from rich.console import Console
from rich.table import Table
from threadpoolctl import threadpool_limits

from hybridrec.models.base import batch_threads, for_blocks, topk_rows
from hybridrec.models.topk import BLOCK_CELLS

console = Console(width=120)


def best_of(runs: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """Fastest of ``runs`` calls, and the last answer."""
    times, out = [], None
    for _ in range(runs):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def project_topk(users: np.ndarray, items: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Product per block of users and `topk_rows`, as `Recommender.recommend` runs them."""
    n = users.shape[0]
    out_idx = np.empty((n, k), np.int64)
    out_val = np.empty((n, k), np.float32)
    block = max(1, BLOCK_CELLS // items.shape[0])

    def run(start: int) -> None:
        sl = slice(start, start + block)
        out_idx[sl], out_val[sl] = topk_rows(users[sl] @ items.T, k)

    for_blocks(n, block, run)
    return out_idx, out_val


def bare_argpartition(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """numpy's own top-k: argpartition, then the k sorted (no tie rule)."""
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def reference(scores: np.ndarray, k: int) -> np.ndarray:
    """Top-k by score, ties by lower index: a full lexsort per row (slow, obviously right)."""
    cols = np.arange(scores.shape[1])
    return np.stack([np.lexsort((cols, -row))[:k] for row in scores])


def check_same(a_idx: Any, a_val: Any, b_idx: Any, b_val: Any) -> float:
    """Assert equal score lists (float32 rounding); the share of rows with equal items."""
    np.testing.assert_allclose(a_val, b_val, rtol=1e-5, atol=1e-5)
    same = (np.asarray(a_idx) == np.asarray(b_idx)).all(axis=1)
    for r in np.flatnonzero(~same):
        gaps = np.abs(a_val[r][:, None] - a_val[r][None, :]) + np.eye(a_val.shape[1])
        clear = gaps.min(axis=1) > 1e-4
        assert (a_idx[r][clear] == b_idx[r][clear]).all(), f"row {r}: different items"
    return float(same.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=30_000)
    parser.add_argument("--items", type=int, default=40_000)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--strict", action="store_true", help="Exit 1 when the floor is missed.")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    users = rng.normal(size=(args.users, args.factors)).astype(np.float32)
    items = rng.normal(size=(args.items, args.factors)).astype(np.float32) * 0.3
    items[:, 0] += np.log1p(rng.zipf(1.3, args.items).clip(max=10_000)).astype(np.float32)
    threads = batch_threads()
    k = args.k

    with threadpool_limits(1, "blas"):
        t_imp, (imp_idx, imp_val) = best_of(
            args.runs, lambda: implicit_topk(items, users, k, num_threads=threads)
        )
        t_ours, (our_idx, our_val) = best_of(args.runs, lambda: project_topk(users, items, k))
    same = check_same(our_idx, our_val, imp_idx, imp_val)

    block = users[:2000] @ items.T
    ties = np.round(block, 1)
    t_sel, (sel_idx, sel_val) = best_of(args.runs, lambda: topk_rows(block, k))
    t_arg, (arg_idx, arg_val) = best_of(args.runs, lambda: bare_argpartition(block, k))
    check_same(sel_idx, sel_val, arg_idx, arg_val)
    t_sel_ties, (tie_idx, _) = best_of(args.runs, lambda: topk_rows(ties, k))
    t_arg_ties, _ = best_of(args.runs, lambda: bare_argpartition(ties, k))
    want = reference(ties[:300], k)
    assert (tie_idx[:300] == want).all(), "topk_rows broke ties otherwise than by item index"
    tied_rows = float((np.sort(ties, axis=1)[:, -k] == np.sort(ties, axis=1)[:, -k - 1]).mean())

    table = Table(
        title=f"top-{k}: {args.users:,} users × {args.items:,} items, {args.factors} factors, "
        f"{threads} threads, best of {args.runs}"
    )
    for col in ("path", "seconds", "× implicit / × argpartition", "floor"):
        table.add_column(col, justify="right" if col != "path" else "left")
    ratio = t_ours / t_imp
    table.add_row("implicit topk (product + selection)", f"{t_imp:.2f}", "1.00", "")
    table.add_row(
        "project: product + topk_rows",
        f"{t_ours:.2f}",
        f"{ratio:.2f}",
        "<= 1.5 " + ("ok" if ratio <= 1.5 else "MISS"),
    )
    table.add_row("selection only, 2,000 rows: np.argpartition + sort", f"{t_arg:.3f}", "1.00", "")
    table.add_row("selection only: topk_rows", f"{t_sel:.3f}", f"{t_sel / t_arg:.2f}", "")
    table.add_row(
        f"tie-heavy block ({tied_rows:.0%} rows tie at the k-th): np.argpartition",
        f"{t_arg_ties:.3f}",
        "1.00",
        "",
    )
    table.add_row(
        "tie-heavy block: topk_rows (ties by index)",
        f"{t_sel_ties:.3f}",
        f"{t_sel_ties / t_arg_ties:.2f}",
        "",
    )
    console.print(table)
    console.print(f"top-{k} items equal to implicit's for {same:.2%} of users (the rest: ties)")
    if args.strict and ratio > 1.5:
        sys.exit(1)


if __name__ == "__main__":
    main()
