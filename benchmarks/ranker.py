"""Two-stage ranker benchmark (issue 13): quality, candidate recall, importance, scale, latency.

1. Quality, MovieLens latest-small, per-user temporal split (each user's last 20% is test,
   the 10% before it validation): ``configs/benchmark.toml`` with the ranker of
   ``configs/default.toml`` switched on; every model tuned on valid only, refit on train +
   valid, scored once on test. The ranker (its own label windows inside train + valid)
   must beat the best other model (every single retriever, the tuned hybrid, the router)
   on test NDCG@10 by at least 5% relative.
2. Candidate recall@50/100/200 on that test split, per retriever and for their union.
3. The ranker's top-15 features (share of LightGBM gain).
4. Ranking ~500 candidates for one user, in-process, warm: p50 / p99 over 300 requests
   (floor: p99 < 20 ms), with the candidate count checked.
5. Feature generation over a synthetic 20M-interaction log (200,000 users, 50,000 items,
   power-law popularity and activity, timestamps, a catalog with categories), written to
   Parquet once; then, for each chunk size in a fresh process: read it, build the feature
   tables, and generate candidates (popularity and recent popularity; the retrievers' own
   scoring is their cost, not the features') and features for every user, chunk by chunk.
   Seconds and peak RSS (floor: < 8 GiB). ``--scale-rows`` shrinks it for a look.
6. With ``--seeds 1,2,3,4,5``: the ranker fit again at each seed, every other model fixed at
   the parameters chosen in 1, on valid (fit on train) and on test (fit on train + valid):
   mean, sd and lowest NDCG@10 against the tuned hybrid, since one run's figure moves with
   the ranker's seed (its held-out users, LightGBM's sampling); ``--boosters 1,3`` does it
   for each booster count (default: the configured one).

    python benchmarks/ranker.py [--skip-scale] [--scale-rows 20000000] [--seeds 1,2,3]
        [--boosters 1,3]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from hybridrec.config import ModelSpec, PipelineConfig, SplitConfig, load_config
from hybridrec.data.dataset import InteractionData
from hybridrec.data.split import Split
from hybridrec.evaluation.evaluator import Evaluator
from hybridrec.evaluation.report import comparison_table, importance_tables, segment_table
from hybridrec.pipeline.train import (
    PreparedData,
    evaluate_pipeline,
    fit_model,
    fit_order,
    prepare_data,
    runnable_models,
    split_data,
)

TEMPORAL = SplitConfig(method="temporal", valid=0.1, test=0.2)
TARGET = "ndcg@10"
#: Floors of issue 13.
BEAT_BY = 1.05
P99_MS = 20.0
RSS_GIB = 8.0

console = Console(width=200)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def with_ranker(cfg: PipelineConfig) -> PipelineConfig:
    """The benchmark config plus the default config's ranker (on), before the router."""
    default = load_config("configs/default.toml").models["ranked"]
    spec = default.model_copy(update={"enabled": True})
    models: dict[str, ModelSpec] = {}
    for name, value in cfg.models.items():
        if name == "router":
            models["ranked"] = spec
        models[name] = value
    models.setdefault("ranked", spec)
    return cfg.model_copy(update={"models": models, "split": TEMPORAL})


def quality(cfg: PipelineConfig, prepared: PreparedData, split: Split) -> dict[str, Any]:
    start = time.perf_counter()
    reports, chosen = evaluate_pipeline(cfg, split, items=prepared.items, console=console)
    console.print(f"whole protocol incl. tuning: {time.perf_counter() - start:.0f}s")
    for r in reports:
        assert r.n_users > 0 and math.isfinite(r.metrics[TARGET]), f"{r.name}: no answer"
    console.print(comparison_table(reports, cfg.evaluation.k, title="test — temporal, last 20%"))
    console.print(segment_table(reports))
    for table in importance_tables(reports):
        console.print(table)
    by = {r.name: r.metrics[TARGET] for r in reports}
    assert "ranked" in by, "the ranker did not run"
    # Single retrievers and the tuned hybrid; the router may route to the ranker itself.
    others = {n: v for n, v in by.items() if n not in ("ranked", "router")}
    best = max(others, key=lambda n: others[n])
    ratio = by["ranked"] / others[best]
    console.print(
        f"ranked {by['ranked']:.4f} vs best other ({best}) {others[best]:.4f}: "
        f"{(ratio - 1) * 100:+.1f}%  ({'ok' if ratio >= BEAT_BY else 'MISS'}: floor +5%)"
    )
    hybrid = by.get("hybrid")
    if hybrid:
        console.print(f"ranked vs tuned hybrid: {(by['ranked'] / hybrid - 1) * 100:+.1f}%")
    if "router" in by:
        console.print(f"router (routes: {chosen['router']}): {by['router']:.4f}")

    # The evaluated models again (chosen params, train + valid): the ranker's candidates.
    fit_df = split.train_valid()
    data = InteractionData.from_frame(fit_df, items_table=prepared.items)
    specs = runnable_models(cfg, prepared.items)
    fitted: dict[str, Any] = {}
    for name in fit_order(cfg, [n for n in chosen if n in specs]):
        if name in ("router", "hybrid", "ensemble"):
            continue
        fitted[name], _ = fit_model(specs[name].model, chosen[name], data, fitted)
    ranker = fitted["ranked"]
    recall = ranker.candidate_recall(split.test, ns=(50, 100, 200))
    table = Table(title="candidate recall on test (seen items excluded)")
    table.add_column("retriever", style="cyan")
    for n in (50, 100, 200):
        table.add_column(f"recall@{n}", justify="right")
    for name, values in recall.items():
        table.add_row(name, *(f"{values[n]:.4f}" for n in (50, 100, 200)))
    console.print(table)
    assert recall["union"][200] >= max(v[200] for v in recall.values()), "union below a part"
    check = fitted["ranked"].recommend(data.users.ids[:50], 10)
    assert (check.indices >= 0).all(), "the refit ranker left rows empty"
    latency = ranking_latency(ranker, data)
    return {
        "metrics": {r.name: r.to_dict() for r in reports},
        "chosen": chosen,
        "ratio_vs_best": ratio,
        "best_other": best,
        "candidate_recall": recall,
        "latency": latency,
        "pass": {"ranker +5% over best": ratio >= BEAT_BY},
    }


def seed_study(
    cfg: PipelineConfig,
    prepared: PreparedData,
    split: Split,
    chosen: dict[str, dict[str, Any]],
    seeds: list[int],
    boosters: list[int | None],
) -> dict[str, Any]:
    """The ranker at each seed, the other models at their chosen parameters."""
    specs = runnable_models(cfg, prepared.items)
    table = Table(title=f"ranker over seeds {seeds} (ndcg@10; others at the chosen parameters)")
    cols = ("protocol", "boosters", "tuned hybrid", "ranker mean", "sd", "lowest", "vs hybrid")
    for col in cols:
        table.add_column(col, justify="right")
    out: dict[str, Any] = {}
    for protocol in ("valid", "test"):
        fit_df = split.train if protocol == "valid" else split.train_valid()
        truth = split.valid if protocol == "valid" else split.test
        assert truth is not None
        data = InteractionData.from_frame(fit_df, items_table=prepared.items)
        evaluator = Evaluator(data, truth, ks=cfg.evaluation.k)
        fitted: dict[str, Any] = {}
        for name in fit_order(cfg, [n for n in chosen if n in specs]):
            if name not in ("ranked", "router"):
                fitted[name], _ = fit_model(specs[name].model, chosen[name], data, fitted)
        hybrid = evaluator.evaluate(fitted["hybrid"], "hybrid").metrics[TARGET]
        out[protocol] = {"hybrid": hybrid}
        for count in boosters:
            scores = []
            for seed in seeds:
                params = {**chosen["ranked"], "seed": seed, "show_progress": False}
                if count is not None:
                    params["boosters"] = count
                ranker, _ = fit_model(specs["ranked"].model, params, data, fitted)
                scores.append(evaluator.evaluate(ranker, "ranked").metrics[TARGET])
                assert math.isfinite(scores[-1]) and scores[-1] > 0, f"seed {seed}: no answer"
            mean, low = float(np.mean(scores)), min(scores)
            label = str(ranker.config.boosters)
            table.add_row(
                protocol,
                label,
                f"{hybrid:.4f}",
                f"{mean:.4f}",
                f"{float(np.std(scores)):.4f}",
                f"{low:.4f}",
                f"{(low / hybrid - 1) * 100:+.1f}%",
            )
            out[protocol][f"boosters_{label}"] = scores
    console.print(table)
    return out


def ranking_latency(ranker: Any, data: InteractionData, requests: int = 300) -> dict[str, Any]:
    """One user per call, ~500 candidates (wider retrievers), warm."""
    wide = type(ranker)(
        ranker.config.model_copy(
            update={"retrievers": dict.fromkeys(ranker.config.retrievers, 150), "recent": 100}
        )
    )
    wide.__dict__.update({k: v for k, v in ranker.__dict__.items() if k != "config"})
    users = data.users.ids[np.random.default_rng(0).choice(len(data.users), requests)]
    idx = data.users.index(users)
    hist = data.matrix[idx[:1]]
    cands, _, _ = wide._candidate_features(idx[:1], hist, np.zeros(1, bool), exclude_seen=True)
    counts = []
    for u in users[:20]:
        i = data.users.index([u])
        c, _, _ = wide._candidate_features(i, data.matrix[i], np.zeros(1, bool), exclude_seen=True)
        counts.append(int((c >= 0).sum()))
    for u in users[:20]:
        wide.recommend([u], 10)  # warm: boosters, caches
    seconds = []
    for u in users:
        start = time.perf_counter()
        recs = wide.recommend([u], 10)
        seconds.append(time.perf_counter() - start)
        assert (recs.indices[0] >= 0).all(), f"user {u}: empty answer"
    ms = np.asarray(seconds) * 1000
    p50, p99 = float(np.percentile(ms, 50)), float(np.percentile(ms, 99))
    console.print(
        f"ranking one user in-process, {np.mean(counts):.0f} candidates on average "
        f"(min {min(counts)}, first {int((cands >= 0).sum())}): p50 {p50:.2f} ms, p99 "
        f"{p99:.2f} ms  ({'ok' if p99 < P99_MS else 'MISS'}: floor p99 < {P99_MS:.0f} ms)"
    )
    return {"candidates": float(np.mean(counts)), "p50_ms": p50, "p99_ms": p99}


def synthesize(rows: int, path: Path) -> dict[str, Any]:
    """Write the synthetic log and catalog as Parquet (in a child: its memory is its own)."""
    from hybridrec.data.synthetic import random_catalog, random_interactions

    n_users, n_items = max(200_000 * rows // 20_000_000, 1000), 50_000
    start = time.perf_counter()
    log = random_interactions(n_users, n_items, rows, seed=7, skew=1.0, user_skew=1.0)
    log.drop("event_type").write_parquet(path / "events.parquet")
    random_catalog(n_items, seed=7).write_parquet(path / "items.parquet")
    return {"synthesize_s": round(time.perf_counter() - start, 1)}


def scale_child(path: Path, chunk: int) -> dict[str, Any]:
    """Read the log, build the tables, then candidates + features of every user in chunks."""
    import polars as pl

    from hybridrec.models import create_model
    from hybridrec.models.base import _training_rows
    from hybridrec.ranking.features import FeatureTables

    start = time.perf_counter()
    log = pl.read_parquet(path / "events.parquet")
    catalog = pl.read_parquet(path / "items.parquet")
    data = InteractionData.from_frame(log, items_table=catalog)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    pop = create_model("popularity").fit(data)
    ranker = create_model(
        "ranker", {"retrievers": {"popularity": 100}, "recent": 50, "chunk_size": chunk}
    )
    ranker.users_, ranker.items_, ranker.user_items_ = data.users, data.items, data.matrix
    ranker.components_ = {"popularity": pop}
    ranker.tables_ = FeatureTables.build(log, data.users, data.items, items_table=catalog)
    tables_s = time.perf_counter() - start
    before = peak_rss_gib()
    cells, width = 0, 0
    start = time.perf_counter()
    for first in range(0, len(data.users), chunk):
        idx = np.arange(first, min(first + chunk, len(data.users)))
        hist = _training_rows(data.matrix, idx).astype(np.float32)
        cands, x, _ = ranker._candidate_features(
            idx, hist, np.zeros(idx.size, bool), exclude_seen=True
        )
        assert np.isfinite(x[:, 0][cands.reshape(-1) >= 0]).all(), "a candidate lost its score"
        cells += int((cands >= 0).sum())
        width = x.shape[1]
    return {
        "rows": log.height,
        "users": len(data.users),
        "items": len(data.items),
        "chunk": chunk,
        "load_s": round(load_s, 1),
        "tables_s": round(tables_s, 1),
        "features_s": round(time.perf_counter() - start, 1),
        "pairs": cells,
        "features": width,
        "rss_before_chunks_gib": round(before, 2),
        "peak_rss_gib": round(peak_rss_gib(), 2),
    }


def _child(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    )
    found: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return found


def scale(rows: int, chunks: tuple[int, ...] = (1024, 8192)) -> list[dict[str, Any]]:
    import tempfile

    results = []
    with tempfile.TemporaryDirectory(prefix="hybridrec-bench-ranker-") as tmp:
        console.print(f"synthesizing {rows:,} interactions (Parquet, fresh process) ...")
        made = _child("--synthesize", str(rows), tmp)
        console.print(f"  {made['synthesize_s']} s")
        for chunk in chunks:
            console.print(f"feature generation, chunk {chunk} (fresh process) ...")
            results.append(_child("--scale-child", tmp, str(chunk)))
    table = Table(
        title="feature generation from Parquet: tables + candidates + features for every user"
    )
    cols = ("rows", "users", "items", "chunk", "pairs", "features")
    for col in cols:
        table.add_column(col, justify="right")
    for col in ("load s", "tables s", "features s", "RSS before chunks", "peak RSS GiB"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            *(f"{r[c]:,}" for c in cols),
            str(r["load_s"]), str(r["tables_s"]), str(r["features_s"]),
            str(r["rss_before_chunks_gib"]), str(r["peak_rss_gib"]),
        )  # fmt: skip
    console.print(table)
    worst = max(r["peak_rss_gib"] for r in results)
    console.print(
        f"peak RSS {worst:.2f} GiB  ({'ok' if worst < RSS_GIB else 'MISS'}: floor < 8 GiB)"
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/benchmark.toml")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--scale-rows", type=int, default=20_000_000)
    parser.add_argument("--scale-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--synthesize", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--json", default="artifacts/bench-ranker.json")
    parser.add_argument("--seeds", default="", help="e.g. 1,2,3,4,5: the ranker at each seed")
    parser.add_argument("--boosters", default="", help="with --seeds: e.g. 1,3 (each count)")
    args = parser.parse_args()
    if args.synthesize:
        print(json.dumps(synthesize(int(args.synthesize[0]), Path(args.synthesize[1]))))
        return
    if args.scale_child:
        print(json.dumps(scale_child(Path(args.scale_child[0]), int(args.scale_child[1]))))
        return
    results: dict[str, Any] = {}
    if not args.skip_quality:
        cfg = with_ranker(load_config(args.config))
        prepared = prepare_data(cfg.data)
        split = split_data(prepared.interactions, TEMPORAL)
        results["quality"] = quality(cfg, prepared, split)
        if args.seeds:
            seeds = [int(s) for s in args.seeds.split(",")]
            counts: list[int | None] = [int(b) for b in args.boosters.split(",") if b] or [None]
            chosen = results["quality"]["chosen"]
            results["seeds"] = seed_study(cfg, prepared, split, chosen, seeds, counts)
    if not args.skip_scale:
        results["scale"] = scale(args.scale_rows)
    console.print(f"peak RSS of this process: {peak_rss_gib():.2f} GiB")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
