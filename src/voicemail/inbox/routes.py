"""The web inbox under ``/inbox``: each screen's routes live in ``views/``."""

from __future__ import annotations

from fastapi import APIRouter

from voicemail.inbox.views import login

router = APIRouter(prefix="/inbox")
router.include_router(login.router)
