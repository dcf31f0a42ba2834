"""The parts of `hybridrec.tracking` that need no MLflow store: names, URIs, the switch."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridrec.config import PipelineConfig, TrackingConfig
from hybridrec.tracking import RunRecord, active, record_trials, resolve_uri, tracked_run
from hybridrec.tracking.client import _shown, tracking_enabled
from hybridrec.tracking.record import flatten, metric_key


def test_metric_names_are_what_mlflow_accepts() -> None:
    assert metric_key("als", "cold", "ndcg@10") == "als/cold/ndcg_at_10"


def test_flatten_writes_nested_config_as_dotted_text() -> None:
    got = flatten({"a": {"b": 1, "c": {"d": [1, 2]}, "e": {}}, "f": "x", "g": None, "h": True})
    assert got == {"a.b": "1", "a.c.d": "[1, 2]", "a.e": "{}", "f": "x", "g": "null", "h": "true"}
    params = flatten(PipelineConfig().model_dump(mode="json"))
    assert params["tracking.registered_model"] == "hybridrec"
    assert params["evaluation.k"] == "[10, 20]"


def test_uri_is_the_environment_then_the_config_then_the_data_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("HYBRIDREC_DATA_DIR", str(tmp_path))
    assert resolve_uri(TrackingConfig()) == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert resolve_uri(TrackingConfig(uri="http://h:5000")) == "http://h:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://u@h/db")
    assert resolve_uri(TrackingConfig(uri="http://h:5000")) == "postgresql+psycopg://u@h/db"


def test_messages_hide_a_password() -> None:
    assert _shown("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    assert _shown("http://h:5000") == "http://h:5000"


def test_tracking_is_on_unless_the_config_or_the_environment_turns_it_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HYBRIDREC_TRACKING", "true")
    assert tracking_enabled(TrackingConfig())
    assert not tracking_enabled(TrackingConfig(enabled=False))
    monkeypatch.setenv("HYBRIDREC_TRACKING", "false")
    assert not tracking_enabled(TrackingConfig())


def test_a_run_collects_trials_only_while_it_is_active(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRIDREC_TRACKING", "false")  # collected, never written
    record_trials("als", "ndcg@10", [({"factors": 8}, 0.5)])
    with tracked_run("tune", PipelineConfig()) as run:
        assert active() is run
        record_trials("als", "ndcg@10", [({"factors": 8}, 0.5), ({"factors": 16}, float("-inf"))])
    assert active() is None
    assert [t.metrics() for t in run.trials] == [{"ndcg_at_10": 0.5}, {}]
    assert run.params["tracking.enabled"] == "true"
    assert isinstance(run, RunRecord) and run.status == "FINISHED"


def test_a_run_that_raises_is_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRIDREC_TRACKING", "false")
    with pytest.raises(ValueError), tracked_run("train", PipelineConfig()) as run:
        raise ValueError("boom")
    assert run.status == "FAILED"
