"""Handing one message to the SMTP server: the standard library's ``smtplib``, with TLS as
``VOICEMAIL_SMTP_URL`` asks (``settings.SmtpServer``).

Never raises for a server's or the network's failure: the outcome says what it was (the
SMTP reply code, and the kind of failure) without the password, which is sent only inside
TLS unless the URL says ``starttls=never``.
"""

from __future__ import annotations

import smtplib
import ssl
import time
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path

from voicemail.db.base import utcnow
from voicemail.settings import SmtpServer

MAX_ERROR_LENGTH = 300


@dataclass(frozen=True)
class SendOutcome:
    attempted_at: datetime
    status_code: int | None  # the SMTP reply code of a refusal (250 when accepted)
    error: str | None
    duration_ms: float

    @property
    def ok(self) -> bool:
        return self.error is None


class SmtpRefused(Exception):
    """A step the server or our TLS rules refused; ``code`` is the SMTP reply code, if any."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def tls_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """Certificates checked against the system's authorities, or ``ca_file``'s."""
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def _scrub(text: str, server: SmtpServer) -> str:
    """A server's words, one line, short, without our password (a server may echo what it
    was sent)."""
    text = " ".join(text.split())
    if server.password:
        text = text.replace(server.password, "***")
    return text[:MAX_ERROR_LENGTH]


def _reply_text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _open(server: SmtpServer, *, timeout: float, context: ssl.SSLContext) -> smtplib.SMTP:
    if server.implicit_tls:
        return smtplib.SMTP_SSL(server.host, server.port, timeout=timeout, context=context)
    client = smtplib.SMTP(server.host, server.port, timeout=timeout)
    try:
        client.ehlo()
        offered = client.has_extn("starttls")
        if server.starttls == "required" and not offered:
            raise SmtpRefused("the server does not offer STARTTLS (starttls=required)")
        if offered and server.starttls != "never":
            client.starttls(context=context)
            client.ehlo()
        elif server.username and server.starttls != "never":
            raise SmtpRefused(
                "the server does not offer STARTTLS: the password is not sent in clear"
            )
    except BaseException:
        client.close()
        raise
    return client


def send(
    server: SmtpServer,
    message: EmailMessage,
    *,
    sender: str,
    recipients: list[str],
    timeout: float,
    context: ssl.SSLContext,
) -> SendOutcome:
    """Connect, log in when the URL has a user, send ``message`` from ``sender`` (the
    envelope's MAIL FROM) to ``recipients``, quit. Accepted when the server took it for
    every recipient; one recipient refused makes the whole attempt fail (and be retried:
    recipients are one notification's list, sent together)."""
    attempted_at = utcnow()
    started = time.perf_counter()
    code: int | None = None
    error: str | None = None
    try:
        client = _open(server, timeout=timeout, context=context)
        try:
            if server.username:
                client.login(server.username, server.password or "")
            refused = client.send_message(message, from_addr=sender, to_addrs=recipients)
            if refused:
                first = next(iter(refused.values()))
                code = first[0]
                error = f"SMTP {code} for {len(refused)} recipient(s): {_reply_text(first[1])}"
            else:
                code = 250
        finally:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()
    except smtplib.SMTPAuthenticationError as exc:
        code, error = exc.smtp_code, f"SMTP {exc.smtp_code}: login refused"
    except smtplib.SMTPRecipientsRefused as exc:
        replies = list(exc.recipients.values())
        code = replies[0][0] if replies else None
        text = _reply_text(replies[0][1]) if replies else ""
        error = f"SMTP {code}: every recipient refused: {text}"
    except smtplib.SMTPSenderRefused as exc:
        code, error = exc.smtp_code, f"SMTP {exc.smtp_code}: sender refused"
    except smtplib.SMTPResponseException as exc:
        code = exc.smtp_code
        error = f"SMTP {code}: {_reply_text(exc.smtp_error)}"
    except SmtpRefused as exc:
        code, error = exc.code, str(exc)
    except smtplib.SMTPNotSupportedError:
        error = "the server does not support a step we need (login or STARTTLS)"
    except smtplib.SMTPServerDisconnected:
        error = "the server closed the connection"
    except ssl.SSLError as exc:
        error = f"TLS error ({type(exc).__name__})"
    except TimeoutError:
        error = "timeout"
    except smtplib.SMTPException as exc:
        error = type(exc).__name__
    except OSError as exc:
        error = f"connection failed ({type(exc).__name__})"
    duration_ms = (time.perf_counter() - started) * 1000
    return SendOutcome(attempted_at, code, _scrub(error, server) if error else None, duration_ms)
