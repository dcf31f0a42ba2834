"""Models that would not fit the machine are skipped up front; routes need enough users."""

from __future__ import annotations

import pytest
from rich.console import Console

from hybridrec.config import PipelineConfig
from hybridrec.evaluation.evaluator import ModelReport
from hybridrec.models import ALS, EASE, ItemKNN
from hybridrec.models.footprint import DataShape
from hybridrec.pipeline.train import MIN_ROUTE_USERS, _best_routes, runnable_models


def _cfg(**resources: float) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "resources": resources,
            "models": {
                "als": {"factors": 8},
                "ease": {"max_items": 50_000},
                "itemknn": {},
                "hybrid": {"model": "hybrid", "components": {"als": 0.5, "ease": 0.5}},
            },
        }
    )


def test_footprints_grow_with_the_data():
    small = DataShape(users=1_000, items=1_000, nnz=10_000, catalog=1_000)
    large = DataShape(users=1_000, items=40_000, nnz=10_000, catalog=40_000)
    for klass in (ALS, EASE, ItemKNN):
        cfg = klass.Config()
        assert klass.footprint(cfg, large).bytes >= klass.footprint(cfg, small).bytes > 0
    # EASE is dense in its items: 3 float32 n x n arrays while fitting, capped by max_items.
    ease = EASE.footprint(EASE.Config(max_items=40_000), large)
    assert ease.bytes >= 3 * 40_000**2 * 4
    assert EASE.footprint(EASE.Config(max_items=10_000), large).bytes < ease.bytes / 10


def test_a_model_over_the_budget_is_skipped_with_the_setting_that_fits():
    out = Console(record=True, width=300)
    shape = DataShape(users=5_000, items=40_000, nnz=200_000, catalog=40_000)
    specs = runnable_models(_cfg(memory_limit_gb=2.0), None, out, shape)
    text = out.export_text()
    # EASE over 40k items needs ~19 GB: skipped, and so is the hybrid built on it.
    assert "ease" not in specs and "hybrid" not in specs
    assert {"als", "itemknn"} <= set(specs)
    assert "skipped ease: needs" in text and "max_items = " in text
    assert "skipped hybrid: built on ease" in text
    # The suggested max_items does fit.
    suggested = int(text.split("max_items = ")[1].split()[0])
    assert EASE.footprint(EASE.Config(max_items=suggested), shape).bytes <= 2 * 2**30
    # With room, nothing is skipped.
    assert set(runnable_models(_cfg(memory_limit_gb=64.0), None, None, shape)) == {
        "als", "ease", "itemknn", "hybrid"
    }  # fmt: skip


def _ensemble_cfg(two_tower_enabled: bool) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "models": {
                "als": {"factors": 8},
                "two_tower": {"enabled": two_tower_enabled},
                "ensemble": {"model": "hybrid", "components": {"als": 0.6, "two_tower": 0.4}},
                "hybrid": {"model": "hybrid", "components": {"als": 0.5, "popularity": 0.5}},
            },
        }
    )


def test_a_hybrid_on_a_disabled_model_is_skipped_with_the_reason():
    out = Console(record=True, width=300)
    specs = runnable_models(_ensemble_cfg(False), None, out)
    assert set(specs) == {"als", "hybrid"}
    assert "skipped ensemble: built on two_tower, which is disabled" in out.export_text()
    # Enabled, the same hybrid stays.
    assert "ensemble" in runnable_models(_ensemble_cfg(True), None, None)


def _report(name: str, users: dict[str, int], scores: dict[str, float]) -> ModelReport:
    segments = {s: {"users": n, "ndcg@10": scores[s]} for s, n in users.items()}
    return ModelReport(name=name, metrics={}, segments=segments, n_users=sum(users.values()))


def test_routes_need_enough_validation_users_else_the_hybrid():
    users = {"cold": MIN_ROUTE_USERS - 1, "warm": MIN_ROUTE_USERS, "hot": 300}
    reports = {
        "popularity": _report("popularity", users, {"cold": 0.9, "warm": 0.1, "hot": 0.1}),
        "als": _report("als", users, {"cold": 0.1, "warm": 0.5, "hot": 0.2}),
        "hybrid": _report("hybrid", users, {"cold": 0.2, "warm": 0.4, "hot": 0.3}),
    }
    routes = _best_routes(reports, "ndcg@10", fallback="hybrid")
    # 49 cold users say too little: the hybrid, not the popularity that won on them.
    assert routes == {"cold": "hybrid", "warm": "als", "hot": "hybrid"}
    assert "cold" not in _best_routes(reports, "ndcg@10")


def test_resources_config_is_validated():
    with pytest.raises(ValueError, match="memory_fraction"):
        PipelineConfig.model_validate({"resources": {"memory_fraction": 1.5}})
