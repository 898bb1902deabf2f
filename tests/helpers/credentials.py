"""A bot and an app's credentials for the public API, made straight through the services."""

from __future__ import annotations

from dataclasses import dataclass

import jwt

from voicemail.auth import service as auth
from voicemail.bots import service as bots
from voicemail.runtime import Runtime


@dataclass
class Credentials:
    bot_id: str
    account_id: str
    client_id: str
    client_secret: str

    def token(self, **claims: object) -> str:
        return jwt.encode({"appId": self.client_id, **claims}, self.client_secret, "HS256")

    def headers(self, **claims: object) -> dict[str, str]:
        return {"auth": self.token(**claims)}


def make_credentials(runtime: Runtime, scopes: list[str] | None = None) -> Credentials:
    with runtime.sessions.begin() as session:
        bot = bots.create_bot(session, name="Support line")
        created = auth.create_app(
            session,
            box=runtime.box,
            name="CRM",
            bot_id=bot.id,
            scopes=scopes if scopes is not None else [auth.SCOPE_FETCH, auth.SCOPE_DEPOSIT],
        )
        return Credentials(bot.id, bot.account_id, created.app.id, created.client_secret)


def new_bot(runtime: Runtime) -> str:
    with runtime.sessions.begin() as session:
        return bots.create_bot(session, name="Support line").id
