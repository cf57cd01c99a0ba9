"""HTML pages, one module per resource; `router` holds them all."""

from fastapi import APIRouter

from app.web.pages import (
    account,
    auth,
    demo,
    docs,
    images,
    inbox,
    models,
    projects,
    training,
)
from app.web.pages.common import SignInRequired

router = APIRouter()
for module in (auth, account, projects, images, inbox, training, models, demo, docs):
    router.include_router(module.router)

__all__ = ["SignInRequired", "docs", "router"]
