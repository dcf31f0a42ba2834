"""ALS training speed: seconds per iteration on a synthetic 10M-interaction matrix.

136k users × 20k items, 128 factors, Zipf-like item popularity; also latest-small fit time.

    python benchmarks/als_speed.py [--users 136000 --items 20000 --nnz 10000000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from hybridrec.config import load_config
from hybridrec.data.dataset import InteractionData
from hybridrec.data.synthetic import random_matrix
from hybridrec.data.vocab import Vocab
from hybridrec.models.als import ALS, cuda_available
from hybridrec.pipeline.train import prepare_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=136_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--nnz", type=int, default=10_000_000)
    parser.add_argument("--factors", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--config", default="configs/default.toml")
    args = parser.parse_args()
    console = Console()
    table = Table("data", "interactions", "factors", "device", "fit s", "s / iteration")

    # latest-small with the default config's ALS, timed end to end.
    cfg = load_config(args.config)
    data = InteractionData.from_frame(prepare_data(cfg.data).interactions)
    params = cfg.models["als"].params
    times = []
    for _ in range(3):
        start = time.perf_counter()
        ALS(**params).fit(data)
        times.append(time.perf_counter() - start)
    its = params.get("iterations", 15)
    table.add_row(
        "ml-latest-small (r>=4)",
        f"{data.matrix.nnz:,}",
        str(params.get("factors", 64)),
        "cpu",
        f"{min(times):.2f}",
        f"{min(times) / its:.3f}",
    )

    start = time.perf_counter()
    matrix = random_matrix(args.users, args.items, args.nnz, seed=0)
    console.print(f"built synthetic matrix in {time.perf_counter() - start:.1f}s")
    synth = InteractionData(
        matrix=matrix,
        users=Vocab(np.arange(args.users), kind="user"),
        items=Vocab(np.arange(args.items), kind="item"),
    )
    devices = ["cpu"] + (["gpu"] if cuda_available() else [])
    for device in devices:
        model = ALS(factors=args.factors, iterations=args.iterations, use_gpu=device == "gpu")
        start = time.perf_counter()
        model.fit(synth)
        elapsed = time.perf_counter() - start
        table.add_row(
            f"synthetic {args.users:,}×{args.items:,}",
            f"{matrix.nnz:,}",
            str(args.factors),
            device,
            f"{elapsed:.1f}",
            f"{elapsed / args.iterations:.2f}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
