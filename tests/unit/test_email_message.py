"""Building a notification e-mail, and reading the SMTP settings: no server, no database."""

from __future__ import annotations

import email
import email.policy
import io
import wave
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage

import numpy as np
import pytest
from pydantic import ValidationError

from voicemail.emails.message import VoicemailMail, build_message, one_line, subject_of
from voicemail.emails.service import MAX_RECIPIENTS, check_recipients
from voicemail.errors import BadRequest
from voicemail.settings import Settings, check_email_address, parse_sender, parse_smtp_url

MAIL = VoicemailMail(
    voicemail_id="f-6f1b2d8e-3c4a-5e6f-8a9b-0c1d2e3f4a5b",
    delivery_id=7,
    bot_name="Support line",
    queue_name=None,
    caller_from="+15551230199",
    caller_to="+15557654321",
    created_at=datetime(2026, 12, 3, 9, 30, 5, tzinfo=UTC),
    duration_seconds=12.4,
    inbox_url="https://vm.example.com/inbox/voicemails/f-6f1b2d8e-3c4a-5e6f-8a9b-0c1d2e3f4a5b",
    transcript_state="completed",
    transcript="Hi, this is Dana about invoice 4471.",
    callback_number="+15551230100",
)
SENDER = "Voicemail <voicemail@example.com>"
PASSWORD = "p@ss:w/rd"


def wav_bytes(seconds: float = 0.5, rate: int = 8000) -> bytes:
    samples = (
        0.3 * np.sin(np.arange(int(seconds * rate)) / rate * 2 * np.pi * 440) * 32767
    ).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


def sent(message: EmailMessage) -> EmailMessage:
    """The message as a server receives it: serialised, then parsed."""
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def body_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    text = part.get_content()
    assert isinstance(text, str)
    return text


def test_the_message_tells_who_called_what_they_said_and_where_to_handle_it() -> None:
    message = sent(build_message(MAIL, sender=SENDER, recipients=["a@example.com", "b@x.org"]))
    assert message["Subject"] == "New voicemail from +15551230199 (12 s) - Support line"
    assert message["From"] == SENDER
    assert message["To"] == "a@example.com, b@x.org"
    assert message["Message-ID"] == f"<voicemail-7.{MAIL.voicemail_id}@example.com>"
    assert message["Auto-Submitted"] == "auto-generated"
    body = body_of(message)
    for expected in (
        "From:      +15551230199",
        "To:        +15557654321",
        "Line:      Support line",
        "Received:  2026-12-03 09:30:05 UTC",
        "Length:    12.4 s",
        "Call back: +15551230100",
        "Hi, this is Dana about invoice 4471.",
        MAIL.inbox_url,
    ):
        assert expected in body
    assert "Queue:" not in body
    assert list(message.iter_attachments()) == []


def test_the_recording_is_attached_as_a_wav_that_decodes() -> None:
    audio = wav_bytes(0.5)
    mail = replace(MAIL, audio=audio, audio_file_name="voicemail_abc.wav")
    message = sent(build_message(mail, sender=SENDER, recipients=["a@example.com"]))
    [part] = list(message.iter_attachments())
    assert part.get_content_type() == "audio/wav"
    assert part.get_filename() == "voicemail_abc.wav"
    payload = part.get_payload(decode=True)
    assert payload == audio
    with wave.open(io.BytesIO(payload)) as decoded:
        assert (decoded.getframerate(), decoded.getnframes()) == (8000, 4000)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"transcript_state": "pending", "transcript": None}, "still being transcribed"),
        ({"transcript_state": "failed", "transcript": None}, "could not be transcribed"),
        ({"no_speech": True, "transcript": ""}, "no speech in the recording"),
        ({"audio_note": "The recording (30.0 MB) is too large"}, "too large"),
        ({"queue_name": "Billing"}, "Queue:     Billing"),
    ],
)
def test_what_the_body_says_follows_the_voicemail(
    changes: dict[str, object], expected: str
) -> None:
    message = build_message(replace(MAIL, **changes), sender=SENDER, recipients=["a@b.co"])  # type: ignore[arg-type]
    assert expected in body_of(sent(message))


def test_a_queue_names_the_subject_and_an_unknown_caller_is_said_so() -> None:
    mail = replace(MAIL, caller_from=None, queue_name="Billing")
    assert subject_of(mail) == "New voicemail from unknown caller (12 s) - Billing"


@pytest.mark.parametrize(
    "caller",
    [
        "+1555\r\nBcc: victim@example.com",
        "+1555\nSubject: spoofed",
        "+1555\u202e0100\u200b",
        "x" * 10_000,
    ],
)
def test_a_crafted_caller_id_adds_no_header_and_stays_short(caller: str) -> None:
    message = sent(
        build_message(replace(MAIL, caller_from=caller), sender=SENDER, recipients=["a@b.co"])
    )
    assert message["Bcc"] is None
    assert len(message.get_all("Subject") or []) == 1
    subject = str(message["Subject"])
    assert "\n" not in subject and "\r" not in subject and "\u202e" not in subject
    assert len(subject) < 120


def test_one_line_drops_controls_and_bounds_length() -> None:
    assert one_line("a\tb\r\nc\x00d") == "a b cd"
    assert one_line("y" * 100, 10) == "y" * 9 + "…"
    assert one_line(None) == ""


def test_recipients_are_checked_and_deduplicated() -> None:
    assert check_recipients(["a@example.com", " A@Example.com ", "b@x.org"]) == [
        "a@example.com",
        "b@x.org",
    ]
    for bad in (["no-at-sign"], ["a@localhost"], ["a b@x.org"], ["a@x.org\nBcc: c@d.ef"], []):
        with pytest.raises(BadRequest):
            check_recipients(bad)
    with pytest.raises(BadRequest, match=f"At most {MAX_RECIPIENTS}"):
        check_recipients([f"u{i}@example.com" for i in range(MAX_RECIPIENTS + 1)])
    with pytest.raises(ValueError, match="not an e-mail address"):
        check_email_address("a@" + "x" * 300 + ".com")


def test_the_sender_may_carry_a_name() -> None:
    assert parse_sender("Voicemail <vm@example.com>") == ("Voicemail", "vm@example.com")
    assert parse_sender("vm@example.com") == ("", "vm@example.com")
    for bad in ("Voicemail", "vm@example.com\r\nBcc: x@y.z", ""):
        with pytest.raises(ValueError, match=r"e-mail address|one line"):
            parse_sender(bad)


def test_smtp_urls_are_read_with_their_tls_mode_and_login() -> None:
    plain = parse_smtp_url("smtp://mail.example.com")
    assert (plain.host, plain.port, plain.implicit_tls, plain.starttls) == (
        "mail.example.com",
        25,
        False,
        "auto",
    )
    assert plain.username is None and plain.password is None
    submission = parse_smtp_url(
        "smtp://u%40corp:p%40ss%3Aw%2Frd@mail.example.com:587?starttls=required"
    )
    assert (submission.port, submission.starttls) == (587, "required")
    assert (submission.username, submission.password) == ("u@corp", PASSWORD)
    tls = parse_smtp_url("smtps://relay.example.com")
    assert (tls.port, tls.implicit_tls, tls.starttls) == (465, True, "never")
    assert parse_smtp_url("smtp://h.example?starttls=never").starttls == "never"
    # The password shows nowhere: not in repr, not in the display form.
    assert PASSWORD not in repr(submission) and "p@ss" not in repr(submission)
    assert submission.display == "smtp://u@corp:***@mail.example.com:587"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://user:p%40ss%3Aw%2Frd@host", "must start with smtp:// or smtps://"),
        ("smtp://user:p%40ss%3Aw%2Frd@", "needs a host"),
        ("smtp://user:p%40ss%3Aw%2Frd@host:99999", "not a valid"),
        ("smtp://user:p%40ss%3Aw%2Frd@host/path", "takes no path"),
        ("smtp://user:p%40ss%3Aw%2Frd@host?starttls=maybe", "starttls must be one of"),
        ("smtp://user:p%40ss%3Aw%2Frd@host?verify=no", "unknown parameter"),
        ("smtps://user:p%40ss%3Aw%2Frd@host?starttls=required", "TLS from the start"),
        ("smtp://:p%40ss%3Aw%2Frd@host", "needs a user name"),
    ],
)
def test_a_bad_smtp_url_is_refused_without_repeating_its_password(url: str, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, smtp_url=url)  # type: ignore[call-arg]
    text = str(refused.value)
    assert message in text
    for secret in ("p%40ss", PASSWORD, "p@ss"):
        assert secret not in text
    assert all("input" not in error for error in refused.value.errors(include_input=False))


def test_settings_hide_refused_input_and_the_url_in_their_repr() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, signing_key="short-secret-key")  # type: ignore[call-arg]
    assert "short-secret-key" not in str(refused.value)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, smtp_url="smtps://vm:p%40ss%3Aw%2Frd@relay.example.com"
    )
    assert "p%40ss" not in repr(settings) and PASSWORD not in repr(settings)
    server = settings.smtp_server
    assert server is not None and server.password == PASSWORD
