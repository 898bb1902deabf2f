"""Structured logs (JSON lines by default) that never carry secrets or tokens."""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from contextlib import AbstractContextManager
from typing import Any

import structlog
import structlog.contextvars

# Keys whose values are credentials, and patterns that look like credentials in free text.
SECRET_KEYS = re.compile(r"(secret|token|auth|password|signature|signing_key|^s$|jwt)", re.I)
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_QUERY_SIG_RE = re.compile(r"([?&](?:s|n|e)=)[^&\s\"']+")
REDACTED = "[redacted]"


def redact_text(text: str) -> str:
    return _QUERY_SIG_RE.sub(rf"\1{REDACTED}", _JWT_RE.sub(REDACTED, text))


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: REDACTED if SECRET_KEYS.search(str(k)) else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event_dict.pop("color_message", None)  # uvicorn's ANSI-coloured duplicate of "event"
    return {
        key: REDACTED if SECRET_KEYS.search(key) and key != "event" else _redact(value)
        for key, value in event_dict.items()
    }


def log_context(**values: Any) -> AbstractContextManager[Any]:
    """Adds ``values`` to every log line made inside the block: by this thread or task, and by
    the tasks and thread-pool calls it starts (they copy the context). The request id of an
    HTTP request and the job and voicemail ids of a job are bound this way."""
    return structlog.contextvars.bound_contextvars(**values)


def build_formatter(fmt: str = "json") -> logging.Formatter:
    """The formatter of our log lines: JSON (or console text), with context, redacted."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
    )


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(build_formatter(fmt))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # Our access log (voicemail.access) replaces uvicorn's, which would print query strings.
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in ("faster_whisper", "httpx", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
