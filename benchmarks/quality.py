"""Quality benchmark on MovieLens latest-small (ratings >= 4 are positives).

Two protocols: per-user random 80/10/10 (seeded; valid for tuning, test for the table) and
per-user temporal (each user's last 20% held out; the 10% before it for tuning). Every model
is tuned on valid only, refit on train + valid, and scored once on test.

    python benchmarks/quality.py --config configs/benchmark.toml [--plot out.png]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console

from hybridrec.config import SplitConfig, load_config
from hybridrec.evaluation.report import comparison_table, plot_reports, segment_table
from hybridrec.pipeline.train import evaluate_pipeline, prepare_data, split_data

PROTOCOLS = {
    "random 80/10/10": SplitConfig(method="random", valid=0.1, test=0.1, seed=42),
    "temporal (last 20% per user)": SplitConfig(method="temporal", valid=0.1, test=0.2),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/benchmark.toml")
    parser.add_argument("--plot", default="artifacts/bench-quality.png")
    parser.add_argument("--json", default="artifacts/bench-quality.json")
    args = parser.parse_args()
    console = Console(width=220)
    cfg = load_config(args.config)
    prepared = prepare_data(cfg.data)
    console.print(
        f"data: {prepared.name}, {prepared.interactions.height} positives "
        f"(rating >= {cfg.data.min_rating}), {prepared.interactions['user_id'].n_unique()} users, "
        f"{prepared.interactions['item_id'].n_unique()} items"
    )
    results = {}
    for label, split_cfg in PROTOCOLS.items():
        split = split_data(prepared.interactions, split_cfg)
        start = time.perf_counter()
        reports, chosen = evaluate_pipeline(
            cfg.model_copy(update={"split": split_cfg}),
            split,
            items=prepared.items,
            console=console,
        )
        elapsed = time.perf_counter() - start
        console.print(comparison_table(reports, cfg.evaluation.k, title=f"test — {label}"))
        console.print(segment_table(reports))
        eval_total = sum(r.eval_seconds for r in reports)
        console.print(
            f"evaluation of all {len(reports)} models over {reports[0].n_users} users: "
            f"{eval_total:.2f}s; whole protocol incl. tuning: {elapsed:.0f}s"
        )
        for name, params in chosen.items():
            console.print(f"  chosen on valid — {name}: {params}")
        base = next(r for r in reports if r.name == "popularity").metrics["ndcg@10"]
        best = max(reports, key=lambda r: r.metrics["ndcg@10"])
        console.print(
            f"best: {best.name} ndcg@10 {best.metrics['ndcg@10']:.4f} = "
            f"{(best.metrics['ndcg@10'] / base - 1) * 100:+.0f}% vs popularity\n"
        )
        results[label] = {
            "models": {r.name: r.to_dict() for r in reports},
            "chosen": chosen,
            "eval_seconds_total": eval_total,
        }
        if args.plot:
            stem = Path(args.plot)
            tag = label.split()[0]
            plot_reports(reports, stem.with_name(f"{stem.stem}-{tag}{stem.suffix}"), ks=[10, 20])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
