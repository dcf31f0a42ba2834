"""Two-tower benchmark on MovieLens latest-small, against every other model of the project.

``configs/benchmark.toml`` with the two-tower model and the ALS + two-tower ensemble turned
on, over four protocols:

- ``random``: per-user random 80/10/10, as `make bench-quality`: every model tuned on valid
  only, refit on train + valid, scored once on test.
- ``temporal``: each user's last 20% held out, the 10% before it for tuning; the same.
- ``cold-users``: the cold-user split of `make bench-content` (`cold_user_split`: 20% of the
  users keep only their first 1-4 interactions, the cold segment's range; the rest of
  theirs is the test), every model with the parameters chosen on the random protocol's
  validation split (the configured ones when that protocol is not run).
- ``cold-items``: the cold-item split of `make bench-content` (`cold_item_split`: 10% of
  the items lose all their interactions, catalog rows kept), the same models.

Printed per protocol: the test table of every model, seconds per two-tower epoch (of its
last fit), the whole fit and the peak RSS of this process so far; at the end pass / miss
against each floor of issue 12. The answers are checked to be real (users scored, finite
metrics, non-empty lists, the two-tower model trained for at least one epoch, held-out
items and users present) before anything is compared.

    python benchmarks/two_tower.py [--config configs/benchmark.toml] [--tower-trials N]
        [--protocols random,temporal,cold-users,cold-items]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import resource
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hybridrec.config import PipelineConfig, SplitConfig, load_config
from hybridrec.data.coldstart import (
    cold_item_split,
    cold_train_data,
    cold_user_split,
    evaluate_cold,
)
from hybridrec.data.split import Split
from hybridrec.evaluation.evaluator import ModelReport
from hybridrec.evaluation.report import comparison_table, segment_table
from hybridrec.models.base import Recommender
from hybridrec.models.two_tower import TwoTower
from hybridrec.pipeline.train import (
    BASELINE,
    PreparedData,
    data_shape,
    evaluate_pipeline,
    fit_model,
    fit_order,
    prepare_data,
    runnable_models,
    split_data,
)

PIPELINE_PROTOCOLS = {
    "random": SplitConfig(method="random", valid=0.1, test=0.1, seed=42),
    "temporal": SplitConfig(method="temporal", valid=0.1, test=0.2),
}
COLD_PROTOCOLS = ("cold-users", "cold-items")
TITLES = {
    "random": "random 80/10/10",
    "temporal": "temporal (last 20% per user)",
    "cold-users": "cold users (1-4 training interactions, the rest held out)",
    "cold-items": "cold items (10% of the items without any interaction, catalog rows kept)",
}
TARGET = "ndcg@10"
COLD_ITEMS_TARGET = "recall@20"
SEED = 42
#: Floors of issue 12.
TOWER_VS_ALS = 0.9
ENSEMBLE_VS_ALS = 1.03
COLD_VS_POPULARITY = 1.2
TRAIN_SECONDS = 300.0
#: The approximate item index's floor: recall@ANN_K of exact search.
ANN_K, ANN_FLOOR = 100, 0.98
#: ALS item factors the ALS-initialized variant reads.
ALS_VARIANT_FACTORS = 64
#: Per cold protocol and index kind, the recall measured (filled by `run_cold`).
ANN_RECALLS: dict[str, float] = {}

Check = tuple[str, bool | None, str]
#: The two-tower model's log line of the popularity prior weights it chose.
PRIOR_MESSAGE = "two_tower popularity prior: %s (users with 0-%d items: %s)"


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class EpochLog(logging.Handler):
    """Collects the two-tower model's per-epoch log entries (loss, NDCG, seconds).

    And per fit the popularity prior weights it chose (warm, cold users), in ``priors``.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.entries: list[dict[str, Any]] = []
        self.priors: list[tuple[float, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if isinstance(args, tuple) and len(args) == 2 and isinstance(args[1], dict):
            self.entries.append(args[1])
        elif record.msg == PRIOR_MESSAGE and isinstance(args, tuple) and len(args) == 3:
            warm, _, cold = args
            assert isinstance(warm, float) and isinstance(cold, float)
            self.priors.append((warm, cold))

    def fits(self) -> list[list[dict[str, Any]]]:
        """The epochs of each fit since the last call (a fit starts at epoch 1)."""
        starts = [i for i, e in enumerate(self.entries) if e.get("epoch") == 1]
        bounds = [*starts, len(self.entries)]
        out = [self.entries[a:b] for a, b in itertools.pairwise(bounds)]
        self.entries = []
        return out


def with_two_tower(
    cfg: PipelineConfig, trials: int | None, *, als_variant: bool = True
) -> PipelineConfig:
    """The benchmark config with the two-tower model and the ensemble switched on.

    With ``als_variant``, also ``two_tower_als``: the configured two-tower with
    `ALS_VARIANT_FACTORS` ALS item factors as an item-tower input (not searched).
    """
    models = {}
    for name, spec in cfg.models.items():
        update: dict[str, Any] = {}
        if name in ("two_tower", "ensemble"):
            update["enabled"] = True
        if trials is not None and name == "two_tower":
            # 0: no search, the configured values (a quick run).
            if trials:
                update["search_trials"] = trials
            else:
                update["search"] = {}
        models[name] = spec.model_copy(update=update)
    for needed in ("two_tower", "ensemble", "als", "content"):
        if needed not in models:
            raise SystemExit(f"{needed!r} is not a model of the config")
    if als_variant:
        # The ALS-initialized variant: the two-tower's settings, ALS item factors as input.
        tower = models["two_tower"]
        models["two_tower_als"] = tower.model_copy(
            update={
                "params": {**tower.params, "als_factors": ALS_VARIANT_FACTORS},
                "search": {},
                "tune": {},
            }
        )
    return cfg.model_copy(update={"models": models})


def check_real(reports: list[ModelReport], label: str) -> None:
    """Every report scored users and produced finite metrics and non-empty lists."""
    assert reports, f"{label}: no model was evaluated"
    names = {r.name for r in reports}
    assert {"two_tower", BASELINE} <= names, f"{label}: models evaluated: {sorted(names)}"
    for r in reports:
        assert r.n_users > 0, f"{label}: {r.name} scored no users"
        for key in (TARGET, COLD_ITEMS_TARGET):
            value = r.metrics.get(key, float("nan"))
            assert math.isfinite(value), f"{label}: {r.name} {key} is {value}"
        assert r.metrics.get("coverage@10", 0.0) > 0, f"{label}: {r.name} recommended nothing"
    tower = next(r for r in reports if r.name == "two_tower")
    assert tower.metrics[TARGET] > 0, f"{label}: two_tower {TARGET} is 0 (empty answers?)"


def fit_frozen(
    cfg: PipelineConfig,
    chosen: dict[str, dict[str, Any]],
    prepared: PreparedData,
    split: Split,
    console: Console,
) -> tuple[dict[str, Recommender], dict[str, float]]:
    """Every runnable pipeline model fit on a cold split's train (catalog vocabulary).

    Parameters are ``chosen`` (on another protocol's validation split) where given, else the
    configured ones; hybrids get the fitted models they are built from.
    """
    train = cold_train_data(split.train, prepared.items)
    specs = runnable_models(cfg, prepared.items, console, data_shape(split.train, prepared.items))
    names = list(specs)
    if not any(spec.model == BASELINE for spec in specs.values()):
        names.insert(0, BASELINE)
    fitted: dict[str, Recommender] = {}
    seconds: dict[str, float] = {}
    for name in fit_order(cfg, names):
        spec = specs.get(name)
        kind = spec.model if spec else BASELINE
        params = chosen.get(name, dict(spec.params) if spec else {})
        fitted[name], seconds[name] = fit_model(kind, params, train, fitted)
    return fitted, seconds


def run_cold(
    protocol: str,
    cfg: PipelineConfig,
    chosen: dict[str, dict[str, Any]],
    prepared: PreparedData,
    console: Console,
) -> list[ModelReport]:
    """One cold-start protocol: its split, every model fit on its train, scored on test."""
    df = prepared.interactions
    if protocol == "cold-users":
        split = cold_user_split(
            df, users_share=0.2, max_train=cfg.evaluation.cold_below - 1, seed=SEED
        )
        held = f"{split.test['user_id'].n_unique()} cold users"
    else:
        split = cold_item_split(df, items_share=0.1, seed=SEED)
        held = f"{split.test['item_id'].n_unique()} cold items"
    assert split.test.height > 0, f"{protocol}: nothing held out"
    console.print(f"{protocol}: {split.train.height} training rows, {held} held out")
    models, seconds = fit_frozen(cfg, chosen, prepared, split, console)
    tower = models["two_tower"]
    assert isinstance(tower, TwoTower)
    for kind in ("ivf", "hnsw"):
        # The item vectors in FAISS (the catalog's, cold items included) against exact search.
        start = time.perf_counter()
        got = tower.ann_recall(kind, ANN_K)
        ANN_RECALLS[f"{protocol} {kind}"] = got
        console.print(
            f"  two_tower item index {kind}: recall@{ANN_K} {got:.4f} of exact search "
            f"({tower.item_vectors_.shape[0]} items, {time.perf_counter() - start:.1f} s)"
        )
    train = cold_train_data(split.train, prepared.items)
    reports = evaluate_cold(models, train, split.test, ks=cfg.evaluation.k, fit=False)
    for r in reports:
        r.fit_seconds = seconds[r.name]
    return reports


def protocol_checks(protocol: str, reports: list[ModelReport]) -> list[Check]:
    """The floors of issue 12 that ``protocol`` measures."""
    by = {r.name: r.metrics for r in reports}
    tower = by["two_tower"]
    if protocol == "cold-items":
        got, content = tower[COLD_ITEMS_TARGET], by["content"][COLD_ITEMS_TARGET]
        return [
            (f"cold items: two_tower {COLD_ITEMS_TARGET} >= content", got >= content,
             f"{got:.4f} vs {content:.4f}")
        ]  # fmt: skip
    if protocol == "cold-users":
        got, pop = tower[TARGET], by[BASELINE][TARGET]
        others = {n: m[TARGET] for n, m in by.items() if n != "two_tower"}
        best = max(others, key=lambda n: others[n])
        return [
            (f"cold users: two_tower {TARGET} >= {COLD_VS_POPULARITY} x popularity",
             got >= COLD_VS_POPULARITY * pop,
             f"{got:.4f} vs {COLD_VS_POPULARITY * pop:.4f} (popularity {pop:.4f}, "
             f"x{got / pop:.3f})"),
            (f"cold users: two_tower {TARGET} >= every other model", got >= others[best],
             f"{got:.4f} vs best other {best} {others[best]:.4f}"),
        ]  # fmt: skip
    als, tower_v, ens = by["als"][TARGET], tower[TARGET], by["ensemble"][TARGET]
    return [
        (f"{protocol}: two_tower {TARGET} >= {TOWER_VS_ALS} x ALS",
         tower_v >= TOWER_VS_ALS * als if protocol == "random" else None,
         f"{tower_v:.4f} vs {TOWER_VS_ALS * als:.4f} (ALS {als:.4f}, x{tower_v / als:.3f})"),
        (f"{protocol}: ensemble >= ALS + 3%",
         ens >= ENSEMBLE_VS_ALS * als if protocol == "random" else None,
         f"{ens:.4f} vs {ENSEMBLE_VS_ALS * als:.4f} (x{ens / als:.3f})"),
    ]  # fmt: skip


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("[green]pass[/green]" if ok else "[red]miss[/red]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/benchmark.toml")
    parser.add_argument(
        "--tower-trials", type=int, default=None, help="two-tower search trials (0: none)"
    )
    parser.add_argument(
        "--protocols",
        default=",".join([*PIPELINE_PROTOCOLS, *COLD_PROTOCOLS]),
        help="comma-separated: random, temporal, cold-users, cold-items",
    )
    parser.add_argument(
        "--no-als-variant", action="store_true", help="leave out two_tower_als (ALS input)"
    )
    parser.add_argument("--json", default="artifacts/bench-two-tower.json")
    args = parser.parse_args()
    wanted = [p.strip() for p in args.protocols.split(",") if p.strip()]
    unknown = set(wanted) - {*PIPELINE_PROTOCOLS, *COLD_PROTOCOLS}
    if unknown or not wanted:
        raise SystemExit(f"unknown protocols {sorted(unknown)}; choose from {list(TITLES)}")
    console = Console(width=200)
    epochs = EpochLog()
    tower_log = logging.getLogger("hybridrec.models.two_tower")
    tower_log.addHandler(epochs)
    tower_log.setLevel(logging.INFO)
    cfg = with_two_tower(
        load_config(args.config), args.tower_trials, als_variant=not args.no_als_variant
    )
    prepared = prepare_data(cfg.data)
    console.print(
        f"data: {prepared.name}, {prepared.interactions.height} positives, "
        f"{prepared.interactions['user_id'].n_unique()} users, "
        f"{prepared.interactions['item_id'].n_unique()} items (timings: a shared 2-core CPU)"
    )
    checks: list[Check] = []
    results: dict[str, Any] = {}
    chosen: dict[str, dict[str, Any]] = {}
    # Pipeline protocols first: the cold ones reuse the random protocol's choices.
    order = [p for p in [*PIPELINE_PROTOCOLS, *COLD_PROTOCOLS] if p in wanted]
    for protocol in order:
        start = time.perf_counter()
        if protocol in PIPELINE_PROTOCOLS:
            split_cfg = PIPELINE_PROTOCOLS[protocol]
            split = split_data(prepared.interactions, split_cfg)
            run_cfg = cfg.model_copy(update={"split": split_cfg})
            reports, picked = evaluate_pipeline(
                run_cfg, split, items=prepared.items, console=console
            )
            if protocol == "random":
                chosen = picked
        else:
            reports, picked = run_cold(protocol, cfg, chosen, prepared, console), {}
        elapsed = time.perf_counter() - start
        # Search trials, the refit and fits on train for tuning hybrids and routes.
        fits = epochs.fits()
        priors, epochs.priors = epochs.priors, []
        check_real(reports, protocol)
        assert fits and all(fits), f"{protocol}: two_tower trained no epoch"
        target = COLD_ITEMS_TARGET if protocol == "cold-items" else TARGET
        console.print(
            comparison_table(reports, cfg.evaluation.k, target=target, title=TITLES[protocol])
        )
        if protocol in PIPELINE_PROTOCOLS:
            console.print(segment_table(reports))
            for name in ("two_tower", "ensemble", "router"):
                if name in picked:
                    console.print(f"  chosen on valid — {name}: {picked[name]}")
        if priors:
            shown = ", ".join(f"{w:g} / {c:g}" for w, c in priors)
            console.print(f"  two_tower popularity prior per fit (warm / cold users): {shown}")
        tower = next(r for r in reports if r.name == "two_tower")
        fit_s = tower.fit_seconds or float("nan")
        every = [e["seconds"] for f in fits for e in f]
        per_epoch = sum(every) / len(every)
        console.print(
            f"two_tower ({protocol}): {per_epoch:.2f} s per epoch on cpu over {len(fits)} "
            f"fits (epochs {', '.join(str(len(f)) for f in fits)}), the tested model's fit "
            f"{fit_s:.0f} s; peak RSS of this process so far {peak_rss_gb():.2f} GB; whole "
            f"protocol incl. tuning {elapsed:.0f} s\n"
        )
        checks += protocol_checks(protocol, reports)
        checks.append(
            (f"{protocol}: two_tower full training < {TRAIN_SECONDS:.0f} s",
             fit_s < TRAIN_SECONDS, f"{fit_s:.0f} s")
        )  # fmt: skip
        results[protocol] = {
            "models": {r.name: r.to_dict() for r in reports},
            "chosen": picked,
            "two_tower_fits": fits,
            "two_tower_priors": priors,
            "seconds_per_epoch": per_epoch,
            "peak_rss_gb": peak_rss_gb(),
        }
    for name, got in ANN_RECALLS.items():
        checks.append(
            (f"{name}: item index recall@{ANN_K} >= {ANN_FLOOR}", got >= ANN_FLOOR, f"{got:.4f}")
        )
    summary = Table(title="issue 12 floors")
    for col in ("check", "result", "figures"):
        summary.add_column(col)
    for name, ok, figures in checks:
        summary.add_row(name, verdict(ok), figures)
    console.print(summary)
    results["checks"] = [{"check": n, "ok": ok, "figures": f} for n, ok, f in checks]
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
