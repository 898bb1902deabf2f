"""The web inbox under ``/inbox``: each screen's routes live in ``views/``."""

from __future__ import annotations

from fastapi import APIRouter

from voicemail.inbox.views import admin, login, notify, supervisor
from voicemail.inbox.views import inbox as inbox_list
from voicemail.inbox.views import voicemail as voicemail_page

router = APIRouter(prefix="/inbox")
router.include_router(login.router)
router.include_router(inbox_list.router)
# GET /inbox itself: an included router cannot have an empty path, so it is added here.
router.add_api_route("", inbox_list.inbox_list, methods=["GET"], include_in_schema=False)
router.include_router(voicemail_page.router)
router.include_router(admin.router)
router.include_router(supervisor.router)
router.include_router(notify.router)
