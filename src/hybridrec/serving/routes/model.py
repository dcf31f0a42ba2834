"""``/model``, its versions, A/B test and retraining decisions, and ``/admin/rollback``.

What a version says about itself is read from its manifest by the offline report's code
(`hybridrec.evaluation.html_report`: the same metrics, segments and version history as
``hybridrec report``); a rollback is what ``hybridrec bundle rollback`` does (the store's
`ModelStore.rollback`, then the MLflow registry mirrored with `sync_store`), followed by
the service's reload. Everything here reads files, so it runs in the thread pool.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.responses import JSONResponse

from hybridrec.bundle import Bundle, ModelStore
from hybridrec.errors import DataError, StoreConflictError
from hybridrec.serving.auth import require_admin
from hybridrec.serving.browse_schemas import (
    ABReport,
    DecisionsResponse,
    ModelInfo,
    ModelMetrics,
    RollbackRequest,
    RollbackResponse,
    UserAttribute,
    VersionInfo,
    VersionsResponse,
)
from hybridrec.serving.deps import BundleDep, StateDep
from hybridrec.serving.routes.admin import AUTH_RESPONSES
from hybridrec.serving.schemas import SimilarMethod, Strategy

__all__ = ["admin_router", "router"]

router = APIRouter(tags=["model"])
admin_router = APIRouter(
    tags=["admin"], dependencies=[Depends(require_admin)], responses=AUTH_RESPONSES
)

#: Keys of the manifest's ``data`` shown: where it came from and how big it was.
_DATA_KEYS = ("source", "rows", "users", "items")


def _finite(values: Mapping[str, float]) -> dict[str, float | None]:
    return {k: v if math.isfinite(v) else None for k, v in values.items()}


def _target(manifest: Mapping[str, Any]) -> str | None:
    from hybridrec.evaluation.html_report import config_evaluation

    return config_evaluation(manifest)[1]


def _info(bundle: Bundle) -> ModelInfo:
    from hybridrec.evaluation.html_report import report_from_manifest

    manifest = bundle.manifest
    notes: list[str] = []
    metrics: dict[str, ModelMetrics] = {}
    target = _target(manifest)
    try:
        report = report_from_manifest(manifest)
    except DataError as exc:
        notes.append(str(exc))
    else:
        target = report.target
        metrics = {
            r.name: ModelMetrics(
                metrics=_finite(r.metrics),
                segments={seg: _finite(values) for seg, values in r.segments.items()},
                users=r.n_users,
            )
            for r in report.reports
        }
    data = manifest.get("data") or {}
    return ModelInfo(
        version=bundle.version,
        created_at=bundle.created_at,
        default_model=bundle.default_model,
        models={name: str(info.get("model", name)) for name, info in manifest["models"].items()},
        data={key: data.get(key) for key in _DATA_KEYS},
        evaluated=bool(metrics),
        target=target,
        metrics=metrics,
        notes=notes,
        strategies=list(Strategy),
        similar_methods=list(SimilarMethod),
        user_attributes=_user_attributes(manifest),
    )


def _user_attributes(manifest: dict[str, Any]) -> list[UserAttribute]:
    """The attributes the version's models read, as their manifest entries list them."""
    found: dict[str, UserAttribute] = {}
    for name, info in manifest.get("models", {}).items():
        for attr in info.get("user_attributes") or ():
            have = found.get(attr["name"])
            if have is None:
                found[attr["name"]] = UserAttribute(**attr, models=[name])
            else:
                have.models.append(name)
    return list(found.values())


@router.get("/model", response_model=ModelInfo)
def model_info(bundle: BundleDep) -> ModelInfo:
    """The served version: when it was made, on what data, its offline metrics by segment.

    Also the strategies and similarity methods a client may ask for. A version trained
    without evaluation has no metrics (``evaluated`` false, a note says so).
    """
    return _info(bundle)


@router.get("/model/versions", response_model=VersionsResponse)
def model_versions(state: StateDep, bundle: BundleDep) -> VersionsResponse:
    """The store's versions, oldest first, with the default model's target metric each."""
    from hybridrec.evaluation.html_report import store_history

    store = ModelStore(state.service.model_dir)
    target = _target(bundle.manifest)
    rows = store_history(store, target or "", bundle.version)
    return VersionsResponse(
        target=target,
        current=store.current(),
        served=bundle.version,
        versions=[
            VersionInfo(
                version=row.version,
                created_at=row.created_at,
                default_model=row.default_model,
                models=row.models,
                value=row.value if target else None,
                current=row.current,
                served=row.reported,
            )
            for row in rows
        ],
    )


@router.get("/model/ab", response_model=ABReport)
def model_ab(state: StateDep) -> ABReport:
    """The A/B test running (else the one ended last): arms, online rates, sample-ratio check.

    The figures of ``hybridrec ab report``, from the same event store. ``test`` is false
    when the store has never run one.
    """
    from hybridrec.serving import ab

    # A report reads every row of the test: the thread pool, not the answers' turns.
    result = ab.summary(state.service.model_dir, state.store.ab_rows)
    if result is None:
        return ABReport(test=False)
    return ABReport(
        test=True,
        active=result["active"],
        started_at=result["started_at"],
        ended_at=result["ended_at"],
        arms=result["arms"],
        b_minus_a=result["b_minus_a"],
        srm=result["srm"],
    )


@router.get("/model/decisions", response_model=DecisionsResponse)
def model_decisions(state: StateDep, limit: int = 20) -> DecisionsResponse:
    """Retraining decisions (``hybridrec retrain``), newest first: deployed or kept, and why."""
    if not 1 <= limit <= 1000:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "limit must be between 1 and 1000")
    decisions = ModelStore(state.service.model_dir).decisions()
    return DecisionsResponse(decisions=decisions[::-1][:limit])


@admin_router.post(
    "/admin/rollback",
    response_model=RollbackResponse,
    responses={
        400: {"description": "Nothing to roll back to (the store says why)"},
        409: {
            "description": "The store's current is not the one given, the server is pinned, "
            "or the version rolled back to was refused"
        },
    },
)
def rollback(state: StateDep, body: RollbackRequest) -> Any:
    """``hybridrec bundle rollback``, then reload: serve the version current before this one.

    Only while the store's ``current`` is ``body.current``, the version the client showed
    as current: repeated rollbacks keep going back, so a second click or a page that is out
    of date must not take the store back one more step. The store's ``current`` moves back,
    the model registry follows, and this process loads it (other server processes follow
    the pointer within ``HYBRIDREC_SYNC_SECONDS``). A version that fails to load is refused
    (409) and the old one keeps serving; the store's pointer stays moved, as after the CLI.
    """
    from hybridrec.tracking import sync_store

    service = state.service
    if service.pinned_version is not None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"this server serves version {service.pinned_version} pinned by --version; "
            "a rollback of the store would not change what it serves",
        )
    before = body.current
    try:
        now = ModelStore(service.model_dir).rollback(expect=before)
    except StoreConflictError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    sync_store(service.model_dir)
    result = state.reload()
    done = RollbackResponse(
        ok=result.ok,
        rolled_back_from=before,
        current=now,
        served=result.version,
        seconds=result.seconds,
        error=result.error,
    )
    if not result.ok:
        return JSONResponse(done.model_dump(), status_code=status.HTTP_409_CONFLICT)
    return done
