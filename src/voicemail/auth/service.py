"""Apps (client id + secret), scope grants per (app, bot), and request authentication."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from voicemail import ids
from voicemail.auth.replay import ReplayGuard
from voicemail.auth.tokens import read_app_id, verify_token
from voicemail.db.base import utcnow
from voicemail.db.models import Account, App, Bot, ScopeGrant
from voicemail.errors import BadRequest, Forbidden, InvalidCredentials, NotFound, TokenRejected
from voicemail.security import SecretBox, new_client_secret

SCOPE_FETCH = "SmartAssist Voicemail"
SCOPE_DEPOSIT = "Voicemail Deposit"
SCOPE_DELETE = "Delete Recordings"
SCOPE_WEBHOOKS = "Manage Webhooks"  # ours: the admin API of a bot's webhook subscriptions
KNOWN_SCOPES = (SCOPE_FETCH, SCOPE_DEPOSIT, SCOPE_DELETE, SCOPE_WEBHOOKS)


@dataclass(frozen=True)
class CreatedApp:
    app: App
    client_secret: str  # shown once, at creation or rotation


@dataclass(frozen=True)
class Caller:
    """Who is calling: the app, the bot named in the URL, and the account billed for limits."""

    app_id: str
    bot_id: str
    account_id: str
    rate_limit_per_minute: int | None  # the account's own limit, if it has one


def check_scopes(scopes: Sequence[str]) -> list[str]:
    unknown = [scope for scope in scopes if scope not in KNOWN_SCOPES]
    if unknown:
        raise BadRequest(f"Unknown scope {unknown[0]!r}; known scopes: {', '.join(KNOWN_SCOPES)}")
    return list(dict.fromkeys(scopes))


def get_app(session: Session, *, app_id: str) -> App:
    app = session.get(App, app_id)
    if app is None:
        raise NotFound(f"No app {app_id}")
    return app


def create_app(
    session: Session, *, box: SecretBox, name: str, bot_id: str, scopes: Sequence[str]
) -> CreatedApp:
    bot = session.get(Bot, bot_id)
    if bot is None:
        raise NotFound(f"No bot {bot_id}")
    if not name.strip():
        raise BadRequest("App name must not be empty")
    secret = new_client_secret()
    app = App(
        id=ids.new_id(ids.APP),
        account_id=bot.account_id,
        name=name.strip(),
        secret_ciphertext=box.encrypt(secret),
        enforce_jti=False,
    )
    session.add(app)
    for scope in check_scopes(scopes):
        app.grants.append(ScopeGrant(bot_id=bot.id, scope=scope))
    session.flush()
    return CreatedApp(app=app, client_secret=secret)


def list_apps(session: Session) -> Sequence[App]:
    return session.scalars(select(App).order_by(App.created_at)).all()


def grant_scopes(session: Session, *, app_id: str, bot_id: str, scopes: Sequence[str]) -> App:
    app = get_app(session, app_id=app_id)
    bot = session.get(Bot, bot_id)
    if bot is None:
        raise NotFound(f"No bot {bot_id}")
    if bot.account_id != app.account_id:
        raise Forbidden("An app can only hold scopes on bots of its own account")
    held = {(grant.bot_id, grant.scope) for grant in app.grants}
    for scope in check_scopes(scopes):
        if (bot_id, scope) not in held:
            app.grants.append(ScopeGrant(bot_id=bot_id, scope=scope))
    session.flush()
    return app


def revoke_scopes(session: Session, *, app_id: str, bot_id: str, scopes: Sequence[str]) -> App:
    app = get_app(session, app_id=app_id)
    revoked = set(check_scopes(scopes))
    app.grants = [g for g in app.grants if not (g.bot_id == bot_id and g.scope in revoked)]
    session.flush()
    return app


def rotate_secret(session: Session, *, box: SecretBox, app_id: str) -> CreatedApp:
    app = get_app(session, app_id=app_id)
    secret = new_client_secret()
    app.secret_ciphertext = box.encrypt(secret)
    app.secret_rotated_at = utcnow()
    session.flush()
    return CreatedApp(app=app, client_secret=secret)


def set_enforce_jti(session: Session, *, app_id: str, enabled: bool) -> App:
    app = get_app(session, app_id=app_id)
    app.enforce_jti = enabled
    session.flush()
    return app


# The query behind every public request, built once (SQLAlchemy then reuses its compiled
# form without rebuilding the expression): the app, its account's limit, and whether the
# app holds the scope on that bot of its own account.
_APP_FOR_REQUEST = (
    select(
        App.id,
        App.account_id,
        App.secret_ciphertext,
        App.enforce_jti,
        Account.rate_limit_per_minute,
        select(ScopeGrant.id)
        .join(Bot, Bot.id == ScopeGrant.bot_id)
        .where(
            ScopeGrant.app_id == App.id,
            ScopeGrant.bot_id == bindparam("bot_id"),
            ScopeGrant.scope == bindparam("scope"),
            Bot.account_id == App.account_id,
        )
        .exists(),
    )
    .join(Account, Account.id == App.account_id)
    .where(App.id == bindparam("app_id"))
)


def authenticate(
    session: Session,
    *,
    box: SecretBox,
    replay_guard: ReplayGuard,
    token: str | None,
    bot_id: str,
    scope: str,
    leeway: int,
    admit: Callable[[Caller], None],
) -> Caller:
    """Check the token and that its app holds ``scope`` on ``bot_id``, then ``admit`` the
    caller (the route's rate limit, which raises to refuse).

    Unknown apps and bad signatures give the same 401 as a missing token, so a caller cannot
    probe which client ids exist. A missing scope, or a bot that does not exist, gives 403.
    Every public request comes through here, so it is one query: the app, its account's
    limit, and whether the grant exists on a bot of the app's own account.

    A JTI-enforced token is used up only by a request that passes all of these: its jti is
    claimed after the signature and the scope were checked, and given back when ``admit``
    refuses (``auth/replay.py`` says why in this order).
    """
    if token is None:
        raise InvalidCredentials()
    row = session.execute(
        _APP_FOR_REQUEST, {"app_id": read_app_id(token), "bot_id": bot_id, "scope": scope}
    ).one_or_none()
    if row is None:
        raise InvalidCredentials()
    app_id, account_id, ciphertext, enforce_jti, rate_limit, held = row
    now = time.time()
    claims = verify_token(
        token, box.decrypt(ciphertext), enforce_jti=enforce_jti, leeway=leeway, now=now
    )
    if not held:
        raise Forbidden(f"The app does not have the '{scope}' scope on this bot")
    caller = Caller(
        app_id=app_id, bot_id=bot_id, account_id=account_id, rate_limit_per_minute=rate_limit
    )
    if not enforce_jti:
        admit(caller)
        return caller
    assert claims.jti is not None and claims.exp is not None
    if not replay_guard.first_use(app_id, claims.jti, claims.exp + leeway, now):
        raise TokenRejected("JTI has already been used: this token was replayed")
    try:
        admit(caller)
    except BaseException:
        replay_guard.release(app_id, claims.jti)
        raise
    return caller


def authenticate_basic(
    session: Session,
    *,
    box: SecretBox,
    client_id: str,
    client_secret: str,
    bot_id: str,
    scope: str,
) -> Caller:
    """HTTP Basic with the app's client id and secret (jambonz ``wsAuth``): the same answers
    as ``authenticate``. The secret is compared in constant time and never logged."""
    row = session.execute(
        _APP_FOR_REQUEST, {"app_id": client_id, "bot_id": bot_id, "scope": scope}
    ).one_or_none()
    if row is None:
        raise InvalidCredentials()
    app_id, account_id, ciphertext, _, rate_limit, held = row
    expected = box.decrypt(ciphertext).encode()
    if not hmac.compare_digest(expected, client_secret.encode()):
        raise InvalidCredentials()
    if not held:
        raise Forbidden(f"The app does not have the '{scope}' scope on this bot")
    return Caller(
        app_id=app_id, bot_id=bot_id, account_id=account_id, rate_limit_per_minute=rate_limit
    )


def digest_app(
    session: Session, *, box: SecretBox, client_id: str, verify: Callable[[str], bool]
) -> App | None:
    """The app whose client id is ``client_id`` when ``verify`` accepts its secret (a SIP
    digest computed with it), else None: an unknown app and a wrong secret look the same.
    The secret never leaves this call but into ``verify``."""
    app = session.get(App, client_id) if ids.is_id(client_id, ids.APP) else None
    if app is None:
        return None
    return app if verify(box.decrypt(app.secret_ciphertext)) else None


def holds_scope(session: Session, *, app_id: str, bot_id: str, scope: str) -> bool:
    """Whether the app holds ``scope`` on ``bot_id``, a bot of its own account."""
    row = session.execute(
        _APP_FOR_REQUEST, {"app_id": app_id, "bot_id": bot_id, "scope": scope}
    ).one_or_none()
    return bool(row is not None and row[-1])
