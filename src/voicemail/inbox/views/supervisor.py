"""The supervisor view: backlog per queue, voicemails per day, time to handle."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from voicemail.api.deps import ReadSessionDep, RuntimeDep
from voicemail.inbox import stats
from voicemail.inbox.alerts import banner_alerts
from voicemail.inbox.deps import SupervisorUser
from voicemail.inbox.pages import render

router = APIRouter()


@router.get("/supervisor", include_in_schema=False)
def supervisor(
    request: Request,
    session: ReadSessionDep,
    user: SupervisorUser,
    runtime: RuntimeDep,
    queue: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    page = stats.supervisor_page(session, account_id=user.account_id, queue_id=queue or None)
    return render(
        request,
        "supervisor.html",
        {
            "page": page,
            "nav": "supervisor",
            "alerts": banner_alerts(session, user=user),
            "refresh_seconds": runtime.settings.backlog_refresh_seconds,
        },
    )
