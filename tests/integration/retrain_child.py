"""The entry point of a killed retraining round (`test_retrain.py`'s forkserver children).

A module of its own that imports only hybridrec: a forkserver child unpickles the target by
module name, and a test module would bring ``conftest`` with it, which resolves to another
directory's ``conftest`` when the whole suite runs.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from hybridrec.pipeline.retrain import retrain_once


def killable_round(model_dir: str, data_dir: str, log: str) -> None:
    """One round in a child process, its progress lines in ``log`` as they happen.

    ``min_improve`` is out of reach: a round that ends before its kill cannot deploy either,
    so whatever happens, ``current`` must not move.
    """
    with open(log, "w", buffering=1, encoding="utf-8") as fh:
        console = Console(file=fh, width=400, force_terminal=False)
        retrain_once(model_dir, data_dir=Path(data_dir), min_improve=1e6, console=console)
