"""What a command prints: with ``--json`` one JSON object on stdout, for scripts; otherwise
a Rich table or ``key: value`` lines. A failure is one line on stderr and exit status 1."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

# No markup: names, ids and messages are printed as given ("[x]" in a name is not a style).
out = Console(markup=False)
err = Console(stderr=True, markup=False)
ID_WIDTH = len("st-") + 36  # a bot or app id: a prefix and a UUID

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def fail(message: str) -> NoReturn:
    err.print(Text.assemble(("error:", "red"), f" {message}"), highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def emit(as_json: bool, payload: dict[str, Any], table: Table | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(payload) + "\n")
    elif table is not None:
        out.print(table)
    else:
        for key, value in payload.items():
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            out.print(Text.assemble((key, "bold"), f": {shown}"), highlight=False)


def id_column(header: str) -> Column:
    """A column of ids, never cut short in a narrow terminal: ids are there to be copied."""
    return Column(header, no_wrap=True, min_width=ID_WIDTH)
