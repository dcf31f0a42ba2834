"""HTTP routes, one module per area; thin: validate, call the state / strategies, translate."""

from fastapi import APIRouter

from hybridrec.serving.routes import admin, compat, events, health, recommend, similar
from hybridrec.serving.routes.catalog import router as catalog_router
from hybridrec.serving.routes.model import admin_router as rollback_router
from hybridrec.serving.routes.model import router as model_router

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    recommend.router,
    similar.router,
    events.router,
    admin.router,
    compat.router,
    catalog_router,
    model_router,
    rollback_router,
)
