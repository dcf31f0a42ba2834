"""Retraining's pure parts: durations, the paired bootstrap, the merge, the holdout, the gate.

Also the store's decision records and the retrain lock across processes. The whole round
against a real server and event store is in ``tests/integration/test_retrain.py``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hybridrec.bundle import store as store_module
from hybridrec.bundle.store import ModelStore
from hybridrec.config import PipelineConfig, RetrainConfig, Settings, load_config
from hybridrec.data.transform import Conversion
from hybridrec.errors import ConfigError, DataError
from hybridrec.evaluation.metrics import paired_bootstrap
from hybridrec.pipeline.retrain import (
    RetrainBusyError,
    decide,
    merge_feedback,
    parse_duration,
    retrain_lock,
    select_holdout,
)

ROOT = Path(__file__).resolve().parents[2]

# ---- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("45s", 45), ("30m", 1800), ("6h", 21_600), ("1d", 86_400), ("1h30m", 5400),
     (" 2H ", 7200), ("1.5h", 5400), ("0.5s", 0.5)],
)  # fmt: skip
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "6", "6x", "h", "-1h", "6 hours", "1h 30", "1..5h", "0m"])
def test_a_bad_duration_is_an_error_that_says_what_is_expected(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(text, what="--every")
    message = str(caught.value)
    assert message.startswith(f"--every {text!r}: ")
    assert "s, m, h or d" in message or "longer than zero" in message


# ---- the paired bootstrap --------------------------------------------------------------------


def test_bootstrap_of_a_constant_difference_is_that_difference() -> None:
    base = np.array([0.1, 0.5, 0.9, 0.3, 0.0])
    got = paired_bootstrap(base + 0.1, base, samples=500, seed=3)
    assert got.users == 5 and got.samples == 500 and got.confidence == 0.95
    assert got.mean == pytest.approx(0.1)
    assert got.low == pytest.approx(0.1)
    assert got.high == pytest.approx(0.1)


def test_bootstrap_of_two_users_by_hand() -> None:
    """Differences 0 and 1: a resample's mean is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4.

    So the 2.5th percentile is 0 and the 97.5th is 1 (each end holds a quarter of the mass).
    """
    got = paired_bootstrap([0.5, 1.0], [0.5, 0.0], samples=4000, seed=1)
    assert got.mean == 0.5
    assert (got.low, got.high) == (0.0, 1.0)


def test_bootstrap_of_four_users_by_hand() -> None:
    """Differences 0, 0, 0, 1: the resampled mean is k/4 with k ~ Binomial(4, 1/4).

    P(k = 0) = 0.316 holds the 2.5th percentile at 0; P(k <= 2) = 0.949 and
    P(k <= 3) = 0.996 put the 97.5th percentile at k = 3, a mean of 0.75. With 90%
    confidence the upper end is the 95th percentile, still k = 3 (0.949 < 0.95).
    """
    first, second = [0.2, 0.4, 0.6, 1.0], [0.2, 0.4, 0.6, 0.0]
    got = paired_bootstrap(first, second, samples=8000, seed=7)
    assert got.mean == 0.25
    assert (got.low, got.high) == (0.0, 0.75)
    narrower = paired_bootstrap(first, second, samples=8000, seed=7, confidence=0.5)
    # The central half: P(k = 0) = 0.316 > 0.25, P(k <= 1) = 0.738 < 0.75 <= P(k <= 2).
    assert (narrower.low, narrower.high) == (0.0, 0.5)


def test_bootstrap_is_seeded_and_leaves_out_users_without_both_values() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random(300), rng.random(300)
    b[[3, 10]] = np.nan
    one = paired_bootstrap(a, b, samples=1000, seed=11)
    assert one == paired_bootstrap(a, b, samples=1000, seed=11)
    assert one != paired_bootstrap(a, b, samples=1000, seed=12)
    assert one.users == 298
    assert one.mean == pytest.approx(float(np.nanmean(a - b)))
    assert one.low < one.mean < one.high


def test_bootstrap_in_chunks_equals_drawing_every_resample_at_once() -> None:
    """3000 users x 1500 resamples is over one chunk: the draws must continue the stream."""
    rng = np.random.default_rng(5)
    a, b = rng.random(3000), rng.random(3000)
    got = paired_bootstrap(a, b, samples=1500, seed=2)
    diff = a - b
    picks = np.random.default_rng(2).integers(0, diff.size, size=(1500, diff.size))
    low, high = np.quantile(diff[picks].mean(axis=1), [0.025, 0.975])
    # The same draws; only the summation order of a mean may differ (in the last bit).
    assert (got.low, got.high) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12))


def test_bootstrap_interval_matches_the_normal_approximation_on_many_users() -> None:
    rng = np.random.default_rng(9)
    n, sigma = 2000, 0.3
    second = rng.random(n)
    first = second + 0.05 + rng.normal(0, sigma, n)
    got = paired_bootstrap(first, second, samples=4000, seed=0)
    half = 1.96 * float(np.std(first - second)) / math.sqrt(n)
    assert got.high - got.low == pytest.approx(2 * half, rel=0.15)
    assert got.low > 0


@pytest.mark.parametrize(
    ("first", "second", "kwargs", "pattern"),
    [
        ([1.0, 2.0], [1.0], {}, "same users"),
        ([[1.0]], [[1.0]], {}, "1-D"),
        ([np.nan], [1.0], {}, "no user has a value from both"),
        ([1.0], [1.0], {"confidence": 1.0}, "confidence"),
        ([1.0], [1.0], {"samples": 0}, "samples"),
    ],
)
def test_bootstrap_refuses_what_it_cannot_compare(
    first: list[float], second: list[float], kwargs: dict[str, float], pattern: str
) -> None:
    with pytest.raises(DataError, match=pattern):
        paired_bootstrap(first, second, **kwargs)  # type: ignore[arg-type]


# ---- the merge ------------------------------------------------------------------------------


def _base() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [1, 1, 2],
            "item_id": [10, 11, 10],
            "weight": [1.0, 1.0, 1.0],
            "timestamp": [100, 100, 100],
            "event_type": ["rating"] * 3,
        }
    )


def _events(rows: list[tuple[str, str, str, float, int]]) -> pl.DataFrame:
    """Events as `load_events` returns them (ids are integers when all of them are)."""
    df = pl.DataFrame(
        rows,
        schema={
            "user_id": pl.String,
            "item_id": pl.String,
            "event_type": pl.String,
            "weight": pl.Float64,
            "timestamp": pl.Int64,
        },
        orient="row",
    ).select("user_id", "item_id", "weight", "timestamp", "event_type")
    if all(r[0].isdigit() and r[1].isdigit() for r in rows):
        df = df.with_columns(pl.col("user_id", "item_id").cast(pl.Int64))
    return df


#: In arrival order: every case of the merge, checked against the table worked out by hand.
EVENTS = [
    ("1", "12", "view", 1.0, 200),  # a new pair: weight 1
    ("1", "10", "like", 2.0, 210),  # thumbs up on a known pair: 1 + thumbs_up
    ("2", "11", "purchase", 3.0, 220),  # a new pair with its own weight
    ("2", "10", "dislike", 0.0, 230),  # thumbs down: the base row goes
    ("1", "11", "dislike", 0.0, 240),  # thumbs down, then...
    ("1", "11", "view", 1.0, 250),  # ...a later view counts again: weight 1
    ("3", "10", "rating", 2.0, 260),  # a rating under the threshold: no positive
    ("3", "11", "rating", 5.0, 270),  # a rating over it: a positive of weight 1
    ("2", "12", "like", 2.0, 280),  # thumbs up, then...
    ("2", "12", "dislike", 0.0, 290),  # ...thumbs down: nothing left of the pair
]
THRESHOLD = Conversion("threshold", 4.0, "last")


def _pairs(df: pl.DataFrame) -> dict[tuple[int, int], tuple[float, int]]:
    return {
        (u, i): (w, t)
        for u, i, w, t in df.select("user_id", "item_id", "weight", "timestamp").iter_rows()
    }


def test_merge_applies_events_and_thumbs_in_arrival_order() -> None:
    cfg = RetrainConfig(thumbs_up=2.5)
    merged, counts = merge_feedback(_base(), _events(EVENTS), cfg, THRESHOLD)
    assert _pairs(merged) == {
        (1, 10): (3.5, 210),
        (1, 11): (1.0, 250),
        (1, 12): (1.0, 200),
        (2, 11): (3.0, 220),
        (3, 11): (1.0, 270),
    }
    assert merged["user_id"].dtype == pl.Int64
    # Kept interactions: (1,12), (2,11), the later (1,11) and the rating (3,11); one like
    # kept; three thumbs down; taken out: base (2,10), base (1,11) and the like of (2,12).
    assert counts.events == 4
    assert counts.thumbs_up == 1
    assert counts.thumbs_down == 3
    assert counts.removed == 3


def test_merge_can_ignore_thumbs_down() -> None:
    merged, counts = merge_feedback(
        _base(), _events(EVENTS), RetrainConfig(thumbs_down="ignore"), THRESHOLD
    )
    pairs = _pairs(merged)
    assert pairs[(2, 10)] == (1.0, 100)
    assert pairs[(1, 11)] == (2.0, 250)
    assert pairs[(2, 12)] == (2.0, 280)
    assert counts.removed == 0


def test_merge_without_events_is_the_data() -> None:
    empty = _events([]).with_columns(pl.col("user_id", "item_id").cast(pl.String))
    merged, counts = merge_feedback(_base(), empty, RetrainConfig())
    assert _pairs(merged) == _pairs(_base())
    assert merged["user_id"].dtype == pl.Int64
    assert counts == type(counts)()


def test_merge_with_text_ids_makes_every_id_text() -> None:
    merged, _ = merge_feedback(
        _base(), _events([("visitor-7", "10", "view", 1.0, 300)]), RetrainConfig()
    )
    assert merged["user_id"].dtype == pl.String
    assert ("visitor-7", "10") in {(u, i) for u, i in merged.select("user_id", "item_id").rows()}
    assert ("1", "10") in {(u, i) for u, i in merged.select("user_id", "item_id").rows()}


# ---- the holdout ----------------------------------------------------------------------------


def _interactions() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [1, 1, 2, 2, 3, 3],
            "item_id": [10, 11, 10, 11, 10, 11],
            "weight": [1.0] * 6,
            "timestamp": [100, 600, 300, 500, None, 400],
            "event_type": ["view"] * 6,
        },
        schema_overrides={"timestamp": pl.Int64},
    )


def test_holdout_is_the_newest_of_what_the_serving_version_never_saw() -> None:
    df = _interactions()
    seen = np.array([True, True, False, False, False, False])  # (1, 11) is the newest: seen
    train, held = select_holdout(df, seen, RetrainConfig(holdout_size=2))
    assert sorted(held.select("user_id", "item_id").rows()) == [(2, 11), (3, 11)]
    assert train.height == 4
    assert set(train.select("user_id", "item_id").rows()).isdisjoint(
        held.select("user_id", "item_id").rows()
    )


def test_holdout_by_share_rounds_up_and_puts_rows_without_time_last() -> None:
    df = _interactions()
    seen = np.zeros(df.height, dtype=bool)
    _, held = select_holdout(df, seen, RetrainConfig(holdout_share=0.3))
    assert held.select("user_id", "item_id").rows() == [(1, 11), (2, 11)]  # ceil(1.8) = 2
    _, everything = select_holdout(df, seen, RetrainConfig(holdout_share=1.0))
    assert everything.height == 6


def test_nothing_unseen_means_no_holdout() -> None:
    df = _interactions()
    train, held = select_holdout(df, np.ones(df.height, dtype=bool), RetrainConfig())
    assert held.height == 0 and train.height == df.height
    with pytest.raises(DataError, match="shape"):
        select_holdout(df, np.ones(2, dtype=bool), RetrainConfig())


# ---- the gate -------------------------------------------------------------------------------


def test_a_clearly_better_candidate_is_deployed_with_its_figures() -> None:
    rng = np.random.default_rng(1)
    current = rng.random(200) * 0.5
    d = decide(current + 0.1, current, RetrainConfig(), "ndcg@10")
    assert d.deploy
    assert d.gain is not None and d.gain > 0.2
    assert d.interval is not None and d.interval.low > 0
    assert d.reason.startswith("better: ndcg@10 ")
    assert f"{d.candidate:.4f} vs {d.current:.4f}" in d.reason
    assert f"[{d.interval.low:+.4f}, {d.interval.high:+.4f}]" in d.reason


def test_a_significant_gain_below_min_improve_is_kept_out() -> None:
    rng = np.random.default_rng(2)
    current = 0.2 + rng.random(200) * 0.5
    d = decide(current * 1.005, current, RetrainConfig(min_improve=0.01), "ndcg@10")
    assert d.interval is not None and d.interval.low > 0
    assert d.gain == pytest.approx(0.005)
    assert not d.deploy
    assert d.reason.startswith("gain below min_improve:")


def test_a_noisy_gain_whose_interval_holds_zero_is_kept_out() -> None:
    rng = np.random.default_rng(3)
    current = rng.random(40)
    candidate = current + 0.02 + rng.normal(0, 0.3, 40)
    d = decide(candidate, current, RetrainConfig(min_improve=0.0), "ndcg@10")
    assert d.interval is not None and d.interval.low <= 0 < d.interval.high
    assert not d.deploy
    if d.candidate is not None and d.current is not None and d.candidate > d.current:
        assert d.reason.startswith("not significant")
    else:
        assert d.reason.startswith("not better")


def test_a_worse_candidate_is_not_better() -> None:
    current = np.linspace(0.2, 0.8, 50)
    d = decide(current / 2, current, RetrainConfig(), "recall@20")
    assert not d.deploy
    assert d.gain == pytest.approx(-0.5)
    assert d.reason.startswith("not better: recall@20 ")


def test_over_a_serving_version_that_scores_zero_any_significant_gain_counts() -> None:
    current = np.zeros(100)
    candidate = np.r_[np.ones(50), np.zeros(50)]
    d = decide(candidate, current, RetrainConfig(min_improve=0.5), "hit_rate@10")
    assert d.deploy and d.gain is None
    assert "from 0" in d.reason


# ---- config and settings --------------------------------------------------------------------


def test_the_default_config_documents_the_retrain_defaults() -> None:
    cfg = load_config(ROOT / "configs" / "default.toml")
    assert cfg.retrain == RetrainConfig()
    text = (ROOT / "configs" / "default.toml").read_text(encoding="utf-8")
    section = text.split("[retrain]", 1)[1].split("\n[", 1)[0]
    for key in RetrainConfig.model_fields:
        assert f"\n{key} = " in section, key


def test_a_bad_retrain_value_names_its_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[retrain]\nholdout_share = 1.5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.toml: retrain\.holdout_share: "):
        load_config(path)
    path.write_text("[retrain]\nthumbs_upp = 1.0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"retrain\.thumbs_upp"):
        load_config(path)
    assert PipelineConfig().retrain.min_improve == 0.01


def test_settings_read_the_retrain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRIDREC_RETRAIN_EVERY", "6h")
    monkeypatch.setenv("HYBRIDREC_MIN_IMPROVE", "0.05")
    settings = Settings()
    assert settings.retrain_every == "6h"
    assert settings.min_improve == 0.05


# ---- the store's decisions ------------------------------------------------------------------


def _store(tmp_path: Path, n: int = 2) -> ModelStore:
    store = ModelStore(tmp_path / "models")
    for i in range(n):
        store.write_version(lambda path, i=i: {"models": {}, "n": i})
    return store


def test_a_decision_is_recorded_beside_the_promotions(tmp_path: Path) -> None:
    store = _store(tmp_path)
    first, second = store.versions()
    store.record_decision({"decision": "rejected", "candidate": "x", "reason": "not better"})
    assert store.history() == [first, second]
    store.rollback()
    store.promote(second)
    store.record_decision({"decision": "deployed", "candidate": second})
    assert store.history() == [first, second]
    assert [d["decision"] for d in store.decisions()] == ["rejected", "deployed"]
    data = json.loads((store.root / "history.json").read_text(encoding="utf-8"))
    assert data["promoted"] == [first, second]


def test_a_first_decision_keeps_the_implicit_history(tmp_path: Path) -> None:
    store = _store(tmp_path)
    (store.root / "history.json").unlink()
    current = store.current()
    store.record_decision({"decision": "rejected"})
    assert store.history() == [current]
    assert store.rollback() == store.versions()[0]


def test_decisions_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "DECISIONS_KEPT", 3)
    store = _store(tmp_path, 1)
    for i in range(5):
        store.record_decision({"n": i})
    assert [d["n"] for d in store.decisions()] == [2, 3, 4]


def test_a_decision_with_nan_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    store = _store(tmp_path, 1)
    before = (store.root / "history.json").read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="JSON"):
        store.record_decision({"gain": float("nan")})
    assert (store.root / "history.json").read_text(encoding="utf-8") == before


# ---- the lock -------------------------------------------------------------------------------

_HOLD = textwrap.dedent(
    """
    import sys, time
    from hybridrec.pipeline.retrain import retrain_lock
    with retrain_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(60)
    """
)


def _holder(model_dir: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(model_dir)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_the_lock_admits_one_retrain_across_processes_and_a_kill_frees_it(
    tmp_path: Path,
) -> None:
    model_dir = tmp_path / "models"
    proc = _holder(model_dir)
    try:
        start = time.perf_counter()
        with pytest.raises(RetrainBusyError) as caught, retrain_lock(model_dir):
            pass
        assert time.perf_counter() - start < 1.0  # refused at once, not waited for
        assert f"pid {proc.pid} since " in str(caught.value)
        assert "another retrain of this store is running" in str(caught.value)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    # The kernel released the killed holder's lock; within one process a second holder is
    # refused too.
    with retrain_lock(model_dir), pytest.raises(RetrainBusyError), retrain_lock(model_dir):
        pass
    with retrain_lock(model_dir):
        pass
