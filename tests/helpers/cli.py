"""Running the ``voicemail`` command in a test, and reading what it printed.

``invoke_cli`` runs it in this process (Typer's ``CliRunner`` on the app object): a
fraction of a second, for tests of what a command does. ``run_cli`` runs it as a user does
(``python -m voicemail`` in a subprocess): for start-up, the entry point and exit statuses
of the real process; about a second a run. Both take the test's settings (its database,
data folder and signing key) and return a ``CompletedProcess``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import chdir, contextmanager
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from voicemail.cli import app
from voicemail.cli.output import err, out
from voicemail.settings import Settings

# What the tests' tables are read at, unless a test asks for a terminal's 80 columns.
COLUMNS = "200"


def cli_environment(settings: Settings, env: dict[str, str] | None = None) -> dict[str, str]:
    """The ``VOICEMAIL_*`` variables that point the command at ``settings``' database, data
    folder and keys, with ``env`` added."""
    environment = {
        "VOICEMAIL_DATA_DIR": str(settings.data_dir),
        "VOICEMAIL_SIGNING_KEY": settings.master_key().decode(),
        "VOICEMAIL_LOG_FORMAT": "console",
        "COLUMNS": COLUMNS,
    }
    if settings.database_url:
        environment["VOICEMAIL_DATABASE_URL"] = settings.database_url
    if settings.webhook_allowed_networks:  # (tests' receivers listen on 127.0.0.1)
        environment["VOICEMAIL_WEBHOOK_ALLOWED_NETWORKS"] = settings.webhook_allowed_networks
    environment.update(env or {})
    return environment


def run_cli(
    settings: Settings,
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``voicemail ARGS`` in a subprocess on the test's database and data folder (SQLite or
    PostgreSQL), with ``stdin`` as its input when given and ``env`` added to its
    environment. The test process's own ``VOICEMAIL_*`` variables are not passed on."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("VOICEMAIL_")}
    return subprocess.run(
        [sys.executable, "-m", "voicemail", *args],
        env=inherited | cli_environment(settings, env),
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def invoke_cli(
    settings: Settings,
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``voicemail ARGS`` as ``run_cli`` runs it, but in this process. What the command
    changes in the process is put back afterwards: the environment (``CliRunner`` does it),
    the logging configuration, the consoles' width and the working folder. An exception
    the command does not turn into an exit status is raised here, not captured."""
    return invoke_cli_in(cli_environment(settings, env), *args, stdin=stdin, cwd=cwd)


def invoke_cli_in(
    environment: dict[str, str], *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``voicemail ARGS`` in this process, with ``environment`` (its ``VOICEMAIL_*``: the
    only settings; ``COLUMNS`` 200 unless given); what ``invoke_cli`` runs."""
    environment = {"COLUMNS": COLUMNS} | environment
    # None removes a variable for the run: the test process's own VOICEMAIL_* do not apply.
    cleared: dict[str, str | None] = {k: None for k in os.environ if k.startswith("VOICEMAIL_")}
    with _logging_kept(), _consoles_at(int(environment["COLUMNS"])), chdir(cwd or Path.cwd()):
        result = CliRunner().invoke(
            app, list(args), input=stdin, env=cleared | environment, catch_exceptions=False
        )
    return subprocess.CompletedProcess(
        ["voicemail", *args], result.exit_code, result.stdout, result.stderr
    )


@contextmanager
def _logging_kept() -> Iterator[None]:
    """The root logger's handlers and level, and every logger's level and ``disabled``, as
    they were: the command configures logging for a process of its own."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    loggers = [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    states = [(logger, logger.level, logger.disabled) for logger in loggers]
    try:
        yield
    finally:
        root.handlers, root.level = handlers, level
        for logger, logger_level, disabled in states:
            logger.level, logger.disabled = logger_level, disabled


@contextmanager
def _consoles_at(columns: int) -> Iterator[None]:
    """The CLI's consoles read ``COLUMNS`` once, when made: give them this run's width."""
    widths = out.width, err.width
    out.width = err.width = columns
    try:
        yield
    finally:
        out.width, err.width = widths


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    """Exit 0 and exactly one JSON object on stdout."""
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    payload = json.loads(lines[0])
    assert isinstance(payload, dict)
    return payload


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Exit 1, nothing on stdout, one line on stderr, and no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]
