"""HTTP routes, one module per area; thin: validate, call the state / strategies, translate."""

from fastapi import APIRouter

from hybridrec.serving.routes import admin, compat, events, health, recommend, similar

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    recommend.router,
    similar.router,
    events.router,
    admin.router,
    compat.router,
)
