"""A/B tests without HTTP: arm assignment, ab.json, the statistics, the event store's migration."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from hybridrec.errors import ConfigError
from hybridrec.serving import ab
from hybridrec.serving.events import _MIGRATIONS, VERSION_TABLE, EventRow, EventStore

IDS = [f"user-{i}" for i in range(300)]


def _arms_in_subprocess(seed: str) -> list[str | None]:
    code = (
        "import json, sys\n"
        "from hybridrec.serving import ab\n"
        "cfg = ab.ABConfig('v2', 0.5, 'salty')\n"
        "print(json.dumps([ab.arm_of(cfg, u) for u in json.load(sys.stdin)]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": seed}
    ran = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(IDS),
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return list(json.loads(ran.stdout))


def test_arm_is_the_same_in_every_process_and_hash_seed() -> None:
    config = ab.ABConfig("v2", 0.5, "salty")
    here = [ab.arm_of(config, u) for u in IDS]
    assert _arms_in_subprocess("1") == here
    assert _arms_in_subprocess("12345") == here
    assert set(here) == {"A", "B"}


def test_split_follows_the_share_and_the_salt_reshuffles() -> None:
    users = [str(i) for i in range(20_000)]
    arms = [ab.arm_of(ab.ABConfig("v", 0.3, "s1"), u) for u in users]
    assert abs(arms.count("B") / len(users) - 0.3) < 0.015
    other = [ab.arm_of(ab.ABConfig("v", 0.3, "s2"), u) for u in users]
    same = sum(a == b for a, b in zip(arms, other, strict=True)) / len(users)
    # Independent draws agree with probability 0.3² + 0.7² = 0.58, not 1.
    assert 0.55 < same < 0.61


def test_no_test_no_arm_and_a_visitor_without_id_is_a() -> None:
    assert ab.arm_of(None, "u1") is None
    assert ab.arm_of(ab.ABConfig("v", 0.99, "s"), None) == "A"


@pytest.mark.parametrize("share", [0.0, 1.0, -0.1, 1.5])
def test_share_outside_zero_one_is_refused(share: float) -> None:
    with pytest.raises(ConfigError, match="share of B must be between 0 and 1"):
        ab.ABConfig("v", share)


def test_config_round_trip_and_stop_keeps_the_last(tmp_path: Path) -> None:
    assert ab.read_config(tmp_path) is None
    written = ab.write_config(tmp_path, "v7", share_b=0.25, salt="pepper")
    data = json.loads((tmp_path / ab.AB_FILE).read_text())
    # The form: arms A = "current", B = the version, and shares.
    assert data["arms"] == {"A": "current", "B": "v7"}
    assert data["shares"] == {"A": 0.75, "B": 0.25}
    assert ab.read_config(tmp_path) == written
    ended = ab.remove_config(tmp_path)
    assert ended is not None and ended.ended_at is not None
    assert ended.ended_at >= written.started_at
    assert ab.read_config(tmp_path) is None
    assert ab.read_config(tmp_path, last=True) == ended
    assert ab.remove_config(tmp_path) is None


def test_invalid_ab_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / ab.AB_FILE).write_text('{"arms": {"A": "current"}}')
    with pytest.raises(ConfigError, match=r"ab\.json: not a valid A/B test"):
        ab.read_config(tmp_path)


def test_wilson_interval_hand_computed() -> None:
    # 10 of 100 at z = 1.96: centre 0.119208 / 1.038416, half 1.96·sqrt(0.00099604) / 1.038416.
    r = ab.wilson(10, 100)
    assert r.rate == pytest.approx(0.1)
    assert r.low == pytest.approx(0.05523, abs=1e-4)
    assert r.high == pytest.approx(0.17437, abs=1e-4)
    assert ab.wilson(0, 0) == ab.Rate(0, 0, 0.0, 0.0, 1.0)
    assert ab.wilson(0, 50).low == pytest.approx(0.0, abs=1e-12)


def test_difference_interval_and_verdict() -> None:
    a, b = ab.wilson(10, 100), ab.wilson(30, 100)
    d = ab.compare(a, b)
    # var = 0.1·0.9/100 + 0.3·0.7/100 = 0.003; half = 1.96·sqrt(0.003) = 0.10735.
    assert d["diff"] == pytest.approx(0.2)
    assert d["low"] == pytest.approx(0.0926, abs=1e-3)
    assert d["high"] == pytest.approx(0.3074, abs=1e-3)
    assert d["better"] == "B"
    assert ab.compare(b, a)["better"] == "A"
    assert ab.compare(ab.wilson(10, 100), ab.wilson(12, 100))["better"] is None


def test_sample_ratio_mismatch() -> None:
    shares = {"A": 0.5, "B": 0.5}
    fine = ab.srm_check({"A": 505, "B": 495}, shares)
    assert not fine["mismatch"] and fine["p_value"] > 0.5
    # chi2 = (100² + 100²) / 500 = 40 on 1 degree of freedom: p ≈ 2.5e-10.
    bad = ab.srm_check({"A": 600, "B": 400}, shares)
    assert bad["mismatch"] and bad["p_value"] < 1e-9
    assert ab.srm_check({}, shares)["p_value"] is None


def test_arm_stats_counts_only_events_after_their_impression_in_their_arm() -> None:
    impressions = [
        ("A", "u1", "i1", 10.0),
        ("A", "u1", "i2", 10.0),
        ("B", "u2", "i1", 10.0),
        ("B", "u2", "i3", 20.0),
    ]
    feedback = [("A", "up", 11.0), ("A", "down", 11.0), ("B", "up", 11.0), ("B", "up", 12.0)]
    events = [
        ("A", "u1", "i1", 11.0),  # shown before: counts
        ("A", "u1", "i9", 11.0),  # never shown
        ("B", "u2", "i3", 15.0),  # clicked before it was shown
        ("B", "u2", "i1", 30.0),  # counts
        ("B", "u1", "i2", 30.0),  # shown to u1 in arm A, not in B
    ]
    stats = ab.arm_stats(impressions, feedback, events)
    assert stats["A"] == ab.ArmStats(1, 2, 1, 1)
    assert stats["B"] == ab.ArmStats(1, 2, 2, 1)
    result = ab.report(stats, ab.ABConfig("v2", 0.5, "s"))
    assert result["arms"]["B"]["serves"] == "v2"
    assert result["arms"]["A"]["positive_feedback_rate"]["rate"] == pytest.approx(0.5)
    assert result["b_minus_a"]["positive_feedback_rate"]["diff"] == pytest.approx(0.5)


def test_migration_upgrades_a_store_of_the_previous_schema(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    url = f"sqlite:///{db}"
    old = sa.create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with old.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    old.dispose()
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO events (user_id, item_id, event_type, weight, ts, received_at)"
            " VALUES ('u1', 'i1', 'click', 2.0, 1.0, 1.0)"
        )
        assert "arm" not in {r[1] for r in conn.execute("PRAGMA table_info(events)")}
    store = EventStore(url)
    try:
        store.ensure_schema()
        assert store.revision == "0002"
        old_rows = store.events_after(0)
        assert [(e.user_id, e.item_id, e.arm) for e in old_rows] == [("u1", "i1", None)]
        store.add_events([EventRow("u2", "i2", "click", 2.0, 5.0, 5.0, arm="B")])
        store.add_impressions("u2", "B", "v2", ["i2", "i3"])
        rows = store.ab_rows(0.0)
        assert rows["events"] == [("B", "u2", "i2", 5.0)]
        assert sorted(r[2] for r in rows["impressions"]) == ["i2", "i3"]
        assert store.ab_rows(0.0, until=4.0)["events"] == []
    finally:
        store.dispose()
    with sqlite3.connect(db) as conn:
        version = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall()
        assert version == [("0002",)]
        assert "arm" in {r[1] for r in conn.execute("PRAGMA table_info(feedback)")}


def test_the_ab_table_of_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "ab.toml"
    path.write_text(
        '[ab]\narms = {A = "current", B = "v7"}\nshares = {A = 0.7, B = 0.3}\nsalt = "s"\n',
        encoding="utf-8",
    )
    assert ab.from_toml(path) == ("v7", pytest.approx(0.3), "s")
    path.write_text('[ab]\narms = {A = "current", B = "v7"}\n', encoding="utf-8")
    assert ab.from_toml(path) == ("v7", 0.5, None)
    bad = {
        "[other]\nx = 1\n": r"no \[ab\] table",
        '[ab]\narms = {A = "v1", B = "v7"}\n': r'arms.A must be "current"',
        '[ab]\narms = {B = "v7"}\n': r"arms must be",
        '[ab]\narms = {A = "current", B = "v7"}\nshares = {A = 0.6, B = 0.6}\n': "a \\+ b = 1",
        '[ab]\narms = {A = "current", B = "v7"}\nsplit = 1\n': "unknown \\[ab\\] keys: split",
        "[ab\n": "not valid TOML",
    }
    for text, pattern in bad.items():
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=pattern):
            ab.from_toml(path)
    with pytest.raises(ConfigError, match="no such file"):
        ab.from_toml(tmp_path / "absent.toml")
