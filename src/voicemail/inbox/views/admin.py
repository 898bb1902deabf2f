"""The admin page: users, queues and bots of the admin's account.

Each form posts to its own route, which makes one change and redirects back (303) with a
``done`` key naming what happened. A refused change raises, so the request's transaction
rolls back and the error page says why.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from voicemail import admin
from voicemail.api.deps import ReadSessionDep, SessionDep
from voicemail.inbox.alerts import banner_alerts
from voicemail.inbox.deps import AdminUser, CsrfChecked, WebSessionDep
from voicemail.inbox.pages import render
from voicemail.states import Role
from voicemail.users import service as users

router = APIRouter(prefix="/admin")

# What the page says after a change; only these keys are shown (no text from the URL).
DONE = {
    "user-created": "User created.",
    "role-changed": "Role changed.",
    "password-reset": "Password reset; the user was signed out.",
    "user-activated": "User activated.",
    "user-deactivated": "User deactivated and signed out.",
    "queue-created": "Queue created.",
    "member-added": "Member added.",
    "member-removed": "Member removed.",
    "alerts-set": "Alert thresholds saved.",
    "target-set": "Handle target saved.",
    "bot-queue-set": "Bot queue saved.",
    "time-zone-set": "Time zone saved.",
}

Text = Annotated[str, Form(max_length=320)]
Password = Annotated[str, Form(max_length=users.MAX_PASSWORD_LENGTH)]


def _back(done: str) -> RedirectResponse:
    return RedirectResponse(f"/inbox/admin?done={done}", status_code=303)


@router.get("", include_in_schema=False)
def admin_page(
    request: Request, session: ReadSessionDep, user: AdminUser, done: str | None = None
) -> Response:
    found = admin.overview(session, account_id=user.account_id)
    context = {
        "nav": "admin",
        "alerts": banner_alerts(session, user=user),
        "done": DONE.get(done or ""),
        "account": found.account,
        "users": found.users,
        "queues": found.queues,
        "bots": found.bots,
        "roles": tuple(Role),
        "min_password": users.MIN_PASSWORD_LENGTH,
    }
    return render(request, "admin.html", context)


# Users ---------------------------------------------------------------------------------


@router.post("/users", include_in_schema=False, dependencies=[CsrfChecked])
def create_user(
    session: SessionDep,
    user: AdminUser,
    email: Text,
    role: Text,
    password: Password,
    name: Annotated[str, Form(max_length=200)] = "",
    queues: Annotated[list[str] | None, Form()] = None,
) -> Response:
    admin.create_user(
        session,
        actor=admin.web_actor(user),
        email=email,
        role=role,
        password=password,
        name=name,
        queue_names=queues or (),
    )
    return _back("user-created")


@router.post("/users/{user_id}/role", include_in_schema=False, dependencies=[CsrfChecked])
def set_role(session: SessionDep, user: AdminUser, user_id: str, role: Text) -> Response:
    admin.set_role(session, actor=admin.web_actor(user), email_or_id=user_id, role=role)
    return _back("role-changed")


@router.post("/users/{user_id}/password", include_in_schema=False, dependencies=[CsrfChecked])
def set_password(
    session: SessionDep,
    user: AdminUser,
    web_session: WebSessionDep,
    user_id: str,
    password: Password,
) -> Response:
    # The admin's own browser session is kept when they change their own password.
    actor = admin.web_actor(user, web_session.id)
    admin.set_password(session, actor=actor, email_or_id=user_id, password=password)
    return _back("password-reset")


@router.post("/users/{user_id}/active", include_in_schema=False, dependencies=[CsrfChecked])
def set_active(
    session: SessionDep,
    user: AdminUser,
    user_id: str,
    active: Annotated[bool, Form()],
) -> Response:
    admin.set_active(session, actor=admin.web_actor(user), email_or_id=user_id, active=active)
    return _back("user-activated" if active else "user-deactivated")


# Queues --------------------------------------------------------------------------------


@router.post("/queues", include_in_schema=False, dependencies=[CsrfChecked])
def create_queue(
    session: SessionDep, user: AdminUser, name: Annotated[str, Form(max_length=200)]
) -> Response:
    admin.create_queue(session, actor=admin.web_actor(user), name=name)
    return _back("queue-created")


@router.post("/queues/{queue_id}/members", include_in_schema=False, dependencies=[CsrfChecked])
def add_member(session: SessionDep, user: AdminUser, queue_id: str, member: Text) -> Response:
    admin.add_member(session, actor=admin.web_actor(user), queue=queue_id, user=member)
    return _back("member-added")


@router.post(
    "/queues/{queue_id}/members/{member_id}/remove",
    include_in_schema=False,
    dependencies=[CsrfChecked],
)
def remove_member(session: SessionDep, user: AdminUser, queue_id: str, member_id: str) -> Response:
    admin.remove_member(session, actor=admin.web_actor(user), queue=queue_id, user=member_id)
    return _back("member-removed")


@router.post("/queues/{queue_id}/alerts", include_in_schema=False, dependencies=[CsrfChecked])
def set_alerts(
    session: SessionDep,
    user: AdminUser,
    queue_id: str,
    max_count: Annotated[str, Form(max_length=20)] = "",
    max_age_minutes: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    admin.set_alerts(
        session,
        actor=admin.web_actor(user),
        queue=queue_id,
        max_count=admin.parse_threshold(max_count, "The count threshold"),
        max_age_minutes=admin.parse_threshold(max_age_minutes, "The age threshold"),
    )
    return _back("alerts-set")


@router.post("/queues/{queue_id}/target", include_in_schema=False, dependencies=[CsrfChecked])
def set_handle_target(
    session: SessionDep,
    user: AdminUser,
    queue_id: str,
    minutes: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    admin.set_handle_target(
        session,
        actor=admin.web_actor(user),
        queue=queue_id,
        minutes=admin.parse_minutes(minutes, "The handle target"),
    )
    return _back("target-set")


# Bots ----------------------------------------------------------------------------------


@router.post("/bots/{bot_id}/queue", include_in_schema=False, dependencies=[CsrfChecked])
def set_bot_queue(
    session: SessionDep,
    user: AdminUser,
    bot_id: str,
    queue: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    admin.set_bot_queue(session, actor=admin.web_actor(user), bot_id=bot_id, queue=queue or None)
    return _back("bot-queue-set")


# The account ------------------------------------------------------------------------------


@router.post("/account/time-zone", include_in_schema=False, dependencies=[CsrfChecked])
def set_time_zone(session: SessionDep, user: AdminUser, time_zone: Text) -> Response:
    admin.set_time_zone(session, actor=admin.web_actor(user), time_zone=time_zone)
    return _back("time-zone-set")
