"""Data at scale (issue 17): synthesize, ingest, train ALS two ways, batch-score every user.

Each step runs as a fresh process, so its peak RSS is its own (the larger of the child's
``ru_maxrss`` from ``wait4`` and the summed RSS of its process tree sampled every 0.2 s: a
Spark JVM is a grandchild that ``wait4`` may not count):

1. synthesize: ``hybridrec datasets synthesize`` writes the event log (Parquet: user_id,
   item_id, timestamp; power-law popularity and activity) and the item catalog;
2. ingest: ``hybridrec export interactions`` loads the raw log as ``train`` does (validate,
   implicit conversion, duplicates summed) and writes it with user/item indices and the id
   mappings: the preparation every training run does, measured on its own;
3. train ALS with implicit: ``hybridrec train --no-evaluate`` on the raw log (ingestion
   included); beside it, implicit's own ``fit`` on the same matrix (from step 2's indices)
   in a bare script;
4. train ALS with Spark ``local[2]``: the same config with ``backend = "spark"``;
5. batch-score: ``hybridrec recommend --all-users --output recs.parquet`` from step 3's model.

Checks (a wrong answer exits 1): row and user counts agree between the steps, both models'
factors cover every user and item, every user with history gets k recommendations, and for a
sample of users the recommendations match a direct numpy top-k of the bundle's factors (seen
items masked). Ingestion's peak RSS must stay under 8 GiB.

    python benchmarks/scale.py [--interactions 50M] [--users 1M] [--items 100k]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from hybridrec.pipeline.artifacts import load_pipeline
from train_scale import als_params, parse_rows

HYBRIDREC = Path(sys.executable).parent / "hybridrec"
INGEST_LIMIT_GIB = 8.0
K = 10
SAMPLE_USERS = 200
PAGE = os.sysconf("SC_PAGE_SIZE")

# implicit's own fit on the exported indices, as a bare script would: `python -c DIRECT JSON`.
DIRECT = r"""
import json, sys, time
import numpy as np
import polars as pl
import scipy.sparse as sp
from implicit.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

p = json.loads(sys.argv[1])
df = pl.read_parquet(p["path"], columns=["user_index", "item_index", "weight"])
x = sp.csr_matrix(
    (df["weight"].to_numpy(), (df["user_index"].to_numpy(), df["item_index"].to_numpy())),
    shape=(p["users"], p["items"]),
)
del df
with threadpool_limits(1, "blas"):
    model = AlternatingLeastSquares(
        factors=p["factors"], regularization=p["regularization"], alpha=p["alpha"],
        iterations=p["iterations"], random_state=p["random_state"], use_gpu=False,
    )
    start = time.perf_counter()
    model.fit(x, show_progress=False)
print(json.dumps({"fit_seconds": time.perf_counter() - start, "nnz": int(x.nnz)}))
"""


@dataclass
class Step:
    """One measured step."""

    name: str
    seconds: float = 0.0
    peak_gib: float = 0.0
    library: str = ""
    check: str = ""
    failed: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _tree_rss(root: int) -> int:
    """Summed RSS (bytes) of ``root`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields[21]) * PAGE
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def measured(cmd: list[str], log: Path) -> tuple[float, float, str, int]:
    """Run ``cmd``: wall seconds, peak RSS GiB, stdout and exit code (stderr to ``log``)."""
    start = time.perf_counter()
    peak = [0]
    with tempfile.TemporaryFile("w+") as out, log.open("w") as err:
        # Tracking off: MLflow's import and store would count against the step.
        env = os.environ | {"COLUMNS": "120", "HYBRIDREC_TRACKING": "false"}
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                peak[0] = max(peak[0], _tree_rss(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        sampler.join()
        elapsed = time.perf_counter() - start
        out.seek(0)
        stdout = out.read()
    gib = max(usage.ru_maxrss * 1024, peak[0]) / 1024**3
    return elapsed, gib, stdout, os.waitstatus_to_exitcode(status)


def write_config(path: Path, log: Path, als: dict[str, Any], backend: dict[str, Any]) -> None:
    """A pipeline config over the raw log that trains ALS only and precomputes nothing."""
    lines = ["[data]", 'source = "files"', f"interactions = {json.dumps(str(log))}", ""]
    lines += ["[bundle]", "precompute_top_n = 0", "keep_versions = 1", "", "[models.als]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in (als | backend).items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_step(step: Step, cmd: list[str], work: Path, console: Console) -> str | None:
    """Run one step's command; its stdout, or None (``step.failed`` set) when it failed."""
    console.print(f"[bold]{step.name}[/bold]: {' '.join(cmd[1:])}", highlight=False)
    log = work / f"{step.name.split()[0]}-{len(step.name)}.log"
    step.seconds, step.peak_gib, stdout, code = measured(cmd, log)
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        step.failed = f"exit {code}: " + " / ".join(tail)
        console.print(f"[red]{step.name} failed[/red] ({log}): {' / '.join(tail)}")
        return None
    console.print(f"  {step.seconds:.1f}s, peak {step.peak_gib:.2f} GiB", highlight=False)
    return stdout


def check_factors(store: Path, users: int, items: int, factors: int) -> Any:
    """The stored ALS covers every user and item with ``factors`` dimensions."""
    bundle = load_pipeline(store)
    als = bundle.model("als")
    uf, itf = als.user_factors_, als.item_factors_  # type: ignore[attr-defined]
    want = ((users, factors), (items, factors))
    if (uf.shape, itf.shape) != want:
        raise AssertionError(f"{store}: factors {uf.shape}, {itf.shape} != {want}")
    return bundle


def check_recs(recs_path: Path, bundle: Any, export: Path, seed: int) -> str:
    """Every user with history has K recs; a sample matches a numpy top-k of the factors."""
    als = bundle.model("als")
    recs = pl.read_parquet(recs_path)
    counts = recs.group_by("user_id").len()
    n_users = len(als.users_)
    if counts.height != n_users or int(counts["len"].min()) < K:
        raise AssertionError(
            f"{recs_path}: {counts.height:,} users with recs of {n_users:,}; "
            f"fewest recs {counts['len'].min()}"
        )
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n_users, size=min(SAMPLE_USERS, n_users), replace=False))
    sample_ids = als.users_.lookup(rows)
    seen = (
        pl.scan_parquet(export / "interactions.parquet")
        .filter(pl.col("user_index").is_in(rows.tolist()))
        .group_by("user_index")
        .agg("item_index")
        .collect()
    )
    seen_by = dict(zip(seen["user_index"].to_list(), seen["item_index"].to_list(), strict=True))
    export_items = pl.read_parquet(export / "item_ids.parquet").sort("index")["id"].to_numpy()
    if not np.array_equal(export_items, als.items_.ids):
        raise AssertionError("the exported item ids differ from the model's vocabulary")
    uf = np.asarray(als.user_factors_, dtype=np.float64)
    itf = np.asarray(als.item_factors_, dtype=np.float64)
    by_user = (
        recs.filter(pl.col("user_id").is_in(sample_ids.tolist())).group_by("user_id").agg("item_id")
    )
    got_by = dict(zip(by_user["user_id"].to_list(), by_user["item_id"].to_list(), strict=True))
    worst = 1.0
    for row, uid in zip(rows.tolist(), sample_ids.tolist(), strict=True):
        scores = itf @ uf[row]
        scores[seen_by.get(row, [])] = -np.inf
        kth = np.partition(scores, -K)[-K]
        got = als.items_.index(np.asarray(got_by[uid]))
        if set(got.tolist()) & set(seen_by.get(row, [])):
            raise AssertionError(f"user {uid}: a seen item was recommended")
        # Ties and float32 scoring: a returned item may sit a hair under the k-th score.
        ok = scores[got] >= kth - 1e-3 * max(1.0, abs(kth))
        worst = min(worst, float(ok.mean()))
    if worst < 1.0:
        raise AssertionError(f"recs differ from numpy's top-{K} (worst user: {worst:.0%})")
    return f"{recs.height:,} recs, {n_users:,} users; {rows.size} match numpy top-{K}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--interactions", default="50M", help="Log rows (e.g. 200k, 50M).")
    parser.add_argument("--users", default="1M")
    parser.add_argument("--items", default="100k")
    parser.add_argument("--factors", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--regularization", type=float, default=1.0)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--master", default="local[2]", help="Spark master of step 4.")
    parser.add_argument(
        "--spark-driver-memory",
        default="8g",
        help="spark.driver.memory of step 4 (a local master trains inside the driver).",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="Keep the files written.")
    args = parser.parse_args()
    (rows,), (n_users,), (n_items,) = (parse_rows(args.interactions), parse_rows(args.users),
                                       parse_rows(args.items))  # fmt: skip
    console = Console(width=160)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="hybridrec-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    als = als_params(args)
    data, export = work / "data", work / "export"
    log = data / "interactions.parquet"
    implicit_toml, spark_toml = work / "implicit.toml", work / "spark.toml"
    write_config(implicit_toml, log, als, {"backend": "implicit"})
    spark = {"backend": "spark", "master": args.master, "driver_memory": args.spark_driver_memory}
    write_config(spark_toml, log, als, spark)
    console.print(
        f"{rows:,} interactions, {n_users:,} users, {n_items:,} items; ALS "
        f"{json.dumps(als)} on both backends (Spark master {args.master}, driver memory "
        f"{args.spark_driver_memory}); work dir {work}",
        highlight=False,
    )
    steps: list[Step] = []
    failed = False
    try:
        step = Step("1 synthesize")
        steps.append(step)
        cmd = [str(HYBRIDREC), "datasets", "synthesize", "--output", str(data)]
        cmd += ["--users", str(n_users), "--items", str(n_items), "--interactions", str(rows)]
        cmd += ["--seed", str(args.seed)]
        if run_step(step, cmd, work, console) is None:
            raise SystemExit(1)
        log_rows = pl.scan_parquet(log).select(pl.len()).collect().item()
        if log_rows != rows:
            raise AssertionError(f"{log}: {log_rows:,} rows, asked for {rows:,}")
        step.check = f"{log_rows:,} rows"

        step = Step("2 ingest (export)")
        steps.append(step)
        cmd = [str(HYBRIDREC), "export", "interactions", "--config", str(implicit_toml)]
        cmd += ["--output", str(export), "--format", "parquet"]
        if run_step(step, cmd, work, console) is None:
            raise SystemExit(1)
        ex = pl.scan_parquet(export / "interactions.parquet")
        pairs, users, items = (
            ex.select(pl.len(), pl.col("user_index").max() + 1, pl.col("item_index").max() + 1)
            .collect()
            .row(0)
        )
        raw_users, raw_items = (
            pl.scan_parquet(log)
            .select(pl.col("user_id").n_unique(), pl.col("item_id").n_unique())
            .collect()
            .row(0)
        )
        if (users, items) != (raw_users, raw_items) or not 0 < pairs <= rows:
            raise AssertionError(
                f"export: {pairs:,} pairs, {users:,} users, {items:,} items; the log has "
                f"{raw_users:,} users, {raw_items:,} items"
            )
        step.check = f"{pairs:,} pairs, {users:,} users, {items:,} items"
        if step.peak_gib >= INGEST_LIMIT_GIB:
            step.failed = f"peak RSS {step.peak_gib:.2f} GiB >= {INGEST_LIMIT_GIB} GiB"

        step = Step("3 train ALS implicit")
        steps.append(step)
        store = work / "store-implicit"
        cmd = [str(HYBRIDREC), "train", "--config", str(implicit_toml), "--model-dir", str(store)]
        cmd += ["--no-evaluate"]
        bundle = None
        if run_step(step, cmd, work, console) is not None:
            bundle = check_factors(store, users, items, args.factors)
            fit = bundle.manifest["models"]["als"].get("fit_seconds")
            step.check = f"factors {users:,} + {items:,} x {args.factors}; ALS fit {fit}s"
            params = als | {"path": str(export / "interactions.parquet")}
            params |= {"users": users, "items": items}
            direct = [sys.executable, "-c", DIRECT, json.dumps(params)]
            d_s, d_gib, out, code = measured(direct, work / "direct-implicit.log")
            if code == 0:
                got = json.loads(out.strip().splitlines()[-1])
                step.library = (
                    f"implicit alone: fit {got['fit_seconds']:.1f}s, whole script {d_s:.1f}s, "
                    f"{d_gib:.2f} GiB"
                )
            else:
                step.library = f"implicit alone failed (exit {code})"

        step = Step("4 train ALS spark")
        steps.append(step)
        spark_store = work / "store-spark"
        cmd = [str(HYBRIDREC), "train", "--config", str(spark_toml)]
        cmd += ["--model-dir", str(spark_store), "--no-evaluate"]
        if run_step(step, cmd, work, console) is not None:
            spark_bundle = check_factors(spark_store, users, items, args.factors)
            fit = spark_bundle.manifest["models"]["als"].get("fit_seconds")
            step.check = f"factors {users:,} + {items:,} x {args.factors}; ALS fit {fit}s"

        step = Step("5 batch-score all users")
        steps.append(step)
        if bundle is None:
            step.failed = "no implicit model to score (step 3 failed)"
        else:
            recs = work / "recs.parquet"
            cmd = [str(HYBRIDREC), "recommend", "--model-dir", str(store), "--all-users"]
            cmd += ["-k", str(K), "--output", str(recs)]
            if run_step(step, cmd, work, console) is not None:
                step.check = check_recs(recs, bundle, export, args.seed)
    except AssertionError as exc:
        steps[-1].failed = f"wrong answer: {exc}"
    except SystemExit:
        failed = True
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    table = Table("step", "seconds", "peak RSS GiB", "check", "library alone", title="scale")
    for s in steps:
        check = f"[red]FAILED: {s.failed}[/red]" if s.failed else s.check
        table.add_row(s.name, f"{s.seconds:.1f}", f"{s.peak_gib:.2f}", check, s.library)
    console.print(table)
    failed = failed or any(s.failed for s in steps) or len(steps) < 5
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
