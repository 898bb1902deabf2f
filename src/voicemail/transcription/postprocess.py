"""A bot's post-processing of a finished transcript: the call-back number, then redaction.

The order matters: the call-back number is read from the words as spoken, before
redaction could replace it, and redaction is told to leave that number alone (a 13-15
digit international number is otherwise card-shaped).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from voicemail.transcription.callback import find_callback_number
from voicemail.transcription.engine import Word
from voicemail.transcription.redact import redact_transcript


@dataclass(frozen=True)
class PostProcessed:
    text: str
    words: list[Word]
    callback_number: str | None
    redacted: list[str]  # the kinds of data found and replaced


def post_process(text: str, words: Sequence[Word], *, redact: Iterable[str]) -> PostProcessed:
    """``text`` and ``words`` of a transcript after the bot's settings (``Bot.redact``)."""
    callback_number = find_callback_number(text)
    redacted = redact_transcript(text, words, redact, keep_number=callback_number)
    return PostProcessed(redacted.text, redacted.words, callback_number, redacted.kinds)
