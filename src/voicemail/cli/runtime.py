"""The settings and runtime a command works on, and its one transaction.

``voicemail.runtime`` and the services are imported when a command runs, not when the CLI
starts: ``voicemail --help`` should not load SQLAlchemy, the models or the audio stack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from voicemail.cli.output import fail
from voicemail.errors import VoicemailError

if TYPE_CHECKING:
    from voicemail.runtime import Runtime
    from voicemail.settings import Settings

T = TypeVar("T")


def load_settings() -> Settings:
    from pydantic import ValidationError

    from voicemail.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "VOICEMAIL_" + "_".join(str(p) for p in first["loc"]).upper() if first["loc"] else ""
        fail(f"invalid setting {name}: {first['msg']}".replace("setting : ", "settings: "))


@contextmanager
def runtime_for_cli() -> Iterator[Runtime]:
    from voicemail.db.migrate import upgrade
    from voicemail.logs import configure_logging
    from voicemail.runtime import Runtime

    settings = load_settings()
    configure_logging("WARNING", settings.log_format)
    runtime = Runtime.build(settings)
    try:
        if settings.is_sqlite:
            upgrade(settings.resolved_database_url)
        yield runtime
    finally:
        runtime.close()


def run_in_transaction(action: Callable[[Runtime, Any], T]) -> T:
    with runtime_for_cli() as runtime:
        try:
            with runtime.sessions.begin() as session:
                return action(runtime, session)
        except VoicemailError as exc:
            fail(exc.message)
        except ValueError as exc:
            fail(str(exc))
