"""A/B tests of two versions of a model store: the test's settings, arms, and its report.

An A/B test is an operational setting of the model store, not of a training config: a small
``ab.json`` at the store's root (written by ``hybridrec ab start``, removed by ``hybridrec
ab stop``) says which stored version is arm B and which share of users it gets; arm A is
whatever ``current`` names. Every server on the store reads it at start and in its
background sync, so all processes split users the same way.

A user's arm is a salted hash of their id (BLAKE2b, never Python's `hash`, which differs
between processes), so it is the same in every process, on every restart, and for every
request. The report's figures are pure functions of the stored rows (see `arm_stats`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from hybridrec.errors import ConfigError

__all__ = [
    "AB_FILE",
    "ARMS",
    "LAST_FILE",
    "SRM_P",
    "ABConfig",
    "ArmStats",
    "Rate",
    "arm_of",
    "arm_stats",
    "compare",
    "read_config",
    "remove_config",
    "report",
    "srm_check",
    "unit_interval",
    "wilson",
    "write_config",
]

#: The file at the store's root that holds a running test.
AB_FILE = "ab.json"
#: Where ``ab stop`` leaves the test it ended (with ``ended_at``), for a last report.
LAST_FILE = "ab-last.json"
#: Arm A serves the store's ``current``; arm B a stored version.
ARMS = ("A", "B")
#: A sample-ratio-mismatch p-value below this is a warning: the split is not the configured one.
SRM_P = 0.001


@dataclass(frozen=True)
class ABConfig:
    """A running A/B test.

    Attributes:
        b_version: The stored version arm B serves (arm A serves ``current``).
        share_b: Share of users in arm B, in (0, 1).
        salt: Mixed into the hash, so a new test reshuffles users.
        started_at: Unix seconds; the report counts only rows received since then.
        ended_at: When ``ab stop`` ended it (None while it runs); the report stops there.
    """

    b_version: str
    share_b: float = 0.5
    salt: str = ""
    started_at: float = 0.0
    ended_at: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.share_b < 1.0:
            raise ConfigError(f"A/B share of B must be between 0 and 1 (got {self.share_b})")
        if not self.b_version:
            raise ConfigError("A/B test: arm B needs a version")

    @property
    def shares(self) -> dict[str, float]:
        """Configured share of users per arm."""
        return {"A": 1.0 - self.share_b, "B": self.share_b}

    @property
    def arms(self) -> dict[str, str]:
        """What each arm serves: ``current`` for A, the version for B (the issue's form)."""
        return {"A": "current", "B": self.b_version}


def unit_interval(salt: str, user_id: str) -> float:
    """The user's point in [0, 1): the first 8 bytes of BLAKE2b(salt, id) as a fraction."""
    digest = hashlib.blake2b(
        user_id.encode("utf-8"), digest_size=8, key=salt.encode("utf-8")[:64]
    ).digest()
    return int.from_bytes(digest, "big") / 2**64


def arm_of(config: ABConfig | None, user_id: str | None) -> str | None:
    """The arm of ``user_id``: B when its point is below the share of B, else A.

    None when no test runs; A for a visitor without an id (no id, no sticky arm).
    """
    if config is None:
        return None
    if user_id is None:
        return "A"
    return "B" if unit_interval(config.salt, user_id) < config.share_b else "A"


# ---- ab.json -------------------------------------------------------------------------------


def read_config(model_dir: str | Path, *, last: bool = False) -> ABConfig | None:
    """The test of the store at ``model_dir`` (None when none runs).

    Args:
        model_dir: The model store.
        last: Read the test ``ab stop`` ended last instead (`LAST_FILE`).

    Raises:
        ConfigError: The file exists but is not a valid test (the message names it).
    """
    path = Path(model_dir) / (LAST_FILE if last else AB_FILE)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        return ABConfig(
            b_version=str(data["arms"]["B"]),
            share_b=float(data["shares"]["B"]),
            salt=str(data.get("salt", "")),
            started_at=float(data.get("started_at", 0.0)),
            ended_at=None if data.get("ended_at") is None else float(data["ended_at"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a valid A/B test ({type(exc).__name__}: {exc})") from None


def from_toml(path: str | Path) -> tuple[str, float, str | None]:
    """Arm B's version, its share and the salt from an ``[ab]`` table of a TOML file.

    The table: ``arms = {A = "current", B = "<version>"}``, optionally ``shares = {A = 0.5,
    B = 0.5}`` (summing to 1; default 50/50) and ``salt``.

    Raises:
        ConfigError: The file, the table or a key is missing or wrong (the message says which).
    """
    import tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    table = data.get("ab")
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: no [ab] table")
    arms = table.get("arms")
    if not isinstance(arms, dict) or set(arms) != set(ARMS):
        raise ConfigError(f'{path}: [ab] arms must be {{A = "current", B = "<version>"}}')
    if arms["A"] != "current":
        raise ConfigError(f'{path}: [ab] arms.A must be "current" (got {arms["A"]!r})')
    if not isinstance(arms["B"], str) or not arms["B"]:
        raise ConfigError(f"{path}: [ab] arms.B must name a stored version")
    shares = table.get("shares", {"A": 0.5, "B": 0.5})
    if (
        not isinstance(shares, dict)
        or set(shares) != set(ARMS)
        or not all(isinstance(v, int | float) for v in shares.values())
        or abs(sum(shares.values()) - 1.0) > 1e-9
    ):
        raise ConfigError(f"{path}: [ab] shares must be {{A = a, B = b}} with a + b = 1")
    salt = table.get("salt")
    if salt is not None and not isinstance(salt, str):
        raise ConfigError(f"{path}: [ab] salt must be text")
    unknown = set(table) - {"arms", "shares", "salt"}
    if unknown:
        raise ConfigError(f"{path}: unknown [ab] keys: {', '.join(sorted(unknown))}")
    return arms["B"], float(shares["B"]), salt


def write_config(
    model_dir: str | Path, b_version: str, *, share_b: float = 0.5, salt: str | None = None
) -> ABConfig:
    """Start a test: write ``ab.json`` atomically (a reader sees the old file or the new)."""
    config = ABConfig(
        b_version=b_version,
        share_b=share_b,
        salt=secrets.token_hex(8) if salt is None else salt,
        started_at=time.time(),
    )
    _write(Path(model_dir) / AB_FILE, config)
    return config


def _write(path: Path, config: ABConfig) -> None:
    body: dict[str, Any] = {
        "arms": config.arms,
        "shares": config.shares,
        "salt": config.salt,
        "started_at": config.started_at,
    }
    if config.ended_at is not None:
        body["ended_at"] = config.ended_at
    fd, tmp = tempfile.mkstemp(prefix=".ab-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(body, fh, indent=2)
    Path(tmp).replace(path)


def remove_config(model_dir: str | Path) -> ABConfig | None:
    """End the running test: ``ab.json`` becomes `LAST_FILE` with ``ended_at``.

    Returns:
        The ended test, or None when none ran.
    """
    config = read_config(model_dir)
    if config is None:
        return None
    ended = replace(config, ended_at=time.time())
    _write(Path(model_dir) / LAST_FILE, ended)
    (Path(model_dir) / AB_FILE).unlink(missing_ok=True)
    return ended


# ---- statistics ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rate:
    """A proportion with its 95% Wilson interval."""

    successes: int
    trials: int
    rate: float
    low: float
    high: float


def wilson(successes: int, trials: int, z: float = 1.959963984540054) -> Rate:
    """``successes / trials`` with the Wilson score interval (sound near 0 and 1).

    No trials gives rate 0 and the whole [0, 1] as interval.
    """
    if trials <= 0:
        return Rate(successes, 0, 0.0, 0.0, 1.0)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return Rate(successes, trials, p, max(0.0, centre - half), min(1.0, centre + half))


def compare(a: Rate, b: Rate, z: float = 1.959963984540054) -> dict[str, Any]:
    """The difference B − A with its normal-approximation 95% interval, and the better arm.

    ``better`` is ``"B"`` or ``"A"`` when the interval excludes 0, else None (no
    significant difference).
    """
    diff = b.rate - a.rate
    var = 0.0
    for r in (a, b):
        if r.trials:
            var += r.rate * (1 - r.rate) / r.trials
    half = z * math.sqrt(var)
    low, high = diff - half, diff + half
    better = "B" if low > 0 else "A" if high < 0 else None
    return {"diff": diff, "low": low, "high": high, "better": better}


def srm_check(users: Mapping[str, int], shares: Mapping[str, float]) -> dict[str, Any]:
    """Sample-ratio mismatch: a chi-square test of users per arm against the shares.

    ``mismatch`` is true when p < `SRM_P`: the split users saw is not the configured one
    (a bug in assignment or in logging, and the rates are not comparable).
    """
    from scipy.stats import chisquare

    total = sum(users.get(arm, 0) for arm in ARMS)
    if total == 0:
        return {"users": dict(users), "p_value": None, "mismatch": False}
    observed = [users.get(arm, 0) for arm in ARMS]
    expected = [total * shares[arm] for arm in ARMS]
    p = float(chisquare(observed, expected).pvalue)
    return {"users": {a: users.get(a, 0) for a in ARMS}, "p_value": p, "mismatch": p < SRM_P}


@dataclass(frozen=True)
class ArmStats:
    """What one arm's users did: the counts behind the report's rates."""

    users: int
    impressions: int
    positive_feedback: int
    events_on_recommended: int

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain mapping."""
        return asdict(self)


def arm_stats(
    impressions: Iterable[tuple[str, str, str, float]],
    feedback: Iterable[tuple[str, str, float]],
    events: Iterable[tuple[str, str, str, float]],
) -> dict[str, ArmStats]:
    """Per-arm counts from stored rows.

    Args:
        impressions: ``(arm, user_id, item_id, received_at)``, one per item shown.
        feedback: ``(arm, value, received_at)``; ``"up"`` is positive.
        events: ``(arm, user_id, item_id, received_at)``; one counts when that item was
            recommended to that user in that arm before it.
    """
    users: dict[str, set[str]] = {arm: set() for arm in ARMS}
    shown: dict[str, int] = dict.fromkeys(ARMS, 0)
    first_shown: dict[tuple[str, str, str], float] = {}
    for arm, user, item, ts in impressions:
        if arm not in users:
            continue
        users[arm].add(user)
        shown[arm] += 1
        key = (arm, user, item)
        if key not in first_shown or ts < first_shown[key]:
            first_shown[key] = ts
    positive = dict.fromkeys(ARMS, 0)
    for arm, value, _ts in feedback:
        if arm in positive and value == "up":
            positive[arm] += 1
    on_recommended = dict.fromkeys(ARMS, 0)
    for arm, user, item, ts in events:
        seen = first_shown.get((arm, user, item))
        if seen is not None and seen <= ts:
            on_recommended[arm] += 1
    return {
        arm: ArmStats(len(users[arm]), shown[arm], positive[arm], on_recommended[arm])
        for arm in ARMS
    }


def report(stats: Mapping[str, ArmStats], config: ABConfig) -> dict[str, Any]:
    """The report: per arm its counts and rates, B − A per rate, the SRM check."""
    arms: dict[str, Any] = {}
    rates: dict[str, dict[str, Rate]] = {}
    for arm in ARMS:
        s = stats[arm]
        rates[arm] = {
            "positive_feedback_rate": wilson(s.positive_feedback, s.impressions),
            "recommended_event_rate": wilson(s.events_on_recommended, s.impressions),
        }
        arms[arm] = {
            "serves": config.arms[arm],
            "share": config.shares[arm],
            **s.as_dict(),
            **{name: asdict(rate) for name, rate in rates[arm].items()},
        }
    comparisons = {name: compare(rates["A"][name], rates["B"][name]) for name in rates["A"]}
    return {
        "arms": arms,
        "b_minus_a": comparisons,
        "srm": srm_check({a: stats[a].users for a in ARMS}, config.shares),
        "salt": config.salt,
        "started_at": config.started_at,
        "ended_at": config.ended_at,
    }


def summary(
    model_dir: str | Path, rows_of: Callable[[float, float | None], Mapping[str, Any]]
) -> dict[str, Any] | None:
    """The running test's `report` (else the one ended last), or None when there is none.

    ``rows_of(started_at, ended_at)`` returns the test's ``impressions``, ``feedback`` and
    ``events`` rows (`EventStore.ab_rows`). ``active`` says whether the test still runs.
    `hybridrec ab report`, ``GET /model/ab`` and the web UI all read this.
    """
    config = read_config(model_dir) or read_config(model_dir, last=True)
    if config is None:
        return None
    rows = rows_of(config.started_at, config.ended_at)
    result = report(arm_stats(rows["impressions"], rows["feedback"], rows["events"]), config)
    return {"active": config.ended_at is None, **result}
