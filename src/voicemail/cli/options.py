"""Options that several command groups take."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer

from voicemail.cli.output import fail
from voicemail.errors import VoicemailError

BotOpt = Annotated[str, typer.Option("--bot", help="Bot id, st-<uuid>.")]


def one_of(values: Sequence[str], check: Callable[[str], object]) -> dict[str, Any]:
    """``typer.Option`` arguments for an option with fixed values: the help lists them, and
    a value outside them is refused while the command line is read, by the service's own
    ``check``, in the one-line form (exit 1) the service's refusal would take later."""

    def parse(value: str) -> str:
        try:
            check(value)
        except VoicemailError as exc:
            fail(exc.message)
        return value

    return {"metavar": "[" + "|".join(values) + "]", "parser": parse}
