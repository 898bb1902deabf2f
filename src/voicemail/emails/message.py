"""The notification e-mail of one voicemail: who called, when, how long, the transcript,
a link to the voicemail in the inbox, and the recording attached when asked and small
enough. Built from a ``VoicemailMail`` (what ``delivery`` reads of the voicemail), with the
standard library's ``EmailMessage``; no I/O here.

Caller ids and names reach a header (the subject): control characters are dropped and
lengths bounded, so a crafted caller id can neither add a header nor swell one.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from voicemail.settings import parse_sender

MAX_SUBJECT_PART = 64
UNKNOWN_CALLER = "unknown caller"
USER_AGENT = "voicemail-notifications/1"


@dataclass(frozen=True)
class VoicemailMail:
    """What a notification tells of one voicemail."""

    voicemail_id: str
    delivery_id: int
    bot_name: str
    queue_name: str | None
    caller_from: str | None
    caller_to: str | None
    created_at: datetime
    duration_seconds: float
    inbox_url: str
    # "completed" with ``transcript``; "pending" (not there within the wait), "failed"
    transcript_state: str
    transcript: str | None = None
    callback_number: str | None = None
    no_speech: bool = False
    audio: bytes | None = None  # the WAV, when attached
    audio_file_name: str = "voicemail.wav"
    audio_note: str | None = None  # why it is not attached, when it was asked for


def one_line(text: str | None, limit: int = MAX_SUBJECT_PART) -> str:
    """``text`` fit for a header: control, format and separator characters dropped,
    whitespace runs made one space, at most ``limit`` characters."""
    if not text:
        return ""
    kept = "".join(
        " " if ch.isspace() else ch
        for ch in text
        if ch.isspace() or unicodedata.category(ch) not in {"Cc", "Cf", "Cs", "Zl", "Zp"}
    )
    flat = " ".join(kept.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def subject_of(mail: VoicemailMail) -> str:
    caller = one_line(mail.caller_from) or UNKNOWN_CALLER
    where = one_line(mail.queue_name or mail.bot_name)
    seconds = round(mail.duration_seconds)
    return f"New voicemail from {caller} ({seconds} s)" + (f" - {where}" if where else "")


def _body(mail: VoicemailMail) -> str:
    when = mail.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        "A new voicemail was left.",
        "",
        f"From:      {one_line(mail.caller_from, 200) or UNKNOWN_CALLER}",
        f"To:        {one_line(mail.caller_to, 200) or '-'}",
        f"Line:      {one_line(mail.bot_name, 200)}",
    ]
    if mail.queue_name:
        lines.append(f"Queue:     {one_line(mail.queue_name, 200)}")
    lines += [
        f"Received:  {when}",
        f"Length:    {mail.duration_seconds:.1f} s",
    ]
    if mail.callback_number:
        lines.append(f"Call back: {one_line(mail.callback_number, 64)}")
    lines += ["", "Transcript:"]
    if mail.transcript_state == "completed" and mail.no_speech:
        lines.append("(no speech in the recording)")
    elif mail.transcript_state == "completed":
        lines.append(mail.transcript or "")
    elif mail.transcript_state == "failed":
        lines.append("(the recording could not be transcribed)")
    else:
        lines.append("(still being transcribed: see the inbox)")
    lines += ["", f"Listen and handle it in the inbox: {mail.inbox_url}"]
    if mail.audio_note:
        lines += ["", mail.audio_note]
    return "\n".join(lines) + "\n"


def build_message(mail: VoicemailMail, *, sender: str, recipients: list[str]) -> EmailMessage:
    """The message, From ``sender`` (``Name <address>`` or an address) to ``recipients``.
    Its Message-ID is the delivery's, the same on every retry, so a mail client shows a
    message the server took twice (a lost acknowledgement) once."""
    name, address = parse_sender(sender)
    local, _, domain = address.partition("@")
    message = EmailMessage()
    message["Subject"] = subject_of(mail)
    message["From"] = Address(display_name=one_line(name, 100), username=local, domain=domain)
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(mail.created_at)
    message["Message-ID"] = f"<voicemail-{mail.delivery_id}.{mail.voicemail_id}@{domain}>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to it
    message["X-Mailer"] = USER_AGENT
    message.set_content(_body(mail))
    if mail.audio is not None:
        message.add_attachment(
            mail.audio, maintype="audio", subtype="wav", filename=mail.audio_file_name
        )
    return message
