"""Structured logs (JSON lines by default) that never carry secrets or tokens."""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

import structlog

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


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
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
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # Our access log (voicemail.api.app) replaces uvicorn's, which would print query strings.
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in ("faster_whisper", "httpx", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
