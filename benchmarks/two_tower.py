"""Two-tower benchmark on MovieLens latest-small, against every other model of the project.

The protocols of `make bench-quality` (per-user random 80/10/10, and each user's last 20%
held out with the 10% before it for tuning), ``configs/benchmark.toml`` with the two-tower
model and the ALS + two-tower ensemble turned on: every model tuned on valid only, refit
on train + valid, scored once on test. Then the cold-item split (10% of the items lose
all their interactions, catalog rows kept): two-tower Recall@20 against the content
model's. Printed: the test tables, the cold-user segment (1-4 training items), seconds
per training epoch, the whole fit, and the peak RSS of this process; and pass / miss
against the floors of issue 12. The answers are checked to be real (non-empty lists,
finite metrics, the two-tower model trained for at least one epoch) before anything is
compared.

    python benchmarks/two_tower.py [--config configs/benchmark.toml] [--tower-trials N]
        [--protocols random,temporal]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hybridrec.config import PipelineConfig, SplitConfig, load_config
from hybridrec.data.coldstart import cold_item_split, cold_train_data, evaluate_cold
from hybridrec.evaluation.evaluator import ModelReport
from hybridrec.evaluation.report import comparison_table, segment_table
from hybridrec.models import create_model
from hybridrec.models.two_tower import TwoTower
from hybridrec.pipeline.train import evaluate_pipeline, prepare_data, split_data

PROTOCOLS = {
    "random 80/10/10": SplitConfig(method="random", valid=0.1, test=0.1, seed=42),
    "temporal (last 20% per user)": SplitConfig(method="temporal", valid=0.1, test=0.2),
}
TARGET = "ndcg@10"
#: Floors of issue 12.
TOWER_VS_ALS = 0.9
ENSEMBLE_VS_ALS = 1.03
COLD_VS_POPULARITY = 1.2
TRAIN_SECONDS = 300.0


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def with_two_tower(cfg: PipelineConfig, trials: int | None) -> PipelineConfig:
    """The benchmark config with the two-tower model and the ensemble switched on."""
    models = {}
    for name, spec in cfg.models.items():
        update: dict[str, Any] = {}
        if name in ("two_tower", "ensemble"):
            update["enabled"] = True
        if trials is not None and name == "two_tower":
            # 0: no search, the configured values (a quick run).
            update |= {"search_trials": trials} if trials else {"search": {}}
        models[name] = spec.model_copy(update=update)
    for needed in ("two_tower", "ensemble", "als"):
        if needed not in models:
            raise SystemExit(f"{needed!r} is not a model of the config")
    return cfg.model_copy(update={"models": models})


def check_real(reports: list[ModelReport], label: str) -> None:
    """Every report scored users and produced finite, non-trivial metrics."""
    for r in reports:
        assert r.n_users > 0, f"{label}: {r.name} scored no users"
        value = r.metrics.get(TARGET, float("nan"))
        assert math.isfinite(value), f"{label}: {r.name} {TARGET} is {value}"
        assert r.metrics.get("coverage@10", 1.0) > 0, f"{label}: {r.name} recommended nothing"
    tower = next(r for r in reports if r.name == "two_tower")
    assert tower.metrics[TARGET] > 0, f"{label}: two_tower {TARGET} is 0 (empty answers?)"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("[green]pass[/green]" if ok else "[red]miss[/red]")


def cold_segment(reports: list[ModelReport]) -> tuple[Table, bool | None]:
    """The cold-user segment side by side, and whether two-tower clears its floors there."""
    table = Table(title="cold users (1-4 training items), test")
    for col in ("model", "users", "ndcg@10", "recall@20"):
        table.add_column(col, justify="right" if col != "model" else "left")
    by: dict[str, float] = {}
    users = 0
    for r in reports:
        seg = r.segments.get("cold", {})
        users = int(seg.get("users", 0))
        value = seg.get(TARGET, float("nan"))
        by[r.name] = value
        shown = "-" if not users or math.isnan(value) else f"{value:.4f}"
        recall = seg.get("recall@20", float("nan"))
        table.add_row(r.name, str(users), shown, "-" if not users else f"{recall:.4f}")
    if not users or math.isnan(by.get("two_tower", float("nan"))):
        return table, None
    tower = by["two_tower"]
    others = [v for n, v in by.items() if n != "two_tower" and not math.isnan(v)]
    ok = tower >= COLD_VS_POPULARITY * by["popularity"] and all(tower >= v for v in others)
    return table, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/benchmark.toml")
    parser.add_argument(
        "--tower-trials", type=int, default=None, help="two-tower search trials (0: none)"
    )
    parser.add_argument("--protocols", default="random,temporal", help="random, temporal")
    parser.add_argument("--json", default="artifacts/bench-two-tower.json")
    args = parser.parse_args()
    console = Console(width=200)
    cfg = with_two_tower(load_config(args.config), args.tower_trials)
    prepared = prepare_data(cfg.data)
    console.print(
        f"data: {prepared.name}, {prepared.interactions.height} positives, "
        f"{prepared.interactions['user_id'].n_unique()} users, "
        f"{prepared.interactions['item_id'].n_unique()} items (timings: a shared 2-core CPU)"
    )
    wanted = {p.strip() for p in args.protocols.split(",")}
    checks: list[tuple[str, bool | None, str]] = []
    results: dict[str, Any] = {}
    tower_params: dict[str, Any] = {}
    for label, split_cfg in PROTOCOLS.items():
        if label.split()[0] not in wanted:
            continue
        split = split_data(prepared.interactions, split_cfg)
        start = time.perf_counter()
        reports, chosen = evaluate_pipeline(
            cfg.model_copy(update={"split": split_cfg}), split, items=prepared.items,
            console=console,
        )  # fmt: skip
        elapsed = time.perf_counter() - start
        check_real(reports, label)
        console.print(comparison_table(reports, cfg.evaluation.k, title=f"test — {label}"))
        console.print(segment_table(reports))
        for name in ("two_tower", "ensemble", "router"):
            if name in chosen:
                console.print(f"  chosen on valid — {name}: {chosen[name]}")
        by = {r.name: r for r in reports}
        als, tower, ens = (by[n].metrics[TARGET] for n in ("als", "two_tower", "ensemble"))
        fit_s = by["two_tower"].fit_seconds or float("nan")
        tag = label.split()[0]
        checks.append(
            (f"{tag}: two_tower {TARGET} >= {TOWER_VS_ALS} x ALS",
             tower >= TOWER_VS_ALS * als if tag == "random" else None,
             f"{tower:.4f} vs {TOWER_VS_ALS * als:.4f} (ALS {als:.4f}, x{tower / als:.3f})")
        )  # fmt: skip
        checks.append(
            (f"{tag}: ensemble >= ALS + 3%", ens >= ENSEMBLE_VS_ALS * als,
             f"{ens:.4f} vs {ENSEMBLE_VS_ALS * als:.4f} (x{ens / als:.3f})")
        )  # fmt: skip
        table, cold_ok = cold_segment(reports)
        console.print(table)
        checks.append((f"{tag}: cold users, two_tower >= 1.2 x popularity and every model",
                       cold_ok, "no cold test users" if cold_ok is None else ""))  # fmt: skip
        checks.append(
            (f"{tag}: two_tower full training < {TRAIN_SECONDS:.0f} s", fit_s < TRAIN_SECONDS,
             f"{fit_s:.0f} s (train + valid)")
        )  # fmt: skip
        console.print(f"whole protocol incl. tuning: {elapsed:.0f}s\n")
        tower_params = chosen.get("two_tower", tower_params)
        results[label] = {"models": {r.name: r.to_dict() for r in reports}, "chosen": chosen}

    # Cold items: the tuned two-tower (random protocol's choice) against content.
    df = prepared.interactions
    split = cold_item_split(df, items_share=0.1, seed=42)
    train = cold_train_data(split.train, prepared.items)
    params = {**tower_params, "show_progress": False}
    tower_model = create_model("two_tower", params)
    content_params = dict(cfg.models["content"].params) if "content" in cfg.models else {}
    reports = evaluate_cold(
        {
            "two_tower": tower_model,
            "content": create_model("content", {**content_params, "show_progress": False}),
            "popularity": create_model("popularity"),
        },
        train,
        split.test,
        ks=(10, 20),
    )
    assert isinstance(tower_model, TwoTower) and tower_model.train_log_, "two_tower never trained"
    cold_items = Table(title=f"cold items: {split.test['item_id'].n_unique()} held-out items")
    for col in ("model", "recall@20", "ndcg@20", "users"):
        cold_items.add_column(col)
    for r in reports:
        cold_items.add_row(
            r.name, f"{r.metrics['recall@20']:.4f}", f"{r.metrics['ndcg@20']:.4f}", str(r.n_users)
        )
    console.print(cold_items)
    by_cold = {r.name: r.metrics["recall@20"] for r in reports}
    assert all(r.n_users > 0 for r in reports), "cold-item split scored no users"
    checks.append(
        ("cold items: two_tower Recall@20 >= content", by_cold["two_tower"] >= by_cold["content"],
         f"{by_cold['two_tower']:.4f} vs {by_cold['content']:.4f}")
    )  # fmt: skip
    epochs = tower_model.train_log_
    per_epoch = sum(e["seconds"] for e in epochs) / len(epochs)
    console.print(
        f"two_tower training: {per_epoch:.2f} s per epoch on cpu ({len(epochs)} epochs, best "
        f"{tower_model.best_epoch_}); peak RSS of this process {peak_rss_gb():.2f} GB"
    )
    summary = Table(title="issue 12 floors")
    for col in ("check", "result", "figures"):
        summary.add_column(col)
    for name, ok, figures in checks:
        summary.add_row(name, verdict(ok), figures)
    console.print(summary)
    results["cold_items"] = by_cold
    results["seconds_per_epoch"] = per_epoch
    results["peak_rss_gb"] = peak_rss_gb()
    results["checks"] = [{"check": n, "ok": ok, "figures": f} for n, ok, f in checks]
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
